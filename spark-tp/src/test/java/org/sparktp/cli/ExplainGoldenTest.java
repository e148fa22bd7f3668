package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.sparktp.model.SafetensorsWriter;
import org.sparktp.testing.HfFixtures;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * {@code explain} prints the same plan for the same model across refactors: every fixture model (the layer-list
 * models written below, the PyTorch interop model, every Hugging Face fixture) at several TP sizes, dtypes and
 * tasks, compared line by line with the text recorded under {@code src/test/resources/explain-golden/}
 * (errors included: a split that cannot be made is part of the plan). The CPU-dependent kernel name is masked, and the
 * memory estimate's lines are left out.
 *
 * <p>The golden files were recorded from the build before the one-engine refactor, and recorded again for one
 * deliberate change: the weight bytes per rank became one count for both origins ({@code Plan#weightBytes}: each
 * distinct slice once, so a tied head no longer counts twice at f32; int8 scales in every model; a tied head's own
 * copy outside f32 counted in). To record them again (only
 * for a deliberate change of the text, said in the commit), run with {@code -Dsparktp.golden.record=true}.
 */
class ExplainGoldenTest {
  private static final Path GOLDEN = Path.of("src/test/resources/explain-golden");

  @TempDir
  static Path tmp;

  /** Layer-list models as {@code config.json} text, with the tensors each needs ({@code name: [dims]}). */
  private record LayerModel(String name, String config, String[] tensors) {}

  private static final List<LayerModel> LAYER_MODELS = List.of(
      new LayerModel("mlp",
          "{\"spark_tp\":1,\"input_dim\":64,\"layers\":[{\"type\":\"linear\",\"weight\":\"fc1.weight\",\"bias\":\"fc1.bias\"},"
              + "{\"type\":\"gelu\"},{\"type\":\"linear\",\"weight\":\"fc2.weight\",\"bias\":\"fc2.bias\"},"
              + "{\"type\":\"layer_norm\",\"weight\":\"ln.weight\",\"bias\":\"ln.bias\",\"eps\":1e-5},"
              + "{\"type\":\"residual\",\"layers\":[{\"type\":\"linear\",\"weight\":\"up.weight\",\"bias\":\"up.bias\"},"
              + "{\"type\":\"silu\"},{\"type\":\"linear\",\"weight\":\"down.weight\"}]},"
              + "{\"type\":\"linear\",\"weight\":\"head.weight\",\"bias\":\"head.bias\"},{\"type\":\"softmax\"}]}",
          new String[] {"fc1.weight:256,64", "fc1.bias:256", "fc2.weight:64,256", "fc2.bias:64", "ln.weight:64",
              "ln.bias:64", "up.weight:128,64", "up.bias:128", "down.weight:64,128", "head.weight:10,64",
              "head.bias:10"}),
      new LayerModel("ids-tied",
          "{\"spark_tp\":1,\"input_dim\":50,\"layers\":[{\"type\":\"embedding\",\"weight\":\"emb.weight\"},"
              + "{\"type\":\"linear\",\"weight\":\"a.weight\",\"bias\":\"a.bias\",\"parallel\":\"column\"},{\"type\":\"relu\"},"
              + "{\"type\":\"linear\",\"weight\":\"b.weight\",\"parallel\":\"row\"},{\"type\":\"layer_norm\"},"
              + "{\"type\":\"linear\",\"weight\":\"emb.weight\"}]}",
          new String[] {"emb.weight:50,32", "a.weight:96,32", "a.bias:96", "b.weight:32,96"}),
      new LayerModel("bag-narrow",
          "{\"spark_tp\":1,\"input_dim\":40,\"layers\":[{\"type\":\"embedding_bag\",\"weight\":\"bag.weight\",\"mode\":\"sum\"},"
              + "{\"type\":\"linear\",\"weight\":\"p.weight\",\"bias\":\"p.bias\"},{\"type\":\"tanh\"},"
              + "{\"type\":\"linear\",\"weight\":\"q.weight\",\"parallel\":\"replicated\"},{\"type\":\"sigmoid\"}]}",
          new String[] {"bag.weight:40,16", "p.weight:3,16", "p.bias:3", "q.weight:5,3"}),
      new LayerModel("uneven",
          "{\"spark_tp\":1,\"input_dim\":7,\"layers\":[{\"type\":\"linear\",\"weight\":\"l1.weight\",\"bias\":\"l1.bias\"},"
              + "{\"type\":\"sigmoid\"},{\"type\":\"linear\",\"weight\":\"l2.weight\"},"
              + "{\"type\":\"linear\",\"weight\":\"l3.weight\",\"bias\":\"l3.bias\"},{\"type\":\"gelu_tanh\"}]}",
          new String[] {"l1.weight:5,7", "l1.bias:5", "l2.weight:9,5", "l3.weight:2,9", "l3.bias:2"}),
      new LayerModel("bag-mean-column",
          "{\"spark_tp\":1,\"input_dim\":30,\"layers\":[{\"type\":\"embedding_bag\",\"weight\":\"t.weight\"},"
              + "{\"type\":\"linear\",\"weight\":\"c.weight\",\"bias\":\"c.bias\",\"parallel\":\"column\"}]}",
          new String[] {"t.weight:30,12", "c.weight:21,12", "c.bias:21"}));

  static Stream<Arguments> models() {
    List<Arguments> out = new ArrayList<>();
    for (LayerModel m : LAYER_MODELS) {
      out.add(Arguments.of(m.name()));
    }
    out.add(Arguments.of("interop"));
    for (String hf : HfFixtures.NAMES) {
      out.add(Arguments.of("hf-" + hf));
    }
    return out.stream();
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("models")
  void explainPrintsTheRecordedPlan(String name) throws Exception {
    Path dir = modelDir(name);
    List<List<String>> runs = new ArrayList<>();
    boolean hf = name.startsWith("hf-");
    boolean decoder = hf && HfFixtures.load(name.substring(3)).isDecoder();
    for (int tp = 1; tp <= 4; tp++) {
      String t = Integer.toString(tp);
      if (!hf) {
        for (String dt : new String[] {"f32", "bf16", "int8"}) {
          runs.add(List.of("--tp", t, "--dtype", dt));
        }
        runs.add(List.of("--tp", t, "--activation-dtype", "bf16"));
      } else if (decoder) {
        runs.add(List.of("--tp", t));
        runs.add(List.of("--tp", t, "--dtype", "f32", "--task", "score"));
        runs.add(List.of("--tp", t, "--dtype", "int8", "--task", "generate"));
        runs.add(List.of("--tp", t, "--dtype", "bf16", "--task", "embed", "--pooling", "mean", "--normalize"));
      } else {
        runs.add(List.of("--tp", t));
        runs.add(List.of("--tp", t, "--dtype", "bf16", "--pooling", "cls", "--normalize"));
        runs.add(List.of("--tp", t, "--task", "logits"));
      }
    }
    StringBuilder sb = new StringBuilder();
    for (List<String> flags : runs) {
      List<String> args = new ArrayList<>(List.of("explain", "--model", dir.toString()));
      args.addAll(flags);
      ByteArrayOutputStream out = new ByteArrayOutputStream();
      ByteArrayOutputStream err = new ByteArrayOutputStream();
      int code = SparkTpCli.run(args.toArray(String[]::new), new PrintStream(out, true, StandardCharsets.UTF_8),
          new PrintStream(err, true, StandardCharsets.UTF_8));
      sb.append("### explain ").append(String.join(" ", flags)).append(" -> exit ").append(code).append('\n');
      sb.append(mask(out.toString(StandardCharsets.UTF_8)));
      String e = err.toString(StandardCharsets.UTF_8);
      if (!e.isEmpty()) {
        // the first line is the error; the usage text after it is not part of the plan
        sb.append("stderr: ").append(e.lines().findFirst().orElse("")).append('\n');
      }
    }
    String actual = sb.toString().replace(dir.toString(), "<model>");
    Path golden = GOLDEN.resolve(name + ".txt");
    // recorded in the default environment only (the capped-oneDNN test run resolves dtype auto differently)
    if (Boolean.getBoolean("sparktp.golden.record") && System.getenv("ONEDNN_MAX_CPU_ISA") == null) {
      Files.createDirectories(GOLDEN);
      Files.writeString(golden, actual);
    }
    assertThat(golden).as("golden file %s (record with -Dsparktp.golden.record=true)", golden).exists();
    List<String> expected = Files.readAllLines(golden);
    assertThat(actual.lines().toList()).as("explain of %s, compared with %s", name, golden)
        .containsExactlyElementsOf(expected);
  }

  /**
   * Masks the kernel name, which depends on the CPU ({@code kernel onednn ...}), and drops the memory estimate's lines and the line that says why
   * {@code dtype auto} gave its type on this CPU (it names oneDNN's ISA; {@code CliTest} checks it).
   */
  static String mask(String s) {
    // the memory estimate's lines (RankMemoryTest checks them) are not part of the plan
    return s.replaceAll("kernel [^\\n]*?(\\n|$)", "kernel <kernel>$1").replaceAll("(?m)^auto -> [^\\n]*\\n", "")
        .replaceAll("(?m)^(memory per rank|KV cache:) [^\\n]*\\n", "");
  }

  private static Path modelDir(String name) throws IOException {
    if (name.equals("interop")) {
      try {
        return Path.of(ExplainGoldenTest.class.getResource("/interop/model/config.json").toURI()).getParent();
      } catch (java.net.URISyntaxException e) {
        throw new IOException(e);
      }
    }
    if (name.startsWith("hf-")) {
      return HfFixtures.dir(name.substring(3));
    }
    LayerModel m = LAYER_MODELS.stream().filter(x -> x.name().equals(name)).findFirst().orElseThrow();
    Path dir = tmp.resolve(name);
    Files.createDirectories(dir);
    Files.writeString(dir.resolve("config.json"), m.config());
    SafetensorsWriter w = new SafetensorsWriter();
    Random rnd = new Random(name.hashCode());
    for (String t : m.tensors()) {
      String[] parts = t.split(":");
      String[] dims = parts[1].split(",");
      long[] shape = new long[dims.length];
      int n = 1;
      for (int i = 0; i < dims.length; i++) {
        shape[i] = Long.parseLong(dims[i]);
        n *= (int) shape[i];
      }
      float[] data = new float[n];
      for (int i = 0; i < n; i++) {
        data[i] = (float) rnd.nextGaussian();
      }
      w.add(parts[0], shape, data);
    }
    try (var os = Files.newOutputStream(dir.resolve("model.safetensors"))) {
      w.write(os);
    }
    return dir;
  }
}
