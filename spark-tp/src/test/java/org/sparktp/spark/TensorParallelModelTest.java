package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.types.DataTypes;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.nn.ModelSpec;

/** TensorParallelModel on local[4] against a float64 reference, over tp sizes and input types. */
class TensorParallelModelTest extends SparkTestBase {

  @ParameterizedTest(name = "tp={0}")
  @ValueSource(ints = {1, 2, 3})
  void mlpMatchesReferenceAndKeepsRowsColumnsAndOrder(int tp) {
    Random rng = new Random(100 + tp);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 161, 50, false);
    Dataset<Row> in = frame(Input.FLOATS, x, 7);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(tp).setBatchSize(16);

    Dataset<Row> out = model.transform(in);

    assertThat(out.schema().fieldNames()).containsExactly("id", "features", "tag", "prediction");
    assertThat(out.schema().apply("prediction").dataType())
        .isEqualTo(DataTypes.createArrayType(DataTypes.FloatType, false));
    assertThat(idsByPartition(out)).isEqualTo(idsByPartition(in));
    for (Row r : out.collectAsList()) {
      assertThat(r.getString(2)).isEqualTo("row-" + r.getLong(0));
    }
    assertClose(outputsById(out, x.length, "prediction"), Reference.forward(spec, x));
    TpMetrics m = model.lastMetrics();
    // later actions reuse the barrier stage's shuffle output: the ranks ran once
    assertThat(m.totalRows()).isEqualTo(x.length);
    assertThat(m.computeNanos(0)).isPositive();
    if (tp > 1) {
      assertThat(m.commBytesSent(tp - 1)).isPositive();
    }
  }

  @ParameterizedTest(name = "tp={0}")
  @ValueSource(ints = {1, 2, 3})
  void blockWithLayerNormAndResidualMatchesReference(int tp) {
    Random rng = new Random(200 + tp);
    ModelSpec spec = Reference.block(rng, 50, 203, 37);
    float[][] x = inputs(rng, 45, 50, false);
    Dataset<Row> out = new TensorParallelModel(spec.model()).setTpSize(tp).setGroups(1).setBatchSize(8)
        .transform(frame(Input.FLOATS, x, 3));
    assertClose(outputsById(out, x.length, "prediction"), Reference.forward(spec, x));
  }

  @ParameterizedTest(name = "{0}")
  @ValueSource(strings = {"DOUBLES", "DENSE_VECTOR", "SPARSE_VECTOR"})
  void otherInputTypesMatchReference(String type) {
    Input kind = Input.valueOf(type);
    Random rng = new Random(300 + kind.ordinal());
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 40, 50, kind == Input.SPARSE_VECTOR);
    Dataset<Row> in = frame(kind, x, 3);
    Dataset<Row> out = new TensorParallelModel(spec.model()).setTpSize(2).setInputCol("features").setOutputCol("y")
        .transform(in);
    assertThat(idsByPartition(out)).isEqualTo(idsByPartition(in));
    assertClose(outputsById(out, x.length, "y"), Reference.forward(spec, x));
  }

  @Test
  void manyEmptyPartitionsAndMoreRanksThanRows() {
    Random rng = new Random(400);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 3, 50, false);
    Dataset<Row> in = frame(Input.FLOATS, x, 11);
    Dataset<Row> out = new TensorParallelModel(spec.model()).setTpSize(2).transform(in);
    assertThat(idsByPartition(out)).isEqualTo(idsByPartition(in));
    assertClose(outputsById(out, x.length, "prediction"), Reference.forward(spec, x));
  }

  @Test
  void emptyDataFrames() {
    ModelSpec spec = Reference.mlp(new Random(500), 50, 203, 37);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(2);
    Dataset<Row> noRows = frame(Input.FLOATS, new float[0][], 3);
    Dataset<Row> out = model.transform(noRows);
    assertThat(out.count()).isZero();
    assertThat(out.schema().fieldNames()).containsExactly("id", "features", "tag", "prediction");
    Dataset<Row> noPartitions = spark.createDataFrame(jsc.emptyRDD(), noRows.schema());
    assertThat(model.transform(noPartitions).collectAsList()).isEmpty();
  }

  @Test
  void notRetryableKeepsEveryRowOnce() {
    Random rng = new Random(600);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 50, 50, false);
    Dataset<Row> out = new TensorParallelModel(spec.model()).setTpSize(2).setGroups(2)
        .setConf("spark.tp.retryable", "false").transform(frame(Input.FLOATS, x, 3));
    assertThat(out.javaRDD().getNumPartitions()).isEqualTo(4);
    for (List<Long> part : idsByPartition(out)) {
      assertThat(part).isSorted();
    }
    assertClose(outputsById(out, x.length, "prediction"), Reference.forward(spec, x));
  }

  @Test
  void explicitGroupsAndBatchSizeFromSessionConf() {
    Random rng = new Random(700);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 30, 50, false);
    spark.conf().set("spark.tp.batch-size", "4");
    spark.conf().set("spark.tp.tp-size", "3");
    try {
      TensorParallelModel model = new TensorParallelModel(spec.model()).setGroups(1);
      Dataset<Row> out = model.transform(frame(Input.FLOATS, x, 2));
      assertClose(outputsById(out, x.length, "prediction"), Reference.forward(spec, x));
      assertThat(model.lastMetrics().tpSize()).isEqualTo(3);
      // 30 rows over 3 ranks, 4 rows a step: 10 rows per rank, 3 steps
      assertThat(model.lastMetrics().steps(0)).isEqualTo(3);
    } finally {
      spark.conf().unset("spark.tp.batch-size");
      spark.conf().unset("spark.tp.tp-size");
    }
  }

  @Test
  void tcpTransportInLocalModeMatchesReference() {
    Random rng = new Random(800);
    ModelSpec spec = Reference.block(rng, 50, 203, 37);
    float[][] x = inputs(rng, 41, 50, false);
    Dataset<Row> in = frame(Input.DENSE_VECTOR, x, 3);
    Dataset<Row> out = new TensorParallelModel(spec.model()).setTpSize(3).setGroups(1).setBatchSize(6)
        .setConf("spark.tp.comm.transport", "tcp").transform(in);
    assertThat(idsByPartition(out)).isEqualTo(idsByPartition(in));
    assertClose(outputsById(out, x.length, "prediction"), Reference.forward(spec, x));
  }
}
