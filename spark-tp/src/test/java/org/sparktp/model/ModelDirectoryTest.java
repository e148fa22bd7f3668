package org.sparktp.model;

import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import org.sparktp.tensor.HalfFloatsTest;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.sparktp.model.TestData.assertSameFloats;
import static org.sparktp.model.TestData.cutColumns;
import static org.sparktp.model.TestData.cutRows;
import static org.sparktp.model.TestData.random;

import java.io.IOException;
import java.io.OutputStream;
import java.nio.file.Files;
import java.util.List;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.backend.Activation;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.Parallel;
import org.sparktp.shard.Split;

class ModelDirectoryTest {
  @TempDir java.nio.file.Path tmp;
  private final Configuration conf = new Configuration();
  private final Random rnd = new Random(42);

  // ------------------------------------------------------------------ helpers

  private LayerSpec.Linear linear(String name, int in, int out, boolean bias, Parallel p) {
    return new LayerSpec.Linear(name, in, out, random(rnd, in * out), bias ? random(rnd, out) : null, p);
  }

  private LayerSpec.LayerNorm layerNorm(String name, int width) {
    return new LayerSpec.LayerNorm(name, width, random(rnd, width), random(rnd, width), 1e-6f);
  }

  /** Asserts two models have the same structure, names, widths, options and bit-identical weights. */
  static void assertSameModel(ModelSpec actual, ModelSpec expected) {
    assertThat(actual.inputDim()).isEqualTo(expected.inputDim());
    assertSameLayers(actual.layers(), expected.layers());
  }

  private static void assertSameLayers(List<LayerSpec> actual, List<LayerSpec> expected) {
    assertThat(actual).hasSameSizeAs(expected);
    for (int i = 0; i < actual.size(); i++) {
      LayerSpec a = actual.get(i);
      LayerSpec e = expected.get(i);
      assertThat(a.getClass()).isEqualTo(e.getClass());
      assertThat(a.describe()).isEqualTo(e.describe());
      if (a instanceof LayerSpec.Linear x && e instanceof LayerSpec.Linear y) {
        assertThat(x.parallel()).isEqualTo(y.parallel());
        assertSameFloats(x.weight(), y.weight());
        if (y.bias() == null) {
          assertThat(x.bias()).isNull();
        } else {
          assertSameFloats(x.bias(), y.bias());
        }
      } else if (a instanceof LayerSpec.LayerNorm x && e instanceof LayerSpec.LayerNorm y) {
        assertThat(x.eps()).isEqualTo(y.eps());
        assertSameFloats(x.gamma(), y.gamma());
        assertSameFloats(x.beta(), y.beta());
      } else if (a instanceof LayerSpec.Embedding x && e instanceof LayerSpec.Embedding y) {
        assertThat(x.bag()).isEqualTo(y.bag());
        assertThat(x.mean()).isEqualTo(y.mean());
        assertSameFloats(x.table(), y.table());
      } else if (a instanceof LayerSpec.Act x && e instanceof LayerSpec.Act y) {
        assertThat(x).isEqualTo(y);
      } else if (a instanceof LayerSpec.Residual x && e instanceof LayerSpec.Residual y) {
        assertSameLayers(x.body(), y.body());
      }
    }
  }

  private Path dir(String name) throws IOException {
    return new Path(Files.createDirectories(tmp.resolve(name)).toString());
  }

  private static void writeText(Path file, String text) throws IOException {
    Files.writeString(java.nio.file.Path.of(file.toUri().getPath()), text);
  }

  private static void writeWeights(Path file, SafetensorsWriter w) throws IOException {
    try (OutputStream out = Files.newOutputStream(java.nio.file.Path.of(file.toUri().getPath()))) {
      w.write(out);
    }
  }

