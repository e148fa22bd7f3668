package org.sparktp.sql;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.least;
import static org.apache.spark.sql.functions.lit;
import static org.apache.spark.sql.functions.size;
import static org.apache.spark.sql.functions.struct;
import static org.apache.spark.sql.functions.when;

import java.util.ArrayList;
import java.util.List;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.TpConf;
import org.sparktp.spark.OnError;
import org.sparktp.spark.SqlSupport;
import org.sparktp.spark.TensorParallelModel;

/**
 * {@code tp_generate(model, input [, options])}: task generate of a Hugging Face causal LM on the rows of a query,
 * through the DataFrame API's flow ({@link TensorParallelModel#transform} with {@code task=generate}), its columns
 * folded into one {@link #RESULT} struct per row. The input is text (tokenized with the model's {@code tokenizer.json}
 * before the barrier stage, special tokens written in the text matched as HF's tokenizers match them) or token ids
 * ({@code array<int|long>}).
 */
final class GenerateCall {
  /** What {@code tp_generate} returns per row (null for a row whose input was null). */
  static final StructType RESULT = new StructType()
      .add("text", DataTypes.StringType, true)
      .add("ids", DataTypes.createArrayType(DataTypes.IntegerType, false), true)
      .add("finish_reason", DataTypes.StringType, true)
      .add("prompt_tokens", DataTypes.IntegerType, true)
      .add("completion_tokens", DataTypes.IntegerType, true);

  static final String TAKES = "string (a prompt, tokenized with the model's tokenizer.json), array<int> or array<long>"
      + " (token ids), or array<struct<role: string, content: string>> (chat messages, the chat template applied)";

  private GenerateCall() {}

  /** True for a text input. */
  static boolean text(DataType t) {
    return t.equals(DataTypes.StringType);
  }

  /** True for a messages input: {@code array<struct<...>>} with string fields {@code role} and {@code content}. */
  static boolean messages(DataType t) {
    if (!t.typeName().equals("array") || !((ArrayType) t).elementType().typeName().equals("struct")) {
      return false;
    }
    List<String> names = List.of(((StructType) ((ArrayType) t).elementType()).fieldNames());
    return names.contains("role") && names.contains("content");
  }

  /** True for token ids: {@code array<int>} or {@code array<long>}. */
  static boolean ids(DataType t) {
    return List.of(DataTypes.IntegerType, DataTypes.LongType).stream().anyMatch(e -> t.equals(
        DataTypes.createArrayType(e, false)) || t.equals(DataTypes.createArrayType(e, true)));
  }

  /** Checks the input's type at analysis; the error names the types {@code tp_generate} takes. */
  static void checkInput(String fn, Expression input, TensorParallelModel model, String modelName) {
    DataType t = input.dataType();
    if (text(t)) {
      if (!SqlSupport.hasTokenizer(model)) {
        throw Sc.error(fn + " argument 'input' (" + input.sql() + ") is text, but model " + modelName + " has no"
            + " tokenizer.json; give token ids (array<int> or array<long>) instead");
      }
      return;
    }
    if (messages(t)) {
      if (!SqlSupport.hasTokenizer(model)) {
        throw Sc.error(fn + " argument 'input' (" + input.sql() + ") is a messages column, but model " + modelName
            + " has no tokenizer.json; give token ids (array<int> or array<long>) instead");
      }
      try {
        org.sparktp.spark.ChatInput.template(SqlSupport.hfDirectory(model)); // a model without a template fails here
      } catch (RuntimeException e) {
        throw Sc.error(fn + " argument 'input' (" + input.sql() + ") is a messages column: " + e.getMessage(), e);
      }
      return;
    }
    if (ids(t)) {
      return;
    }
    throw Sc.error(fn + " argument 'input' (" + input.sql() + ") has type " + t.simpleString() + "; " + fn
        + " takes " + TAKES);
  }

  /** {@code name} as a column reference (quoted: a name may hold dots or spaces). */
  private static Column c(String name) {
    return col("`" + name.replace("`", "``") + "`");
  }

  /**
   * {@code df}'s columns and {@code result} ({@link #RESULT}): the completions of the rows of {@code df}'s column
   * {@code inputCol} by {@code model} (a copy of the call's model: its inputCol is set here, its metrics filled);
   * {@code name} is the input as the query wrote it, the name row errors use.
   */
  static Dataset<Row> run(TensorParallelModel model, Dataset<Row> df, String inputCol, String name, String result) {
    List<Column> keep = new ArrayList<>();
    for (String n : df.columns()) {
      keep.add(c(n));
    }
    DataType t = df.schema().apply(inputCol).dataType();
    // text, or messages rendered with the model's chat template (generation prompt added), tokenized before the stage
    Dataset<Row> in = text(t) || messages(t)
        ? SqlSupport.tokenize(df, inputCol, name, model)
        : df.withColumn(name, c(inputCol));
    TensorParallelModel m = model.setInputCol(name);
    Dataset<Row> out = m.transform(in);
    Column prompt = size(c(name));
    if (m.settings(in.sparkSession()).bool(TpConf.TRUNCATE)) {
      int room = m.plan(1).truncateTo() - (Integer) m.getOrDefault(m.maxNewTokens());
      prompt = least(prompt, lit(room));
    }
    List<String> names = List.of(out.columns());
    Column text = names.contains(TensorParallelModel.GENERATED_TEXT) ? col(TensorParallelModel.GENERATED_TEXT)
        : lit(null).cast(DataTypes.StringType);
    Column ids = col(TensorParallelModel.GENERATED_IDS);
    Column[] fields = {text.as("text"), ids.as("ids"), col(TensorParallelModel.FINISH_REASON).as("finish_reason"),
        when(ids.isNotNull(), prompt.cast(DataTypes.IntegerType)).as("prompt_tokens"),
        when(ids.isNotNull(), size(ids).cast(DataTypes.IntegerType)).as("completion_tokens")};
    if (names.contains(OnError.COLUMN_NAME)) {
      // spark.tp.on-error=column: a row that could not run has null fields and its cause
      Column[] withError = java.util.Arrays.copyOf(fields, fields.length + 1);
      withError[fields.length] = col(OnError.COLUMN_NAME);
      keep.add(struct(withError).as(result));
    } else {
      keep.add(when(ids.isNull(), lit(null)).otherwise(struct(fields)).as(result));
    }
    return out.select(keep.toArray(new Column[0]));
  }
}
