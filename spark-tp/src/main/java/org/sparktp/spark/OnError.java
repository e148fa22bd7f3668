package org.sparktp.spark;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.lit;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.sparktp.TpConf;

/**
 * What a row that cannot run does ({@code spark.tp.on-error}): {@link #FAIL} the job (naming the column and row),
 * or give it {@link #NULL} outputs, or null outputs and its cause in the column {@value #COLUMN_NAME}
 * ({@link #COLUMN}); the other rows run. A row cannot run when its input is null (under {@code null-policy=error}),
 * empty, longer than the model takes, of the wrong width, or holds ids outside the vocabulary, or is a conversation
 * the chat template cannot render ({@link Tokenize} says so in the helper column): the tag stage finds it before the
 * barrier stage, writes its cause into a helper column and its input to null, so the ranks skip it.
 */
public enum OnError {
  FAIL, NULL, COLUMN;

  /** The column {@link #COLUMN} adds: the cause of a row that did not run, else null. */
  public static final String COLUMN_NAME = "error";
  /** The helper column that carries the causes through the barrier stage. */
  static final String HELPER = "__spark_tp_error";

  public static OnError parse(String s) {
    String v = s == null ? "" : s.trim().toLowerCase(Locale.ROOT);
    for (OnError e : values()) {
      if (e.name().toLowerCase(Locale.ROOT).equals(v)) {
        return e;
      }
    }
    throw new IllegalArgumentException("Invalid value for " + TpConf.ON_ERROR + ": '" + s + "' (use fail, null or"
        + " column)");
  }

  /** {@code out} (a transform's output schema for {@code in}) with the {@value #COLUMN_NAME} column this mode adds. */
  StructType outputSchema(StructType in, StructType out) {
    if (this != COLUMN) {
      return out;
    }
    if (Arrays.asList(in.fieldNames()).contains(COLUMN_NAME)) {
      throw new IllegalArgumentException(TpConf.ON_ERROR + "=column writes the column '" + COLUMN_NAME + "', which the"
          + " input already has; rename or drop it");
    }
    return out.add(COLUMN_NAME, DataTypes.StringType, true);
  }

  /** {@code df} with the helper column (null everywhere) the tag stage writes causes into, unless {@link #FAIL}. */
  <T> Dataset<T> prepare(Dataset<T> df) {
    return this == FAIL ? df : (Dataset<T>) df.withColumn(HELPER, lit(null).cast(DataTypes.StringType));
  }

  /**
   * The barrier stage's output schema: {@code df}'s columns (helpers included) and the outputs, i.e. the fields of
   * {@code out} after the first {@code inputWidth} (the user's columns), without {@value #COLUMN_NAME}.
   */
  StructType barrierSchema(StructType df, StructType out, int inputWidth) {
    if (this == FAIL) {
      return out;
    }
    StructType s = df;
    StructField[] f = out.fields();
    for (int i = inputWidth; i < f.length - (this == COLUMN ? 1 : 0); i++) {
      s = s.add(f[i]);
    }
    return s;
  }

  /** The job's output: the helper dropped ({@link #NULL}) or moved last as {@value #COLUMN_NAME} ({@link #COLUMN}). */
  Dataset<Row> finish(Dataset<Row> out) {
    if (this == FAIL) {
      return out;
    }
    if (this == NULL) {
      return out.drop(HELPER);
    }
    List<Column> cols = new ArrayList<>();
    for (String c : out.columns()) {
      if (!c.equals(HELPER)) {
        cols.add(col("`" + c.replace("`", "``") + "`"));
      }
    }
    cols.add(col(HELPER).as(COLUMN_NAME));
    return out.select(cols.toArray(new Column[0]));
  }
}