  private ModelSpec roundTrip(ModelSpec spec, String name) throws IOException {
    Path d = dir(name);
    ModelWriter.write(spec.model(), d, conf);
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      return ModelSpec.of(md.load());
    }
  }

  /** Writes {@code config} and {@code weights} into a fresh directory and returns the open error. */
  private String openError(String name, String config, SafetensorsWriter weights) throws IOException {
    Path d = dir(name);
    writeText(new Path(d, "config.json"), config);
    writeWeights(new Path(d, "model.safetensors"), weights);
    return openError(d);
  }

  private String openError(Path d) throws IOException {
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      throw new AssertionError("expected " + d + " to be rejected, opened " + md);
    } catch (ModelFormatException e) {
      return e.getMessage();
    }
  }

  // ------------------------------------------------------------------ round trips

  @Test
  void everyLayerTypeRoundTripsThroughAModelDirectory() throws Exception {
    int vocab = 37;
    int d = 12;
    int h = 19;
    ModelSpec spec = new ModelSpec(vocab, List.of(
        new LayerSpec.Embedding("tok", vocab, d, random(rnd, vocab * d), true, true),
        linear("fc1", d, h, true, Parallel.COLUMN),
        new LayerSpec.Act(Activation.GELU, h),
        linear("fc2", h, d, false, Parallel.ROW),
        new LayerSpec.Residual(List.of(
            layerNorm("blocks.0.ln", d),
            linear("blocks.0.up", d, h, true, Parallel.AUTO),
            new LayerSpec.Act(Activation.GELU_TANH, h),
            new LayerSpec.Act(Activation.SILU, h),
            linear("blocks.0.down", h, d, true, Parallel.REPLICATED),
            new LayerSpec.Residual(List.of(
                new LayerSpec.Act(Activation.TANH, d),
                linear("blocks.0.inner", d, d, true, Parallel.AUTO),
                new LayerSpec.Act(Activation.RELU, d))))),
        new LayerSpec.Act(Activation.SIGMOID, d),
        layerNorm("final_ln", d),
        linear("head", d, 5, true, Parallel.AUTO),
        new LayerSpec.Act(Activation.SOFTMAX, 5)));
    assertSameModel(roundTrip(spec, "all"), spec);

    ModelSpec sumBag = new ModelSpec(vocab, List.of(
        new LayerSpec.Embedding("bag", vocab, d, random(rnd, vocab * d), true, false), linear("o", d, 3, true, null)));
    assertSameModel(roundTrip(sumBag, "bag-sum"), sumBag);

    ModelSpec plainEmbedding = new ModelSpec(vocab, List.of(
        new LayerSpec.Embedding("emb", vocab, d, random(rnd, vocab * d), false, false)));
    assertSameModel(roundTrip(plainEmbedding, "emb"), plainEmbedding);

    ModelSpec vectors = new ModelSpec(d, List.of(linear("only", d, h, false, Parallel.AUTO)));
    assertSameModel(roundTrip(vectors, "vectors"), vectors);
  }

  @Test
  void aLayerNormWithoutParametersRoundTrips() throws Exception {
    ModelSpec spec = new ModelSpec(6, List.of(new LayerSpec.LayerNorm("norm", 6, null, null, 1e-5f),
        linear("fc", 6, 4, true, Parallel.AUTO)));
    ModelSpec back = roundTrip(spec, "ln-plain");
    LayerSpec.LayerNorm ln = (LayerSpec.LayerNorm) back.layers().get(0);
    assertThat(ln.gamma()).isNull();
    assertThat(ln.beta()).isNull();
    assertThat(ln.width()).isEqualTo(6);
    assertSameFloats(((LayerSpec.Linear) back.layers().get(1)).weight(),
        ((LayerSpec.Linear) spec.layers().get(1)).weight());
  }

  @Test
  void aPyTorchStateDictWithAHandWrittenConfigLoadsAsItIs() throws Exception {
    // nn.Sequential(nn.Linear(10, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 4)).state_dict()
    float[] w0 = random(rnd, 16 * 10);
    float[] b0 = random(rnd, 16);
    float[] g2 = random(rnd, 16);
    float[] b2 = random(rnd, 16);
    float[] w3 = random(rnd, 4 * 16);
    float[] b3 = random(rnd, 4);
    Path d = dir("torch");
    writeWeights(new Path(d, "model.safetensors"), new SafetensorsWriter().metadata("format", "pt")
        .add("0.bias", new long[] {16}, b0).add("0.weight", new long[] {16, 10}, w0)
        .add("2.bias", new long[] {16}, b2).add("2.weight", new long[] {16}, g2)
        .add("3.bias", new long[] {4}, b3).add("3.weight", new long[] {4, 16}, w3));
    writeText(new Path(d, "config.json"), """
        {"spark_tp": 1, "input_dim": 10, "layers": [
          {"type": "linear", "weight": "0.weight", "bias": "0.bias"},
          {"type": "gelu"},
          {"type": "layer_norm", "weight": "2.weight", "bias": "2.bias"},
          {"type": "linear", "weight": "3.weight", "bias": "3.bias", "parallel": "row"}]}
        """);
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      assertThat(md.tensorNames()).containsExactly("0.weight", "0.bias", "2.weight", "2.bias", "3.weight", "3.bias");
      assertThat(md.shape("3.weight")).containsExactly(4, 16);
      ModelSpec spec = ModelSpec.of(md.load());
      assertThat(spec.inputDim()).isEqualTo(10);
      assertThat(spec.outputDim()).isEqualTo(4);
      LayerSpec.Linear l0 = (LayerSpec.Linear) spec.layers().get(0);
      assertThat(l0.name()).isEqualTo("0");
      assertThat(l0.in()).isEqualTo(10);
      assertThat(l0.out()).isEqualTo(16);
      assertSameFloats(l0.weight(), w0);
      assertSameFloats(l0.bias(), b0);
      assertThat(spec.layers().get(1)).isEqualTo(new LayerSpec.Act(Activation.GELU, 16));
      LayerSpec.LayerNorm ln = (LayerSpec.LayerNorm) spec.layers().get(2);
      assertThat(ln.eps()).isEqualTo(1e-5f);
      assertSameFloats(ln.gamma(), g2);
      assertSameFloats(ln.beta(), b2);
      LayerSpec.Linear l3 = (LayerSpec.Linear) spec.layers().get(3);
      assertThat(l3.parallel()).isEqualTo(Parallel.ROW);
      assertSameFloats(l3.weight(), w3);
      assertSameFloats(l3.bias(), b3);
    }
  }

  @Test
  void halfPrecisionWeightsLoadAsFloat32() throws Exception {
    int[] halves = new int[6 * 4];
    java.nio.ByteBuffer f16 = java.nio.ByteBuffer.allocate(2 * halves.length).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < halves.length; i++) {
      halves[i] = (rnd.nextInt(2) << 15) | ((5 + rnd.nextInt(20)) << 10) | rnd.nextInt(1024);
      f16.putShort((short) halves[i]);
    }
    float[] bias = random(rnd, 6);
    Path d = dir("half");
    writeWeights(new Path(d, "model.safetensors"), new SafetensorsWriter()
        .addRaw("fc.weight", "F16", new long[] {6, 4}, f16.array()).add("fc.bias", DType.BF16, new long[] {6}, bias));
    writeText(new Path(d, "config.json"), "{\"spark_tp\": 1, \"input_dim\": 4, \"layers\": ["
        + "{\"type\": \"linear\", \"weight\": \"fc.weight\", \"bias\": \"fc.bias\"}]}");
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      LayerSpec.Linear l = (LayerSpec.Linear) ModelSpec.of(md.load()).layers().get(0);
      for (int i = 0; i < halves.length; i++) {
        assertThat((double) l.weight()[i]).isEqualTo(HalfFloatsTest.halfReference(halves[i]));
      }
      for (int i = 0; i < bias.length; i++) {
        int upper = Float.floatToIntBits(bias[i]) >>> 16;
        assertThat(l.bias()[i]).isIn(Float.intBitsToFloat(upper << 16), Float.intBitsToFloat((upper + 1) << 16));
      }
    }
  }

  @Test
  void tiedWeightsAreReadOnceAndStoredOnce() throws Exception {
    float[] table = random(rnd, 11 * 5);
    Path d = dir("tied");
    writeWeights(new Path(d, "model.safetensors"), new SafetensorsWriter().add("wte.weight", new long[] {11, 5}, table));
    writeText(new Path(d, "config.json"), "{\"spark_tp\": 1, \"input_dim\": 11, \"layers\": ["
        + "{\"type\": \"embedding\", \"weight\": \"wte.weight\"}, {\"type\": \"linear\", \"weight\": \"wte.weight\"}]}");
    ModelSpec spec;
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      spec = ModelSpec.of(md.load());
    }
    LayerSpec.Embedding e = (LayerSpec.Embedding) spec.layers().get(0);
    LayerSpec.Linear head = (LayerSpec.Linear) spec.layers().get(1);
    assertThat(head.weight()).isSameAs(e.table());
    assertThat(head.out()).isEqualTo(11);
    // one tensor, two ops: the plan accepts it (it used to fail with "Two layers are named 'wte'")
    assertThat(org.sparktp.nn.plan.Plan.build(spec.graph(), 2).explain()).contains("embedding wte [11x5]")
        .contains("linear wte [5->11]");
    org.sparktp.nn.plan.Plan plan = org.sparktp.nn.plan.Plan.build(spec.graph(), 2);
    assertThat(plan.shard(spec.weights(), 1).blocks()).hasSize(1);
    assertSameModel(roundTrip(spec, "tied-again"), spec);
    try (SafetensorsFile f = SafetensorsFile.open(new Path(dir("tied-again"), "model.safetensors"), conf)) {
      assertThat(f.tensors().keySet()).containsExactly("wte.weight");
    }
  }

  // ------------------------------------------------------------------ sharded checkpoints and shard reads

  @Test
  void aCheckpointSplitAcrossFilesLoadsThroughItsIndex() throws Exception {
    ModelSpec spec = new ModelSpec(9, List.of(linear("fc1", 9, 14, true, Parallel.COLUMN),
        new LayerSpec.Act(Activation.RELU, 14), linear("fc2", 14, 9, true, Parallel.ROW)));
    LayerSpec.Linear fc1 = (LayerSpec.Linear) spec.layers().get(0);
    LayerSpec.Linear fc2 = (LayerSpec.Linear) spec.layers().get(2);
    Path d = dir("sharded");
    writeWeights(new Path(d, "model-00001-of-00002.safetensors"), new SafetensorsWriter()
        .add("fc1.weight", new long[] {14, 9}, fc1.weight()).add("fc1.bias", new long[] {14}, fc1.bias()));
    writeWeights(new Path(d, "model-00002-of-00002.safetensors"), new SafetensorsWriter()
        .add("fc2.weight", new long[] {9, 14}, fc2.weight()).add("fc2.bias", new long[] {9}, fc2.bias())
        .add("unused", new long[] {2}, random(rnd, 2)));
    writeText(new Path(d, "model.safetensors.index.json"), """
        {"metadata": {"total_size": 1000},
         "weight_map": {"fc1.weight": "model-00001-of-00002.safetensors",
                        "fc1.bias": "model-00001-of-00002.safetensors",
                        "fc2.weight": "model-00002-of-00002.safetensors",
                        "fc2.bias": "model-00002-of-00002.safetensors",
                        "unused": "model-00002-of-00002.safetensors"}}
        """);
    spec.model().config().write(new Path(d, "config.json"), conf);
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      assertThat(md.fileOf("fc2.bias").getName()).isEqualTo("model-00002-of-00002.safetensors");
      assertThat(md.fileOf("fc1.weight").getName()).isEqualTo("model-00001-of-00002.safetensors");
      assertSameModel(ModelSpec.of(md.load()), spec);
      // rank r of p reads its column-parallel shard of fc1 (rows of [out, in]) and row-parallel shard of fc2
      for (int p = 1; p <= 4; p++) {
        Split out1 = Split.balanced(14, p);
        Split in2 = Split.balanced(14, p);
        for (int r = 0; r < p; r++) {
          assertSameFloats(md.readRows("fc1.weight", out1.offset(r), out1.length(r)),
              cutRows(fc1.weight(), 9, out1.offset(r), out1.length(r)));
          assertSameFloats(md.readRows("fc1.bias", out1.offset(r), out1.length(r)),
              cutRows(fc1.bias(), 1, out1.offset(r), out1.length(r)));
          assertSameFloats(md.readColumns("fc2.weight", in2.offset(r), in2.length(r)),
              cutColumns(fc2.weight(), 9, 14, in2.offset(r), in2.length(r)));
        }
      }
      assertSameFloats(md.readAll("fc2.bias"), fc2.bias());
      assertThatThrownBy(() -> md.readAll("unused")).isInstanceOf(IllegalArgumentException.class)
          .hasMessageContaining("does not use a tensor 'unused'");
    }
  }

  @Test
  void aRankReadsOnlyItsShardBytes() throws Exception {
    int in = 4096;
    int out = 8;
    ModelSpec spec = new ModelSpec(in, List.of(linear("fc", in, out, true, Parallel.ROW)));
    Path d = dir("bytes");
    ModelWriter.write(spec.model(), d, conf);
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      Split s = Split.balanced(in, 4);
      float[] shard = md.readColumns("fc.weight", s.offset(3), s.length(3));
      assertSameFloats(shard, cutColumns(((LayerSpec.Linear) spec.layers().get(0)).weight(), out, in, s.offset(3),
          s.length(3)));
      assertThat(md.bytesRead()).isEqualTo((long) out * s.length(3) * 4).isLessThan((long) out * in * 4 / 3);
    }
  }

  // ------------------------------------------------------------------ validation

  private static final String MLP = """
      {"spark_tp": 1, "input_dim": 50, "layers": [
        {"type": "linear", "weight": "fc0.weight", "bias": "fc0.bias"},
        {"type": "relu"},
        {"type": "linear", "weight": "fc1.weight", "bias": "fc1.bias"}]}
      """;

  private SafetensorsWriter mlpWeights(long[] fc1Shape, int fc1Bias) {
    int n = (int) (fc1Shape.length == 2 ? fc1Shape[0] * fc1Shape[1] : fc1Shape[0]);
    return new SafetensorsWriter().add("fc0.weight", new long[] {50, 50}, random(rnd, 2500))
        .add("fc0.bias", new long[] {50}, random(rnd, 50))
        .add("fc1.weight", fc1Shape, random(rnd, n))
        .add("fc1.bias", new long[] {fc1Bias}, random(rnd, fc1Bias));
  }

  @Test
  void aLinearWeightWhoseInputWidthDisagreesIsRejectedNamingTheFileAndTensor() throws Exception {
    String msg = openError("bad-in", MLP, mlpWeights(new long[] {203, 49}, 203));
    Path file = new Path(dir("bad-in"), "model.safetensors");
    assertThat(msg).startsWith("Cannot load 'fc1.weight' from " + file + ": expected [*, 50] (")
        .contains("50 is the input width of layer 2, from the output width of layer 0 ('fc0.weight')")
        .endsWith("file has [203, 49]");
    assertThat(openError("bad-rank", MLP, mlpWeights(new long[] {2500}, 203)))
        .contains("Cannot load 'fc1.weight'").endsWith("file has [2500]");
    assertThat(openError("bad-first", MLP.replace("\"input_dim\": 50", "\"input_dim\": 51"),
        mlpWeights(new long[] {3, 50}, 3)))
        .contains("Cannot load 'fc0.weight'").contains("expected [*, 51]").contains("from input_dim in config.json")
        .endsWith("file has [50, 50]");
  }

  @Test
  void aBiasLayerNormOrEmbeddingOfTheWrongSizeIsRejected() throws Exception {
    assertThat(openError("bad-bias", MLP, mlpWeights(new long[] {7, 50}, 8)))
        .contains("Cannot load 'fc1.bias' from ").contains("expected [7] (the bias of layer 2")
        .endsWith("file has [8]");
    String ln = "{\"spark_tp\": 1, \"input_dim\": 6, \"layers\": [{\"type\": \"layer_norm\", \"weight\": \"ln.weight\","
        + " \"bias\": \"ln.bias\"}]}";
    assertThat(openError("bad-ln", ln, new SafetensorsWriter().add("ln.weight", new long[] {6}, random(rnd, 6))
        .add("ln.bias", new long[] {5}, random(rnd, 5))))
        .contains("Cannot load 'ln.bias'").contains("expected [6] (the width at layer 0 (layer_norm)")
        .endsWith("file has [5]");
    String emb = "{\"spark_tp\": 1, \"input_dim\": 100, \"layers\": [{\"type\": \"embedding\", \"weight\": \"e\"}]}";
    assertThat(openError("bad-emb", emb, new SafetensorsWriter().add("e", new long[] {99, 4}, random(rnd, 396))))
        .contains("Cannot load 'e'").contains("expected [100, *] (an embedding table is [vocab, dim]")
        .endsWith("file has [99, 4]");
  }

  @Test
  void aResidualBlockThatChangesTheWidthIsRejected() throws Exception {
    String res = """
        {"spark_tp": 1, "input_dim": 8, "layers": [
          {"type": "residual", "layers": [{"type": "linear", "weight": "a"}, {"type": "gelu"},
                                          {"type": "linear", "weight": "b"}]}]}
        """;
    assertThat(openError("bad-res", res, new SafetensorsWriter().add("a", new long[] {16, 8}, random(rnd, 128))
        .add("b", new long[] {7, 16}, random(rnd, 112))))
        .contains("Cannot load 'b' from ").contains("expected [8, *] (layer 0 is a residual block, which must end at "
            + "its input width 8)").endsWith("file has [7, 16]");
  }

  @Test
  void aMissingTensorIsRejected() throws Exception {
    Path d = dir("missing");
    String msg = openError("missing", MLP, new SafetensorsWriter()
        .add("fc0.weight", new long[] {50, 50}, random(rnd, 2500)).add("fc0.bias", new long[] {50}, random(rnd, 50))
        .add("fc1.bias", new long[] {3}, random(rnd, 3)));
    assertThat(msg).isEqualTo("Cannot load 'fc1.weight' from " + new Path(d, "model.safetensors")
        + ": the file has no such tensor; it has 'fc0.weight', 'fc0.bias', 'fc1.bias'");
  }

  @Test
  void aTensorMissingFromTheIndexIsRejected() throws Exception {
    Path d = dir("missing-index");
    writeText(new Path(d, "config.json"), MLP);
    writeWeights(new Path(d, "a.safetensors"), mlpWeights(new long[] {3, 50}, 3));
    writeText(new Path(d, "model.safetensors.index.json"), "{\"weight_map\": {\"fc0.weight\": \"a.safetensors\", "
        + "\"fc0.bias\": \"a.safetensors\", \"fc1.bias\": \"a.safetensors\"}}");
    assertThat(openError(d)).isEqualTo("Cannot load 'fc1.weight': " + new Path(d, "model.safetensors.index.json")
        + " does not list it in its weight_map");
    writeText(new Path(d, "model.safetensors.index.json"), "{\"weight_map\": {\"fc0.weight\": \"b.safetensors\"}}");
    assertThat(openError(d)).isEqualTo("Cannot load 'fc0.weight': " + new Path(d, "model.safetensors.index.json")
        + " maps it to b.safetensors, but " + new Path(d, "b.safetensors") + " does not exist");
    writeText(new Path(d, "model.safetensors.index.json"), "{\"weight_map\": {\"fc0.weight\": \"/etc/passwd\"}}");
    assertThat(openError(d)).contains("weight_map maps 'fc0.weight' to \"/etc/passwd\"");
    writeText(new Path(d, "model.safetensors.index.json"), "{\"weights\": {}}");
    assertThat(openError(d)).contains("expected {\"weight_map\"");
  }

  @Test
  void anUnsupportedDtypeInAUsedTensorIsRejected() throws Exception {
    byte[] longs = new byte[3 * 50 * 8];
    rnd.nextBytes(longs);
    Path d = dir("i64");
    String msg = openError("i64", MLP, new SafetensorsWriter()
        .add("fc0.weight", new long[] {50, 50}, random(rnd, 2500)).add("fc0.bias", new long[] {50}, random(rnd, 50))
        .addRaw("fc1.weight", "I64", new long[] {3, 50}, longs).add("fc1.bias", new long[] {3}, random(rnd, 3)));
    assertThat(msg).isEqualTo("Cannot load 'fc1.weight' from " + new Path(d, "model.safetensors")
        + ": dtype I64 is not supported; spark-tp loads F32, F16, BF16 (converted to float32)");
  }

  @Test
  void aDirectoryWithoutConfigOrWeightsOrWithACorruptFileIsRejected() throws Exception {
    Path d = dir("empty");
    assertThat(openError(d)).isEqualTo("Cannot open model directory " + d + ": it has no config.json");
    writeText(new Path(d, "config.json"), MLP);
    assertThat(openError(d)).isEqualTo("Cannot open model directory " + d
        + ": it has neither model.safetensors nor model.safetensors.index.json");
    writeText(new Path(d, "model.safetensors"), "\u0010\u0000\u0000\u0000\u0000\u0000\u0000\u0000{not json}      ");
    assertThat(openError(d)).isEqualTo("Invalid safetensors file " + new Path(d, "model.safetensors")
        + ": the header is not valid JSON: Unexpected character ('n' (code 110)): was expecting double-quote to "
        + "start field name");
    writeText(new Path(d, "config.json"), "{\"spark_tp\": 1, \"input_dim\": 50, \"layers\": [{\"type\": \"dense\"}]}");
    assertThat(openError(d)).startsWith("Invalid " + new Path(d, "config.json") + ": layer 0: unknown layer type");
  }

  @Test
  void aClosedDirectoryRefusesReads() throws Exception {
    ModelSpec spec = new ModelSpec(3, List.of(linear("fc", 3, 2, true, Parallel.AUTO)));
    Path d = dir("closed");
    ModelWriter.write(spec.model(), d, conf);
    ModelDirectory md = ModelDirectory.open(d, conf);
    md.close();
    md.close();
    assertThatThrownBy(() -> md.readAll("fc.weight")).isInstanceOf(IllegalStateException.class);
  }

  @Test
  void aSavedModelWhoseConfigIsEditedByHandStillLoads() throws Exception {
    ModelSpec spec = new ModelSpec(5, List.of(linear("fc", 5, 3, true, Parallel.AUTO)));
    Path d = dir("edited");
    // a stale checksum side file, as Hadoop's local file system leaves next to what it writes
    try (var out = org.apache.hadoop.fs.FileSystem.getLocal(conf).create(new Path(d, "config.json"), true)) {
      out.writeBytes("{}");
    }
    assertThat(Files.exists(tmp.resolve("edited/.config.json.crc"))).isTrue();
    ModelWriter.write(spec.model(), d, conf);
    try (var files = Files.list(tmp.resolve("edited"))) {
      assertThat(files.map(f -> f.getFileName().toString())).containsExactlyInAnyOrder("config.json",
          "model.safetensors");
    }
    java.nio.file.Path config = tmp.resolve("edited/config.json");
    Files.writeString(config, Files.readString(config).replace("\"auto\"", "\"row\""));
    try (ModelDirectory md = ModelDirectory.open(d, conf)) {
      assertThat(((LayerSpec.Linear) ModelSpec.of(md.load()).layers().get(0)).parallel()).isEqualTo(Parallel.ROW);
    }
  }

  @Test
  void theWriterRefusesTwoDifferentTensorsUnderOneName() {
    ModelSpec spec = new ModelSpec(4, List.of(linear("fc", 4, 4, true, Parallel.AUTO),
        linear("fc", 4, 4, true, Parallel.AUTO)));
    assertThatThrownBy(() -> ModelWriter.write(spec.model(), dir("dup"), conf)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("two layers store different values as 'fc.weight'");
  }
}
