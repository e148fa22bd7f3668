package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.sparktp.testing.HfFixtures;

/**
 * One DataFrame test per task on the Hugging Face fixtures (the engine itself is tested in-process by
 * HfEngineTest): outputs against the float64 PyTorch references, max |y - ref| / max |ref| <= 1e-4.
 */
class HfSparkTest extends SparkTestBase {
  static final double TOL = 1e-4;

  static Dataset<Row> idsFrame(int[][] rows, boolean longs) {
    DataType el = longs ? DataTypes.LongType : DataTypes.IntegerType;
    StructType schema = new StructType().add("id", DataTypes.IntegerType)
        .add("ids", DataTypes.createArrayType(el, false));
    List<Row> data = new ArrayList<>();
    for (int i = 0; i < rows.length; i++) {
      Object[] v = new Object[rows[i].length];
      for (int j = 0; j < v.length; j++) {
        v[j] = longs ? (Object) (long) rows[i][j] : (Object) rows[i][j];
      }
      data.add(RowFactory.create(i, v));
    }
    return spark.createDataFrame(data, schema).repartition(3);
  }

  static double relError(List<Row> out, java.util.function.IntFunction<double[]> want) {
    double err = 0;
    double ref = 0;
    for (Row r : out) {
      double[] w = want.apply(r.getInt(0));
      Object y = r.get(2);
      for (int i = 0; i < w.length; i++) {
        double g = y instanceof Double d ? d : ((scala.collection.Seq<?>) y).apply(i) instanceof Float f ? f : 0;
        if (!(y instanceof Double)) {
          g = (Float) r.getList(2).get(i);
        }
        err = Math.max(err, Math.abs(g - w[i]));
        ref = Math.max(ref, Math.abs(w[i]));
      }
    }
    return err / ref;
  }

  @Test
  void embedOnBertIdsMatchesThePytorchReference() {
    HfFixtures.Fixture f = HfFixtures.load("bert");
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids")
        .setOutputCol("emb").setTpSize(2).setTask("embed").setPooling("mean");
    List<Row> out = m.transform(idsFrame(f.inputs(), false)).collectAsList();
    assertThat(out).hasSize(f.rows().size());
    assertThat(relError(out, i -> f.rows().get(i).embedMean())).isLessThanOrEqualTo(TOL);
  }

  @Test
  void logitsOnLlamaLongIdsMatchThePytorchReference() {
    HfFixtures.Fixture f = HfFixtures.load("llama");
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids")
        .setOutputCol("logits").setTpSize(2).setConf("spark.tp.batch-tokens", "20"); // several micro-batches; a 48-token row runs alone
    Dataset<Row> out = m.transform(idsFrame(f.inputs(), true));
    assertThat(out.schema().apply("logits").dataType())
        .isEqualTo(DataTypes.createArrayType(DataTypes.FloatType, false));
    // llama is a bf16 checkpoint: auto stores it in bf16 where the CPU has native bf16 (its tolerance then)
    double tol = m.resolveDtype("cpu", spark) == org.sparktp.tensor.DType.BF16 ? 2e-2 : TOL;
    assertThat(relError(out.collectAsList(), i -> f.rows().get(i).logitsLast())).isLessThanOrEqualTo(tol);
  }

  /**
   * setDtype("bf16") on an f32 checkpoint (gpt2, tied head): each rank reads its slices typed and stores its
   * linears and embedding tables in bf16; logits within 2e-2 relative of the float64 reference, and above the
   * f32 tolerance (the weights really were rounded). auto resolves to bf16 only for a bf16/f16 checkpoint.
   */
  @Test
  void logitsOnGpt2WithBf16WeightsMatchThePytorchReferenceWithinTheBf16Tolerance() {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids")
        .setOutputCol("logits").setTpSize(3).setDtype("bf16");
    assertThat(m.resolveDtype("cpu", spark)).isEqualTo(org.sparktp.tensor.DType.BF16);
    double err = relError(m.transform(idsFrame(f.inputs(), false)).collectAsList(),
        i -> f.rows().get(i).logitsLast());
    assertThat(err).as("bf16 relative error").isLessThanOrEqualTo(2e-2).isGreaterThan(TOL);
    assertThat(TensorParallelModel.fromDirectory(f.dir().toString()).resolveDtype("cpu", spark))
        .as("auto on an f32 checkpoint").isEqualTo(org.sparktp.tensor.DType.F32);
    assertThat(TensorParallelModel.fromDirectory(HfFixtures.dir("llama").toString()).resolveDtype("cpu", spark))
        .as("auto on a bf16 checkpoint").isEqualTo(org.sparktp.backend.cpu.CpuBackend.hasNativeBf16()
            ? org.sparktp.tensor.DType.BF16 : org.sparktp.tensor.DType.F32);
  }

  @Test
  void scoreOnGpt2IsADoubleColumnMatchingThePytorchReference() {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids")
        .setOutputCol("score").setTpSize(2).setTask("score");
    Dataset<Row> out = m.transform(idsFrame(f.inputs(), false));
    assertThat(out.schema().apply("score").dataType()).isEqualTo(DataTypes.DoubleType);
    assertThat(relError(out.collectAsList(), i -> new double[] {f.rows().get(i).score()}))
        .isLessThanOrEqualTo(TOL);
  }

