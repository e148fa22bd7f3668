package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.sparktp.nn.ModelSpec;

/** Null values, wrong widths, bad columns and too few slots: errors that say what to change. */
class BadInputTest extends SparkTestBase {
  private static final ModelSpec SPEC = Reference.mlp(new Random(2000), 50, 203, 37);

  /** 12 rows; rows 3, 7 and 8 have a null feature. */
  private static Dataset<Row> withNulls(float[][] x, int partitions) {
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < x.length; i++) {
      boolean isNull = i == 3 || i == 7 || i == 8;
      rows.add(RowFactory.create((long) i, isNull ? null : value(Input.FLOATS, x[i])));
    }
    StructType schema = new StructType().add("id", DataTypes.LongType, false)
        .add("features", type(Input.FLOATS), true);
    return spark.createDataFrame(jsc.parallelize(rows, partitions), schema);
  }

  @Test
  void nullValuesFailNamingTheColumnAndCount() {
    float[][] x = inputs(new Random(2001), 12, 50, false);
    Dataset<Row> out = new TensorParallelModel(SPEC.model()).setTpSize(2).transform(withNulls(x, 1));
    assertThatThrownBy(out::collectAsList)
        .hasMessageContaining("Column 'features' has 3 null value(s) in input partition 0, the first at row 3 ")
        .hasMessageContaining("spark.tp.null-policy");
  }

  @Test
  void settingsAreCheckedOnTheDriverBeforeAnyJobAndReachTheTasks() {
    float[][] x = inputs(new Random(2009), 4, 50, false);
    Dataset<Row> in = withNulls(x, 1);
    assertThatThrownBy(() -> new TensorParallelModel(SPEC.model()).setConf("spark.tp.comm.timout", "5s"))
        .hasMessageStartingWith("Unknown setting spark.tp.comm.timout; did you mean spark.tp.comm.timeout?");
    spark.conf().set("spark.tp.comm.chunk-bytes", "1k");
    try {
      // transform throws (no job ran) instead of failing inside the barrier tasks
      assertThatThrownBy(() -> new TensorParallelModel(SPEC.model()).setTpSize(2).transform(in))
          .hasMessage("Invalid value for spark.tp.comm.chunk-bytes: '1k' (use a multiple of 4 bytes from 4k to 64m,"
              + " e.g. 1m)");
    } finally {
      spark.conf().unset("spark.tp.comm.chunk-bytes");
    }
    spark.conf().set("spark.tp.comm.port-range", "1-2-3");
    try {
      assertThatThrownBy(() -> new TensorParallelModel(SPEC.model()).transform(in))
          .hasMessageStartingWith("Invalid port range for spark.tp.comm.port-range: '1-2-3'");
    } finally {
      spark.conf().unset("spark.tp.comm.port-range");
    }
    // a model's setting wins over the session conf and travels to the tasks with the job
    spark.conf().set("spark.tp.comm.shm", "auto");
    try {
      org.sparktp.TpSettings s = org.sparktp.TpSettings.resolve(spark, java.util.Map.of("spark.tp.comm.shm", "off",
          "spark.tp.comm.transport", "tcp"));
      CommFactory f = CommFactory.forSettings(spark, s);
      assertThat(f).isInstanceOf(TcpCommFactory.class);
      assertThat(((TcpCommFactory) f).options()).containsEntry("spark.tp.comm.shm", "off")
          .containsEntry("spark.tp.comm.timeout", "30s").containsEntry("spark.tp.comm.chunk-bytes", "1m");
    } finally {
      spark.conf().unset("spark.tp.comm.shm");
    }
  }

  @Test
  void nullPolicySkipDropsAndNullKeepsTheRows() {
    float[][] x = inputs(new Random(2002), 12, 50, false);
    Dataset<Row> in = withNulls(x, 2);
    double[][] ref = Reference.forward(SPEC, x);

    Dataset<Row> skipped = new TensorParallelModel(SPEC.model()).setTpSize(2).setBatchSize(2)
        .setConf("spark.tp.null-policy", "skip").transform(in);
    List<Row> s = skipped.collectAsList();
    assertThat(s).extracting(r -> r.getLong(0)).containsExactly(0L, 1L, 2L, 4L, 5L, 6L, 9L, 10L, 11L);

    TensorParallelModel keep = new TensorParallelModel(SPEC.model()).setTpSize(2).setBatchSize(2)
        .setConf("spark.tp.null-policy", "null");
    Dataset<Row> kept = keep.transform(in);
    assertThat(kept.schema().apply("prediction").nullable()).isTrue();
    List<Row> k = kept.collectAsList();
    assertThat(k).extracting(r -> r.getLong(0)).containsExactly(0L, 1L, 2L, 3L, 4L, 5L, 6L, 7L, 8L, 9L, 10L, 11L);
    float[][] y = new float[12][];
    for (Row r : k) {
      int id = (int) r.getLong(0);
      if (id == 3 || id == 7 || id == 8) {
        assertThat(r.isNullAt(2)).as("row %d", id).isTrue();
        y[id] = null;
      } else {
        List<Float> v = r.getList(2);
        y[id] = new float[v.size()];
        for (int j = 0; j < v.size(); j++) {
          y[id][j] = v.get(j);
        }
      }
    }
    for (int id : new int[] {3, 7, 8}) {
      y[id] = new float[37];
      ref[id] = new double[37];
    }
    assertClose(y, ref);
  }

  @Test
  void wrongWidthFailsWithExpectedAndActualWidth() {
    float[][] x = inputs(new Random(2003), 10, 50, false);
    x[6] = new float[49];
    Dataset<Row> out = new TensorParallelModel(SPEC.model()).setTpSize(2).transform(frame(Input.FLOATS, x, 2));
    assertThatThrownBy(out::collectAsList)
        .hasMessageContaining("Column 'features': row 1 of input partition 1 has width 49, the model expects width 50");
  }

  @Test
  void wrongSparseVectorSizeFails() {
    float[][] x = inputs(new Random(2004), 4, 50, true);
    x[0] = new float[51];
    x[0][3] = 1;
    Dataset<Row> out = new TensorParallelModel(SPEC.model()).transform(frame(Input.SPARSE_VECTOR, x, 1));
    assertThatThrownBy(out::collectAsList).hasMessageContaining("is a vector of size 51, the model expects width 50");
  }

  @Test
  void missingOrNonNumericColumnsFailBeforeAnyJob() {
    Dataset<Row> df = frame(Input.FLOATS, inputs(new Random(2005), 4, 50, false), 1);
    TensorParallelModel model = new TensorParallelModel(SPEC.model()).setTpSize(2);
    assertThatThrownBy(() -> model.setInputCol("nope").transform(df))
        .hasMessageContaining("Input column 'nope' does not exist; the columns are id, features, tag");
    assertThatThrownBy(() -> model.setInputCol("tag").transform(df))
        .hasMessageContaining("Input column 'tag' has type string; the model takes array<float>, array<double> or vector");
    assertThatThrownBy(() -> model.setInputCol("features").setOutputCol("id").transform(df))
        .hasMessageContaining("Output column 'id' already exists");
  }

  @Test
  void tooFewSlotsOrDynamicAllocationFailBeforeAnyJob() {
    Dataset<Row> df = frame(Input.FLOATS, inputs(new Random(2006), 4, 50, false), 1);
    assertThatThrownBy(() -> new TensorParallelModel(SPEC.model()).setTpSize(2).setGroups(3).transform(df))
        .hasMessageContaining("needs 3 group(s) x tpSize 2 = 6 task slots at once, but the cluster has 4");
    assertThatThrownBy(() -> new TensorParallelModel(SPEC.model()).setTpSize(5).transform(df))
        .hasMessageContaining("needs 5 task slots at once, but the cluster has 4");
    assertThatThrownBy(() -> Slots.check(true, 8, 1, 2))
        .hasMessageContaining("set spark.dynamicAllocation.enabled=false");
    assertThat(Slots.of(spark.sparkContext())).isEqualTo(4);
  }

  @Test
  void nanAndInfinityPropagate() {
    float[][] x = inputs(new Random(2007), 4, 50, false);
    x[1][0] = Float.NaN;
    x[2][5] = Float.POSITIVE_INFINITY;
    float[][] y = outputsById(new TensorParallelModel(SPEC.model()).setTpSize(2).transform(frame(Input.FLOATS, x, 1)),
        4, "prediction");
    for (float v : y[1]) {
      assertThat(v).isNaN();
    }
    assertThat(y[0]).doesNotContain(Float.NaN);
    assertThat(y[3]).doesNotContain(Float.NaN);
  }

  @Test
  void nullElementsAndIdsOutsideTheVocabularyFail() {
    List<Row> rows = new ArrayList<>();
    Float[] withNull = new Float[50];
    java.util.Arrays.fill(withNull, 1f);
    withNull[7] = null;
    rows.add(RowFactory.create(0L, withNull));
    StructType schema = new StructType().add("id", DataTypes.LongType)
        .add("features", DataTypes.createArrayType(DataTypes.FloatType, true));
    Dataset<Row> out = new TensorParallelModel(SPEC.model()).transform(spark.createDataFrame(jsc.parallelize(rows, 1), schema));
    assertThatThrownBy(out::collectAsList)
        .hasMessageContaining("Column 'features': row 0 of input partition 0 has a null element at position 7");

    ModelSpec emb = Reference.embedding(new Random(2008), 10, 4, 3);
    StructType ids = new StructType().add("token", DataTypes.IntegerType);
    Dataset<Row> bad = spark.createDataFrame(jsc.parallelize(List.of(RowFactory.create(3), RowFactory.create(10)), 1),
        ids);
    Dataset<Row> y = new TensorParallelModel(emb.model()).setTpSize(2).setInputCol("token").transform(bad);
    assertThatThrownBy(y::collectAsList)
        .hasMessageContaining("row 1 of input partition 0 holds id 10, outside the vocabulary [0, 10)");
    assertThatThrownBy(() -> new TensorParallelModel(emb.model()).transform(frame(Input.FLOATS, new float[0][], 1)))
        .hasMessageContaining("Input column 'features' has type array<float>; the model takes int or long");
  }

  @Test
  void transportAndBackendSettingsPickNcclOnlyForGpuJobs() {
    assertThat(CommFactory.forSession(spark, java.util.Map.of())).isInstanceOf(LocalCommFactory.class);
    assertThat(CommFactory.forSession(spark, java.util.Map.of(org.sparktp.TpConf.COMM_TRANSPORT, "nccl")))
        .isInstanceOf(NcclCommFactory.class);
    assertThat(CommFactory.forSession(spark, java.util.Map.of(org.sparktp.TpConf.BACKEND, "cuda")))
        .isInstanceOf(NcclCommFactory.class);
    assertThat(CommFactory.forSession(spark, java.util.Map.of(org.sparktp.TpConf.BACKEND, "cuda",
        org.sparktp.TpConf.COMM_TRANSPORT, "local"))).isInstanceOf(LocalCommFactory.class);
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> CommFactory.forSession(spark,
        java.util.Map.of(org.sparktp.TpConf.COMM_TRANSPORT, "rdma")))
        .hasMessage("Invalid value for spark.tp.comm.transport: 'rdma' (use auto, local, tcp or nccl)");
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> RankTask.checkBackend("tpu"))
        .hasMessage("Unknown backend 'tpu' (spark.tp.backend / backend param): use auto, cpu or cuda");
    // auto on a task without a GPU resource is the CPU
    assertThat(GpuTask.resolveBackend("auto", null)).isEqualTo("cpu");
  }
}
