package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Activation;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.Parallel;

/** TensorParallel's single layers, ML save/load, and embedding inputs. */
class SurfacesTest extends SparkTestBase {

  @ParameterizedTest(name = "tp={0}")
  @ValueSource(ints = {2, 3})
  void singleLayerOperationsMatchReference(int tp) {
    Random rng = new Random(3000 + tp);
    float[][] x = inputs(rng, 33, 50, false);
    Dataset<Row> in = frame(Input.DOUBLES, x, 3);
    LayerSpec.Linear a = Reference.linear(rng, "a", 50, 37, Parallel.COLUMN);
    LayerSpec.Linear b = Reference.linear(rng, "b", 50, 37, Parallel.ROW);
    LayerSpec.Linear w1 = Reference.linear(rng, "w1", 50, 203, Parallel.COLUMN);
    LayerSpec.Linear w2 = Reference.linear(rng, "w2", 203, 37, Parallel.ROW);

    Dataset<Row> col = TensorParallel.columnParallelLinear(in, "features", "y", a.weight(), a.bias(), 50, 37, tp);
    assertClose(outputsById(col, x.length, "y"), Reference.forward(new ModelSpec(50, List.of(a)), x));
    Dataset<Row> row = TensorParallel.rowParallelLinear(in, "features", "y", b.weight(), null, 50, 37, tp);
    LayerSpec.Linear bNoBias = new LayerSpec.Linear("b", 50, 37, b.weight(), null, Parallel.ROW);
    assertClose(outputsById(row, x.length, "y"), Reference.forward(new ModelSpec(50, List.of(bNoBias)), x));
    Dataset<Row> mlp = TensorParallel.mlp(in, "features", "y", w1.weight(), w1.bias(), "gelu", w2.weight(),
        w2.bias(), 50, 203, 37, tp);
    ModelSpec mlpSpec = new ModelSpec(50, List.of(w1, new LayerSpec.Act(Activation.GELU, 203), w2));
    assertClose(outputsById(mlp, x.length, "y"), Reference.forward(mlpSpec, x));
  }

  @Test
  void saveAndLoadKeepParamsAndWeights() throws Exception {
    Random rng = new Random(3100);
    ModelSpec spec = Reference.block(rng, 50, 203, 37);
    float[][] x = inputs(rng, 20, 50, false);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(3).setGroups(1).setBatchSize(7)
        .setOutputCol("out");
    Path dir = Files.createTempDirectory("tp-model");
    String path = dir.resolve("m").toString();
    model.write().save(path);
    model.write().overwrite().save(path);

    TensorParallelModel loaded = TensorParallelModel.load(path);
    assertThat(loaded.uid()).isEqualTo(model.uid());
    assertThat(loaded.getTpSize()).isEqualTo(3);
    assertThat(loaded.getOutputCol()).isEqualTo("out");
    assertThat((Integer) loaded.getOrDefault(loaded.batchSize())).isEqualTo(7);
    assertClose(outputsById(loaded.transform(frame(Input.FLOATS, x, 2)), x.length, "out"),
        Reference.forward(spec, x));
    // the weights are saved in the model directory format, and the loaded model reads its shards from there
    assertThat(dir.resolve("m/weights/config.json")).exists();
    assertThat(dir.resolve("m/weights/model.safetensors")).exists();
    assertThat(loaded.loaded.inMemory()).as("loaded model holds no weights on the driver").isFalse();
    try (org.sparktp.model.ModelDirectory md = org.sparktp.model.ModelDirectory.open(dir.resolve("m/weights")
        .toString())) {
      assertThat(Plan.build(md.graph(), 3).explain()).isEqualTo(Plan.build(spec.graph(), 3).explain());
    }
    // a model read from a checkpoint saves again (its weights are read back from the checkpoint)
    String again = dir.resolve("m2").toString();
    loaded.write().save(again);
    assertClose(outputsById(TensorParallelModel.load(again).transform(frame(Input.FLOATS, x, 2)), x.length, "out"),
        Reference.forward(spec, x));
  }