  @Test
  void textIsTokenizedBeforeTheBarrierStageAsTheReferenceTokenizerDoes() {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    StructType schema = new StructType().add("id", DataTypes.IntegerType).add("text", DataTypes.StringType);
    List<Row> data = new ArrayList<>();
    for (int i = 0; i < f.texts().size(); i++) {
      data.add(RowFactory.create(i, f.texts().get(i)));
    }
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("text")
        .setOutputCol("emb").setTpSize(2).setTask("embed").setPooling("last");
    Dataset<Row> fromText = m.transform(spark.createDataFrame(data, schema).repartition(2));
    assertThat(fromText.columns()).containsExactly("id", "text", "emb");
    // the same rows given as the ids Hugging Face's tokenizer made for them (reference.json's text_ids)
    List<Row> fromIds = m.copy(new org.apache.spark.ml.param.ParamMap()).setInputCol("ids")
        .transform(idsFrame(f.textIds().toArray(new int[0][]), false)).collectAsList();
    double[][] want = new double[fromIds.size()][];
    for (Row r : fromIds) {
      List<Float> y = r.getList(2);
      want[r.getInt(0)] = y.stream().mapToDouble(Float::doubleValue).toArray();
    }
    assertThat(relError(fromText.collectAsList(), i -> want[i])).isLessThanOrEqualTo(1e-6);
  }

  @Test
  void aTooLongOrEmptySequenceFailsNamingTheRowBeforeAnyRankRuns() {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids")
        .setOutputCol("y").setTpSize(2);
    assertThatThrownBy(() -> m.transform(idsFrame(new int[][] {new int[33]}, false).coalesce(1)).collect())
        .hasMessageContaining("Column 'ids': row 0 of input partition 0 has 33 tokens, more than the model's "
            + "max_position_embeddings (32); shorten it or set spark.tp.truncate=true");
    assertThatThrownBy(() -> m.transform(idsFrame(new int[][] {{1, 2}, {}}, false).coalesce(1)).collect())
        .hasMessageContaining("row 1 of input partition 0 is an empty sequence");
    assertThatThrownBy(() -> m.transform(idsFrame(new int[][] {{1, 400}}, false).coalesce(1)).collect())
        .hasMessageContaining("holds id 400 at position 1, outside the vocabulary [0, 327)");
  }

  /**
   * A Hugging Face model is a Pipeline stage that saves and loads with the Pipeline: its params and setConf options
   * are saved, its directory by location (nothing copied); the loaded Pipeline tokenizes and scores the same text to
   * the same scores, which match the PyTorch reference (before, write() refused Hugging Face models).
   */
  @Test
  void aHuggingFaceModelSavesAndLoadsAsAPipelineStageAndScoresTheSame() throws Exception {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids")
        .setOutputCol("score").setTpSize(2).setTask("score").setConf("spark.tp.batch-tokens", "24");
    Dataset<Row> in = idsFrame(f.inputs(), false);
    org.apache.spark.ml.PipelineModel pipeline = new org.apache.spark.ml.Pipeline()
        .setStages(new org.apache.spark.ml.PipelineStage[] {m}).fit(in);
    java.nio.file.Path dir = java.nio.file.Files.createTempDirectory("tp-hf-pipeline");
    String path = dir.resolve("p").toString();
    pipeline.write().save(path);

    org.apache.spark.ml.PipelineModel loaded = org.apache.spark.ml.PipelineModel.load(path);
    TensorParallelModel back = (TensorParallelModel) loaded.stages()[0];
    assertThat(back.uid()).isEqualTo(m.uid());
    assertThat(back.getTpSize()).isEqualTo(2);
    assertThat(back.getOrDefault(back.task())).isEqualTo("score");
    assertThat(back.settings(spark).getInt("spark.tp.batch-tokens", 1)).as("setConf option saved").isEqualTo(24);
    try (java.util.stream.Stream<java.nio.file.Path> files = java.nio.file.Files.walk(dir)) {
      assertThat(files.filter(x -> x.getFileName().toString().endsWith(".safetensors")))
          .as("the checkpoint is referenced, not copied").isEmpty();
    }
    java.util.Map<Integer, Double> before = new java.util.HashMap<>();
    pipeline.transform(in).collectAsList().forEach(r -> before.put(r.getInt(0), r.getDouble(2)));
    List<Row> after = loaded.transform(in).collectAsList();
    assertThat(after).hasSize(before.size());
    for (Row r : after) {
      assertThat(r.getDouble(2)).as("row %d", r.getInt(0)).isCloseTo(before.get(r.getInt(0)),
          org.assertj.core.api.Assertions.within(1e-9 * Math.max(1, Math.abs(before.get(r.getInt(0))))));
    }
    assertThat(relError(after, i -> new double[] {f.rows().get(i).score()})).isLessThanOrEqualTo(TOL);
  }
}
