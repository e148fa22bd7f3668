package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.nn.ModelSpec;

/** The executor-side shard cache across jobs, and the whole-stage retry of a failed barrier attempt. */
class CacheAndRetryTest extends SparkTestBase {

  @Test
  void secondJobOfTheSameModelLoadsNothing() {
    Random rng = new Random(1000);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 60, 50, false);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(2).setGroups(2);

    Dataset<Row> first = model.transform(frame(Input.FLOATS, x, 3));
    float[][] y1 = outputsById(first, x.length, "prediction");
    TpMetrics m1 = model.lastMetrics();
    long loadsBefore = ShardCache.get().loads();
    Dataset<Row> second = model.transform(frame(Input.FLOATS, x, 5));
    float[][] y2 = outputsById(second, x.length, "prediction");
    TpMetrics m2 = model.lastMetrics();

    // 2 groups x 2 ranks: each rank loads its model, unless a group that starts after the other group's
    // rank checked its model back in reuses it (the key is the rank, not the group; a loaded machine).
    // Every load leaves one more cached model of its rank, and at most two of a rank are ever in use at
    // once, so the two jobs together load at most 4: when the first job loaded 4, the second loads none.
    assertThat(m1.totalLoads()).isBetween(2L, 4L);
    assertThat(m1.totalLoads() + m2.totalLoads()).isLessThanOrEqualTo(4L);
    assertThat(ShardCache.get().loads() - loadsBefore).isEqualTo(m2.totalLoads());
    assertThat(m2.totalRows()).isEqualTo(x.length);
    // the same rows in other micro-batches: the GEMMs see other row counts, and OpenBLAS's kernel for a
    // row count (OPENBLAS_CORETYPE=Haswell here) may sum in another order, so equal to float rounding
    double scale = 0;
    double diff = 0;
    for (int i = 0; i < y1.length; i++) {
      for (int j = 0; j < y1[i].length; j++) {
        scale = Math.max(scale, Math.abs(y1[i][j]));
        diff = Math.max(diff, Math.abs(y2[i][j] - y1[i][j]));
      }
    }
    assertThat(y2.length).isEqualTo(y1.length);
    assertThat(diff / scale).as("max |y2 - y1| / max |y1| of the second job").isLessThanOrEqualTo(1e-6);
  }

  @Test
  void theSameDirectoryOpenedTwiceSharesItsShardsAndReleaseFreesThem(@org.junit.jupiter.api.io.TempDir
      java.nio.file.Path tmp) throws Exception {
    Random rng = new Random(1050);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    String dir = tmp.resolve("m").toString();
    org.sparktp.model.ModelWriter.write(spec.model(), dir);
    float[][] x = inputs(rng, 40, 50, false);
    TensorParallelModel a = TensorParallelModel.fromDirectory(dir).setTpSize(2).setGroups(1);
    outputsById(a.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction");
    assertThat(a.lastMetrics().totalLoads()).isEqualTo(2);
    TensorParallelModel b = TensorParallelModel.fromDirectory(dir).setTpSize(2).setGroups(1);
    outputsById(b.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction");
    assertThat(b.lastMetrics().totalLoads()).as("a second open of the same directory").isZero();
    int idle = ShardCache.get().idleCount();
    assertThat(b.release()).as("cached rank models freed").isEqualTo(2);
    assertThat(ShardCache.get().idleCount()).isEqualTo(idle - 2);
    assertThat(a.release()).isZero();
  }

  @Test
  void savingAModelOpenedFromADirectoryCopiesItsFiles(@org.junit.jupiter.api.io.TempDir java.nio.file.Path tmp)
      throws Exception {
    java.nio.file.Path src = java.nio.file.Path.of(getClass().getResource("/interop/model/config.json").toURI())
        .getParent();
    TensorParallelModel m = TensorParallelModel.fromDirectory(src.toString()).setTpSize(2);
    java.nio.file.Path out = tmp.resolve("saved");
    m.write().save(out.toString());
    for (String f : new String[] {"config.json", "model.safetensors"}) {
      assertThat(java.nio.file.Files.readAllBytes(out.resolve("weights").resolve(f))).as(f)
          .isEqualTo(java.nio.file.Files.readAllBytes(src.resolve(f)));
    }
    TensorParallelModel back = TensorParallelModel.load(out.toString());
    assertThat(back.getTpSize()).isEqualTo(2);
    assertThat(back.graph().inputDim()).isEqualTo(50);
  }

  @Test
  void aTinyCacheBoundEvictsAndClosesAfterEachTask() {
    Random rng = new Random(1100);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 20, 50, false);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(2).setGroups(1)
        .setConf("spark.tp.cache.max-bytes", "1k");
    assertClose(outputsById(model.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction"),
        Reference.forward(spec, x));
    assertClose(outputsById(model.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction"),
        Reference.forward(spec, x));
    assertThat(model.lastMetrics().totalLoads()).isEqualTo(2); // evicted after the first job: loaded again
    assertThat(ShardCache.get().bytes()).isLessThanOrEqualTo(1024);
    // closing every cached model closes its backend, which throws if a tensor leaked
    ShardCache.get().clear();
    assertThat(ShardCache.get().idleCount()).isZero();
    assertThat(ShardCache.get().bytes()).isZero();
  }

  /**
   * The cache counts a rank model's weight bytes as the plan does in the dtype the rank stores ({@code
   * Plan#weightBytes}, checked against loaded models in {@code WeightBytesTest}): a bf16 model (linears and
   * embedding) about half of f32.
   */
  @Test
  void theCacheCountsTheBytesOfABf16ModelAsHeld() {
    Random rng = new Random(1150);
    int vocab = 500;
    java.util.List<org.sparktp.nn.LayerSpec> layers = new java.util.ArrayList<>();
    float[] table = new float[vocab * 64];
    for (int i = 0; i < table.length; i++) {
      table[i] = (float) rng.nextGaussian();
    }
    layers.add(new org.sparktp.nn.LayerSpec.Embedding("emb", vocab, 64, table, false, false));
    layers.addAll(Reference.mlp(rng, 64, 256, 32).layers());
    ModelSpec spec = new ModelSpec(vocab, layers);
    long[] held = new long[2];
    String[] dtypes = {"f32", "bf16"};
    for (int i = 0; i < 2; i++) {
      ShardCache.get().clear();
      assertThat(ShardCache.get().bytes()).isZero();
      TensorParallelModel m = new TensorParallelModel(spec.model()).setTpSize(2).setGroups(1).setDtype(dtypes[i])
          .setInputCol("id");
      java.util.List<Row> rows = new java.util.ArrayList<>();
      for (int r = 0; r < 8; r++) {
        rows.add(org.apache.spark.sql.RowFactory.create(rng.nextInt(vocab)));
      }
      Dataset<Row> df = session().createDataFrame(rows, new org.apache.spark.sql.types.StructType()
          .add("id", org.apache.spark.sql.types.DataTypes.IntegerType));
      assertThat(m.transform(df).count()).isEqualTo(8);
      held[i] = ShardCache.get().bytes();
    }
    ShardCache.get().clear();
    org.sparktp.nn.plan.Plan plan = org.sparktp.nn.plan.Plan.build(spec.graph(), 2);
    assertThat(held[0]).isEqualTo(plan.weightBytes(0) + plan.weightBytes(1));
    assertThat(held[1]).isEqualTo(plan.weightBytes(0, org.sparktp.tensor.DType.BF16)
        + plan.weightBytes(1, org.sparktp.tensor.DType.BF16));
    assertThat((double) held[1] / held[0]).as("bf16 / f32 cache bytes (%d / %d)", held[1], held[0])
        .isBetween(0.45, 0.6);
  }

  @ParameterizedTest(name = "transport={0}")
  @ValueSource(strings = {"local", "tcp"})
  void aRankFailingInTheFirstAttemptIsRetriedWholeWithoutLosingOrDuplicatingRows(String transport) {
    Random rng = new Random(1200);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 90, 50, false);
    Dataset<Row> in = frame(Input.FLOATS, x, 4);
    float[][] clean = outputsById(new TensorParallelModel(spec.model()).setTpSize(2).setBatchSize(8).transform(in),
        x.length, "prediction");

    TensorParallelModel faulty = new TensorParallelModel(spec.model()).setTpSize(2).setBatchSize(8)
        .setConf("spark.tp.test.fail-rank", "1").setConf("spark.tp.comm.transport", transport);
    Dataset<Row> out = faulty.transform(in);
    assertThat(idsByPartition(out)).isEqualTo(idsByPartition(in));
    assertThat(out.count()).isEqualTo(x.length);
    assertThat(outputsById(out, x.length, "prediction")).isDeepEqualTo(clean);
    assertThat(LocalCommFactory.pending()).isZero();
  }
}