  @Test
  void aModelDirectoryIsReadByEachRankAndABadOneFailsBeforeAnyJob() throws Exception {
    Random rng = new Random(3200);
    ModelSpec spec = Reference.block(rng, 50, 203, 37);
    float[][] x = inputs(rng, 15, 50, false);
    Path dir = Files.createTempDirectory("tp-dir");
    org.sparktp.model.ModelWriter.write(spec.model(), dir.toString());
    TensorParallelModel m = TensorParallelModel.fromDirectory(dir.toString()).setTpSize(2).setGroups(1);
    assertClose(outputsById(m.transform(frame(Input.FLOATS, x, 3)), x.length, "prediction"),
        Reference.forward(spec, x));
    Files.writeString(dir.resolve("config.json"), Files.readString(dir.resolve("config.json"))
        .replace("\"input_dim\" : 50", "\"input_dim\" : 51").replace("\"input_dim\":50", "\"input_dim\":51"));
    long jobs = spark.sparkContext().statusTracker().getJobIdsForGroup(null).length;
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> TensorParallelModel.fromDirectory(dir.toString()))
        .hasMessageContaining("Cannot open the model directory").hasMessageContaining("51");
    assertThat(spark.sparkContext().statusTracker().getJobIdsForGroup(null).length).isEqualTo(jobs);
  }

  @Test
  void worksAsAPipelineStageSavedAndLoadedWithThePipeline() throws Exception {
    Random rng = new Random(3150);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 12, 50, false);
    Dataset<Row> in = frame(Input.FLOATS, x, 2);
    org.apache.spark.ml.PipelineModel pipeline = new org.apache.spark.ml.Pipeline()
        .setStages(new org.apache.spark.ml.PipelineStage[] {new TensorParallelModel(spec.model()).setTpSize(2)})
        .fit(in);
    String path = Files.createTempDirectory("tp-pipeline").resolve("p").toString();
    pipeline.write().save(path);
    org.apache.spark.ml.PipelineModel loaded = org.apache.spark.ml.PipelineModel.load(path);
    assertThat(loaded.stages()[0]).isInstanceOf(TensorParallelModel.class);
    assertClose(outputsById(loaded.transform(in), x.length, "prediction"), Reference.forward(spec, x));
  }

  @Test
  void idsAndBagsOfIdsMatchReference() {
    Random rng = new Random(3200);
    int vocab = 101;
    ModelSpec one = Reference.embedding(rng, vocab, 24, 13);
    ModelSpec bag = Reference.embeddingBag(rng, vocab, 24, 13, true);
    List<Row> rows = new ArrayList<>();
    int n = 30;
    int[][] ids = new int[n][];
    int[][] bags = new int[n][];
    for (int i = 0; i < n; i++) {
      ids[i] = new int[] {rng.nextInt(vocab)};
      bags[i] = new int[1 + rng.nextInt(4)];
      Long[] b = new Long[bags[i].length];
      for (int j = 0; j < b.length; j++) {
        bags[i][j] = rng.nextInt(vocab);
        b[j] = (long) bags[i][j];
      }
      rows.add(RowFactory.create((long) i, ids[i][0], b));
    }
    StructType schema = new StructType().add("id", DataTypes.LongType).add("token", DataTypes.IntegerType)
        .add("tokens", DataTypes.createArrayType(DataTypes.LongType));
    Dataset<Row> in = spark.createDataFrame(jsc.parallelize(rows, 3), schema);

    Dataset<Row> y1 = new TensorParallelModel(one.model()).setTpSize(2).setInputCol("token").transform(in);
    assertClose(outputsById(y1, n, "prediction"), Reference.forwardIds(one, ids));
    Dataset<Row> y2 = new TensorParallelModel(bag.model()).setTpSize(3).setGroups(1).setInputCol("tokens").setBatchSize(4)
        .transform(in);
    assertClose(outputsById(y2, n, "prediction"), Reference.forwardIds(bag, bags));
  }
}
