package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The command line, run in-process: usage errors exit 2 with a one-line message and the usage; the
 * PyTorch interop fixture (a module saved by PyTorch, its inputs and PyTorch's float64 outputs, made by
 * {@code src/test/resources/interop/make_interop.py}) runs through {@code infer} at tp 1, 2 and 3 and
 * matches within 1e-5 (max |y - y_torch| / max |y_torch|).
 */
class CliTest {
  static final ObjectMapper JSON = new ObjectMapper();
  @TempDir
  static Path tmp;
  static Path fixture;

  record Run(int code, String out, String err) {}

  static Run cli(String... args) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    int code = SparkTpCli.run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
        new PrintStream(err, true, StandardCharsets.UTF_8));
    return new Run(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
  }

  @BeforeAll
  static void copyFixture() throws Exception {
    Path src = Path.of(CliTest.class.getResource("/interop/inputs.json").toURI()).getParent();
    fixture = tmp.resolve("interop");
    try (Stream<Path> files = Files.walk(src)) {
      for (Path p : files.toList()) {
        Path dst = fixture.resolve(src.relativize(p).toString());
        if (Files.isDirectory(p)) {
          Files.createDirectories(dst);
        } else {
          Files.copy(p, dst);
        }
      }
    }
  }

  @Test
  void generateFlagsAreCheckedBeforeSparkStarts() {
    String gpt2 = org.sparktp.testing.HfFixtures.dir("gpt2").toString();
    String in = org.sparktp.testing.HfFixtures.dir("gpt2").resolve("reference.json").toString();
    String out = tmp.resolve("gen-out").toString();
    Run r = cli("infer", "--model", gpt2, "--input", in, "--output", out, "--max-new-tokens", "5");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: --max-new-tokens is a flag of --task generate");
    r = cli("infer", "--model", gpt2, "--input", in, "--output", out, "--task", "generate", "--top-p", "1.5");
    assertThat(r.err).startsWith("spark-tp: error: --top-p takes a number in (0, 1], got 1.5");
    r = cli("infer", "--model", gpt2, "--input", in, "--output", out, "--task", "generate", "--temperature", "hot");
    assertThat(r.err).startsWith("spark-tp: error: --temperature takes a number, got 'hot'");
    assertThat(cli("bench", "nope").err).contains("use gemm, comm, spark, transformer or generate");
  }

  @Test
  void unknownCommandExitsWithCodeTwoAndTheUsage() {
    Run r = cli("frobnicate");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: unknown command 'frobnicate'\n").contains("usage: spark-tp");
  }

  @Test
  void wrongFlagsExitWithCodeTwoAndSayWhatIsWrong() {
    assertThat(cli("infer", "--modle", "x").err).startsWith("spark-tp: error: unknown flag '--modle' for 'infer'");
    assertThat(cli("demo", "--tp", "zero").err).startsWith("spark-tp: error: --tp takes an integer, got 'zero'");
    assertThat(cli("demo", "--tp", "0").err).startsWith("spark-tp: error: --tp must be at least 1, got 0");
    assertThat(cli("explain", "--tp", "2").err).startsWith("spark-tp: error: 'explain' needs --model");
    assertThat(cli("infer", "--model").err).startsWith("spark-tp: error: flag --model needs a value");
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", "in.json", "--output", "o",
        "--format", "xml");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: unknown format 'xml'; use parquet, json or csv");
  }

  @Test
  void missingPathsExitWithCodeTwo() {
    Run r = cli("infer", "--model", tmp.resolve("nope").toString(), "--input", "x", "--output", "y");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: model directory " + tmp.resolve("nope") + " does not exist");
    r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", tmp.resolve("none.json").toString(),
        "--output", tmp.resolve("o").toString());
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).contains("input " + tmp.resolve("none.json") + " does not exist");
  }

  @Test
  void explainPrintsThePlanOfAModelDirectory() {
    Run r = cli("explain", "--model", fixture.resolve("model").toString(), "--tp", "2");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("Plan for tp=2: input width 50, output 37")
        .containsPattern("column linear fc1 \\[50->203\\] \\+gelu\\s+REPLICATED\\s+SHARDED")
        .containsPattern("row linear fc2 \\[203->64\\]\\s+SHARDED\\s+PARTIAL")
        .contains("weight bytes per rank: [");
  }

  @Test
  void explainShowsAttentionHeadsAndKvReplicasOfAHuggingFaceModel() {
    Run r = cli("explain", "--model", org.sparktp.testing.HfFixtures.dir("llama").toString(), "--tp", "3",
        "--task", "score");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("Plan for tp=3: llama (causal), hidden 64, vocabulary 96, task score")
        .contains("r0: q 0-2 kv 0-0 (1 replica), r1: q 3-5 kv 0-1 (2 replicas), r2: q 6-7 kv 1-1 (1 replica)")
        .contains("score: lm_head lm_head.weight [64 -> 96] vocab-parallel [32, 32, 32]");
    assertThat(cli("explain", "--model", fixture.resolve("model").toString(), "--task", "embed").err)
        .startsWith("spark-tp: error: --task applies to Hugging Face transformers");
    assertThat(cli("explain", "--model", org.sparktp.testing.HfFixtures.dir("llama").toString(), "--task", "x").err)
        .startsWith("spark-tp: error: --task: Unknown task 'x': use embed, logits, score or generate");
  }

  @Test
  void inferScoresAHuggingFaceModelOnAnIdsColumn() throws IOException {
    org.sparktp.testing.HfFixtures.Fixture f = org.sparktp.testing.HfFixtures.load("gpt2");
    Path in = tmp.resolve("ids.json");
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < f.rows().size(); i++) {
      sb.append("{\"id\": ").append(i).append(", \"ids\": ").append(java.util.Arrays.toString(f.rows().get(i).ids()))
          .append("}\n");
    }
    Files.writeString(in, sb.toString());
    Path out = tmp.resolve("scores");
    Run r = cli("infer", "--model", f.dir().toString(), "--input", in.toString(), "--output", out.toString(),
        "--output-format", "json", "--tp", "2", "--master", "local[2]", "--features-col", "ids", "--output-col",
        "score", "--task", "score");
    assertThat(r.code).as(r.err).isZero();
    double maxErr = 0;
    double maxRef = 0;
    int n = 0;
    try (Stream<Path> parts = Files.list(out)) {
      for (Path part : parts.filter(p -> p.getFileName().toString().startsWith("part-")).toList()) {
        for (String line : Files.readAllLines(part)) {
          JsonNode row = JSON.readTree(line);
          double want = f.rows().get(row.get("id").asInt()).score();
          maxErr = Math.max(maxErr, Math.abs(row.get("score").asDouble() - want));
          maxRef = Math.max(maxRef, Math.abs(want));
          n++;
        }
      }
    }
    assertThat(n).isEqualTo(f.rows().size());
    assertThat(maxErr / maxRef).as("relative error of the scores vs PyTorch").isLessThanOrEqualTo(1e-4);
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3})
  void pytorchModelRunsThroughInferAndMatchesPyTorch(int tp) throws IOException {
    Path out = tmp.resolve("out-tp" + tp);
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input",
        fixture.resolve("inputs.json").toString(), "--output", out.toString(), "--output-format", "json", "--tp",
        String.valueOf(tp), "--master", "local[4]", "--batch-size", "7");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("wrote 41 rows");
    Map<Long, double[]> expected = new HashMap<>();
    for (String line : Files.readAllLines(fixture.resolve("expected.json"))) {
      JsonNode n = JSON.readTree(line);
      expected.put(n.get("id").asLong(), doubles(n.get("prediction")));
    }
    Map<Long, JsonNode> got = new HashMap<>();
    try (Stream<Path> parts = Files.list(out)) {
      for (Path part : parts.filter(p -> p.getFileName().toString().startsWith("part-")).toList()) {
        for (String line : Files.readAllLines(part)) {
          JsonNode n = JSON.readTree(line);
          assertThat(got.put(n.get("id").asLong(), n)).as("row %s written once", n.get("id")).isNull();
        }
      }
    }
    assertThat(got.keySet()).isEqualTo(expected.keySet());
    double maxErr = 0;
    double maxRef = 0;
    for (Map.Entry<Long, double[]> e : expected.entrySet()) {
      JsonNode row = got.get(e.getKey());
      assertThat(row.has("features")).as("input columns pass through").isTrue();
      double[] y = doubles(row.get("prediction"));
      assertThat(y).hasSize(37);
      for (int i = 0; i < y.length; i++) {
        maxErr = Math.max(maxErr, Math.abs(y[i] - e.getValue()[i]));
        maxRef = Math.max(maxRef, Math.abs(e.getValue()[i]));
      }
    }
    assertThat(maxErr / maxRef).as("relative error vs PyTorch at tp=%d", tp).isLessThanOrEqualTo(1e-5);
  }

  @Test
  void aFailedJobLeavesNoOutputAndAnExistingOutputIsRefused() throws IOException {
    Path bad = tmp.resolve("bad.json");
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < 5; i++) {
      sb.append("{\"id\": ").append(i).append(", \"features\": [");
      for (int j = 0; j < (i == 3 ? 49 : 50); j++) {
        sb.append(j == 0 ? "" : ", ").append(0.01 * (j + 1) * (i + 1));
      }
      sb.append("]}\n");
    }
    Files.writeString(bad, sb.toString());
    Path out = tmp.resolve("out-bad");
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", bad.toString(), "--output",
        out.toString(), "--master", "local[2]");
    assertThat(r.code).isEqualTo(1);
    // a progress line may come first when the job takes over 10 s (a loaded machine)
    assertThat(r.err).containsPattern("(?m)^spark-tp infer failed: ").contains("49").contains("50");
    assertThat(out).doesNotExist();

    Path exists = Files.createDirectories(tmp.resolve("exists"));
    r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", fixture.resolve("inputs.json").toString(),
        "--output", exists.toString());
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: output " + exists + " already exists; choose another path or "
        + "pass --mode overwrite");
  }

  static double[] doubles(JsonNode arr) {
    double[] a = new double[arr.size()];
    for (int i = 0; i < a.length; i++) {
      a[i] = arr.get(i).asDouble();
    }
    return a;
  }
}
