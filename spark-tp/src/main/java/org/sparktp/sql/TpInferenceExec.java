package org.sparktp.sql;

import java.util.Arrays;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.ml.param.ParamMap;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.AttributeReference;
import org.apache.spark.sql.classic.Dataset;
import org.apache.spark.sql.classic.SparkSession;
import org.apache.spark.sql.execution.SparkPlan;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.Column;
import org.apache.spark.sql.functions;
import org.sparktp.spark.OnError;
import org.sparktp.spark.TensorParallelModel;
import scala.collection.immutable.IndexedSeq;
import scala.collection.immutable.Seq;

/**
 * Physical node of one tensor-parallel call: runs the child's rows through the model with the DataFrame
 * API's barrier flow ({@link TensorParallelModel#transform}: tag, spread, barrier stage of groups x tp
 * ranks, restore) and appends the output column. Rows keep their partition and order, so the output has
 * exactly the child's rows plus one column (except rows dropped by {@code spark.tp.null-policy=skip}).
 *
 * <p>Columns travel under positional names ({@code c0, c1, ...}), so duplicate or odd names in the child's
 * output do not matter.
 */
public final class TpInferenceExec extends SparkPlan implements NodeFields {
  private static final long serialVersionUID = 1L;
  private static final String OUT = "tp_out";
  private final TpCall call;
  private final AttributeReference result;
  private final SparkPlan child;

  public TpInferenceExec(TpCall call, AttributeReference result, SparkPlan child) {
    this.call = call;
    this.result = result;
    this.child = child;
  }

  @Override
  public List<Object> fields() {
    return Arrays.asList(call, result, child);
  }

  @Override
  public RDD<InternalRow> doExecute() {
    List<Attribute> in = Sc.list(child.output());
    Attribute input = (Attribute) call.input();
    String name = inputName(input);
    StructType schema = new StructType();
    int inputOrdinal = -1;
    for (int i = 0; i < in.size(); i++) {
      Attribute a = in.get(i);
      boolean isInput = a.exprId().equals(input.exprId());
      // the input column travels under the query's name for it, so that row errors name it
      schema = schema.add(isInput && !call.function().equals(TpFunctions.GENERATE) ? name : "__tp_c" + i,
          a.dataType(), a.nullable());
      if (isInput) {
        inputOrdinal = i;
      }
    }
    if (inputOrdinal < 0) {
      throw new IllegalStateException("The input " + call.input() + " of " + call + " is not a column of " + in);
    }
    SparkSession spark = session();
    Dataset<Row> df = spark.internalCreateDataFrame(child.execute(), schema, false);
    TensorParallelModel m = call.ref().model().copy(ParamMap.empty());
    Dataset<Row> out;
    if (call.function().equals(TpFunctions.GENERATE)) {
      out = (Dataset<Row>) GenerateCall.run(m, df, "__tp_c" + inputOrdinal, name, OUT);
    } else {
      out = (Dataset<Row>) m.setInputCol(name).setOutputCol(OUT).transform(df);
      if (List.of(out.columns()).contains(OnError.COLUMN_NAME)) {
        // spark.tp.on-error=column: struct<value, error>
        List<Column> cols = new ArrayList<>();
        for (String c : df.columns()) {
          cols.add(functions.col("`" + c.replace("`", "``") + "`"));
        }
        cols.add(functions.struct(functions.col(OUT).as("value"), functions.col(OnError.COLUMN_NAME)).as(OUT));
        out = (Dataset<Row>) out.select(cols.toArray(new Column[0]));
      }
    }
    TpMetricsRegistry.record(call, m);
    return out.queryExecution().toRdd();
  }

  /** The input's name as the query wrote it (a column's name, or the expression), never one of the positional names. */
  private static String inputName(Attribute input) {
    String n = input.name();
    return n.startsWith("__tp_c") ? "_" + n : n;
  }

  @Override
  public Seq<Attribute> output() {
    List<Attribute> out = new ArrayList<>(Sc.list(child.output()));
    out.add(result);
    return Sc.seq(out);
  }

  @Override
  public Seq<SparkPlan> children() {
    return Sc.seq(child);
  }

  @Override
  public SparkPlan withNewChildrenInternal(IndexedSeq<SparkPlan> newChildren) {
    return new TpInferenceExec(call, result, newChildren.apply(0));
  }

  @Override
  public String simpleString(int maxFields) {
    return TpExplain.describe(call, result, session());
  }

  @Override
  public boolean equals(Object o) { // hashCode: TreeNode's, over fields()
    return NodeFields.equal(this, o);
  }
}
