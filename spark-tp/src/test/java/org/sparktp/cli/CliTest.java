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
 * {@code tools/make_interop.py}) runs through {@code infer} at tp 1, 2 and 3 and
 * matches within 1e-5 (max |y - y_torch| / max |y_torch|).
 */
class CliTest {
  /** spark.tp.cpu.gemm=auto runs f32 linears on oneDNN where its ISA is AVX2 or better, else on OpenBLAS. */
  private static final String F32_KERNEL = org.sparktp.backend.cpu.CpuBackend.onednnIsa().startsWith("avx")
      ? "kernel onednn " : "kernel openblas";

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
    assertThat(cli("bench", "nope").err).contains("use gemm, comm, spark, peer, transformer, gpu, generate or large");
    r = cli("infer", "--model", gpt2, "--input", in, "--output", out, "--task", "generate", "--pooling", "mean");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: --pooling is a flag of --task embed; --task generate writes"
        + " generated text and ids, not an embedding: drop --pooling\n");
    r = cli("infer", "--model", gpt2, "--input", in, "--output", out, "--task", "generate", "--normalize");
    assertThat(r.err).startsWith("spark-tp: error: --normalize is a flag of --task embed;");
  }

  @Test
  void generateWithRowErrorsInAColumnCountsThemOnTheFinalLine() throws Exception {
    String gpt2 = org.sparktp.testing.HfFixtures.dir("gpt2").toString();
    Path in = tmp.resolve("prompts.json");
    String tooLong = String.join(" ", java.util.Collections.nCopies(20, "Spark runs transformers"));
    Files.writeString(in, "{\"id\": 0, \"text\": \"Hello world\"}\n{\"id\": 1, \"text\": null}\n"
        + "{\"id\": 2, \"text\": \"" + tooLong + "\"}\n{\"id\": 3, \"text\": \"It's 2026\"}\n");
    String out = tmp.resolve("prompts-out").toString();
    Run r = cli("infer", "--model", gpt2, "--input", in.toString(), "--output", out, "--features-col", "text",
        "--output-format", "json", "--task", "generate", "--max-new-tokens", "4", "--stop", "zz", "--stop", "\n\n", "--master", "local[2]",
        "--conf", "spark.tp.on-error=column");
    assertThat(r.code).as(r.err).isEqualTo(0);
    assertThat(r.out).startsWith("wrote 4 rows to " + out).contains("rows/s, tp=1; 2 row(s) could not run (their"
        + " cause is in the column 'error')");
    String written;
    try (Stream<Path> files = Files.list(Path.of(out))) {
      written = files.filter(f -> f.getFileName().toString().startsWith("part-")).map(f -> {
        try {
          return Files.readString(f);
        } catch (java.io.IOException e) {
          throw new java.io.UncheckedIOException(e);
        }
      }).collect(java.util.stream.Collectors.joining());
    }
    assertThat(written).contains("\"error\":\"column 'text' is null\"").contains("tokens, more than 28");

    // --max-new-tokens as long as the context: one line before the job, not the ranks' failure after retries
    r = cli("infer", "--model", gpt2, "--input", in.toString(), "--output", out + "2", "--features-col", "text",
        "--task", "generate", "--max-new-tokens", "40", "--master", "local[2]");
    assertThat(r.code).isEqualTo(1);
    assertThat(r.err).startsWith("spark-tp infer failed: maxNewTokens 40 leaves no room for a prompt: the model's"
        + " context (max_position_embeddings) is 32 tokens, prompt included; set maxNewTokens (--max-new-tokens,"
        + " max_new_tokens) to at most 31\n");
  }

  @Test
  void aStageCancelledOnADeterministicFailurePrintsSparkTpsMessage() {
    assertThat(SparkTpCli.message(new org.apache.spark.SparkException("Job 3 cancelled because spark-tp: a"
        + " deterministic failure (not retried): The KV cache budget spark.tp.kv-cache.max-bytes=1024 is too small")))
        .isEqualTo("The KV cache budget spark.tp.kv-cache.max-bytes=1024 is too small");
  }

  @Test
  void benchWithoutTheBenchJarSaysInOneLineWhatToAdd() {
    // the library's tests run without the spark-tp-bench module (bench/), as the library jar does
    Run r = cli("bench", "gemm");
    assertThat(r.code).isEqualTo(1);
    assertThat(r.err).startsWith("spark-tp bench failed: the benchmarks are not on the class path: add the"
        + " spark-tp-bench jar (bench/target/spark-tp-bench-*.jar, built by 'mvn -pl bench -am install'), or run"
        + " bin/spark-tp bench\n");
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
    r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", "in.json", "--output", "o",
        "--dtype", "int4");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: Unknown dtype 'int4' (--dtype): use auto, f32, bf16, f16, int8 (W8A8) or int8-wo")
        .contains("usage: spark-tp");
    r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", "in.json", "--output", "o",
        "--activation-dtype", "int8");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: Unknown activation dtype 'int8' (--activation-dtype): use auto, "
        + "f32, bf16 or f16").contains("usage: spark-tp");
    r = cli("explain", "--model", fixture.resolve("model").toString(), "--activation-dtype", "fp16x");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: Unknown activation dtype 'fp16x' (--activation-dtype)");
    r = cli("explain", "--model", fixture.resolve("model").toString(), "--dtype", "fp8");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: Unknown dtype 'fp8' (--dtype): use auto, f32, bf16, f16, int8 (W8A8) or int8-wo");
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
        .contains("weight bytes per rank: [")
        .contains("dtype f32 (linear weights;").contains(F32_KERNEL)
        .contains("auto -> f32: the weights are f32 and auto never narrows them");
    r = cli("explain", "--model", fixture.resolve("model").toString(), "--tp", "2", "--dtype", "bf16");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).as("an explicit dtype needs no reason").doesNotContain("auto ->");
    assertThat(r.out).contains("dtype bf16 (linear weights;").contains("kernel onednn")
        .contains("weight bytes per rank in bf16: [")
        .contains("activations bf16 between ops (rounded once at each op boundary;"); // auto: the weights' dtype
    r = cli("explain", "--model", fixture.resolve("model").toString(), "--tp", "2", "--activation-dtype", "f16");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("dtype f32 (linear weights").contains("activations f16 between ops");
    r = cli("explain", "--model", fixture.resolve("model").toString(), "--tp", "2", "--dtype", "int8");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("dtype int8 (linear weights;")
        .containsPattern("kernel onednn \\S+ int8 W8A8 \\(brg_matmul:").contains("weight bytes per rank in int8: [")
        .contains("int8 W8A8: weights symmetric with one f32 scale per output")
        .contains("activations bf16 between ops"); // auto for int8 weights
  }

  @Test
  void explainShowsAttentionHeadsAndKvReplicasOfAHuggingFaceModel() {
    Run r = cli("explain", "--model", org.sparktp.testing.HfFixtures.dir("llama").toString(), "--tp", "3",
        "--task", "score");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("Plan for tp=3: llama (causal), hidden 64, vocabulary 96, task score")
        .containsPattern("activations (f32|bf16) between ops") // auto: the dtype auto resolved to on this CPU
        .contains("r0: q 0-2 kv 0-0 (1 replica), r1: q 3-5 kv 0-1 (2 replicas), r2: q 6-7 kv 1-1 (1 replica)")
        .contains("score: lm_head lm_head.weight [64 -> 96] vocab-parallel [32, 32, 32]");
    r = cli("explain", "--model", org.sparktp.testing.HfFixtures.dir("llama").toString(), "--tp", "3", "--dtype",
        "bf16");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("dtype bf16 (linear weights and embedding tables;")
        .contains("activations bf16 between ops (rounded once at each op boundary;") // auto: the weights' dtype
        .contains("kernel " + Explain.kernel(org.sparktp.tensor.DType.BF16))
        .containsPattern("weight bytes per rank in bf16: \\[\\d+, \\d+, \\d+\\]");
    r = cli("explain", "--model", org.sparktp.testing.HfFixtures.dir("gpt2").toString(), "--dtype", "f32");
    assertThat(r.out).contains("dtype f32 (linear weights and embedding tables;").contains(F32_KERNEL);
    r = cli("infer", "--model", org.sparktp.testing.HfFixtures.dir("gpt2").toString(), "--input", "in.json",
        "--output", "o", "--dtype", "int4");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: Unknown dtype 'int4' (--dtype): use auto, f32, bf16, f16, int8 (W8A8) or int8-wo");
    assertThat(cli("explain", "--model", fixture.resolve("model").toString(), "--task", "embed").err)
        .startsWith("spark-tp: error: --task applies to Hugging Face transformers");
    assertThat(cli("explain", "--model", org.sparktp.testing.HfFixtures.dir("llama").toString(), "--task", "x").err)
        .startsWith("spark-tp: error: --task: Unknown task 'x': use embed, logits, score or generate");
  }

  /** f32 within 1e-4 of PyTorch; bf16 ({@code --dtype bf16}: linears and embedding tables) within 2e-2. */
  @ParameterizedTest(name = "dtype {0}")
  @org.junit.jupiter.params.provider.ValueSource(strings = {"f32", "bf16"})
  void inferScoresAHuggingFaceModelOnAnIdsColumn(String dtype) throws IOException {
    org.sparktp.testing.HfFixtures.Fixture f = org.sparktp.testing.HfFixtures.load("gpt2");
    Path in = tmp.resolve("ids.json");
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < f.rows().size(); i++) {
      sb.append("{\"id\": ").append(i).append(", \"ids\": ").append(java.util.Arrays.toString(f.rows().get(i).ids()))
          .append("}\n");
    }
    Files.writeString(in, sb.toString());
    Path out = tmp.resolve("scores-" + dtype);
    Run r = cli("infer", "--model", f.dir().toString(), "--input", in.toString(), "--output", out.toString(),
        "--output-format", "json", "--tp", "2", "--master", "local[2]", "--features-col", "ids", "--output-col",
        "score", "--task", "score", "--dtype", dtype);
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
    assertThat(maxErr / maxRef).as("relative error of the scores vs PyTorch, %s", dtype)
        .isLessThanOrEqualTo(dtype.equals("f32") ? 1e-4 : 2e-2);
  }

  @Test
  void explainWarnsWhenTpExceedsWhatTheModelCanSplit() {
    Run r = cli("explain", "--model", fixture.resolve("model").toString(), "--tp", "65");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out.lines().findFirst().orElse("")).startsWith("warning: --tp 65 exceeds what ")
        .contains("weight layer(s) can split (").contains("replicated on every rank");
    r = cli("explain", "--model", fixture.resolve("model").toString(), "--tp", "2");
    assertThat(r.out).doesNotContain("warning");
  }

  @Test
  void doctorShowsOneDnnItsKernelsAndTheBackendProviders() {
    Run r = cli("doctor", "--master", "local[1]");
    assertThat(r.code).as(r.err).isZero();
    assertThat(r.out).contains("backend cpu").containsPattern("onednn\\s+isa ")
        .contains("kernels: f32 " + F32_KERNEL.substring("kernel ".length())).containsPattern("int8 onednn \\S+ int8 W8A8 \\(brg_matmul:")
        .contains("OMP_NUM_THREADS").containsPattern("provider cpu\\s+available")
        .containsPattern("precision\\s+spark.tp.dtype auto -> (bf16|f32): bf16 checkpoint")
        .contains("f32 weights: f32");
  }

  @ParameterizedTest(name = "tp {0}, dtype {1}")
  @org.junit.jupiter.params.provider.CsvSource({"1, f32", "2, f32", "3, f32", "2, bf16", "3, int8"})
  void pytorchModelRunsThroughInferAndMatchesPyTorch(int tp, String dtype) throws IOException {
    Path out = tmp.resolve("out-tp" + tp + dtype);
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input",
        fixture.resolve("inputs.json").toString(), "--output", out.toString(), "--output-format", "json", "--tp",
        String.valueOf(tp), "--master", "local[4]", "--batch-size", "7", "--dtype", dtype);
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
    // f32 within 1e-5 of PyTorch's fp32 outputs; bf16 weights within the stated 2e-2; int8 weights within 3e-2
    assertThat(maxErr / maxRef).as("relative error vs PyTorch at tp=%d, %s", tp, dtype)
        .isLessThanOrEqualTo(dtype.equals("f32") ? 1e-5 : dtype.equals("int8") ? 3e-2 : 2e-2);
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

  /** Number of files under {@code dir} and a SHA-256 over their relative names and bytes. */
  static String fingerprint(Path dir) throws Exception {
    java.security.MessageDigest md = java.security.MessageDigest.getInstance("SHA-256");
    int n = 0;
    try (Stream<Path> files = Files.walk(dir)) {
      for (Path f : files.filter(Files::isRegularFile).sorted().toList()) {
        md.update(dir.relativize(f).toString().getBytes(StandardCharsets.UTF_8));
        md.update(Files.readAllBytes(f));
        n++;
      }
    }
    return n + " files " + java.util.HexFormat.of().formatHex(md.digest());
  }

  static Path jsonInput(Path dir, int rows, int badRow) throws IOException {
    Files.createDirectories(dir);
    java.util.Random rnd = new java.util.Random();
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < rows; i++) {
      sb.append("{\"id\": ").append(i).append(", \"features\": [");
      for (int j = 0; j < (i == badRow ? 49 : 50); j++) {
        sb.append(j == 0 ? "" : ", ").append(rnd.nextGaussian());
      }
      sb.append("]}\n");
    }
    Files.writeString(dir.resolve("part-00000.json"), sb.toString());
    return dir;
  }

  @Test
  void anOutputThatIsInsideOrHoldsTheInputIsRefusedAndTheInputIsIntact() throws Exception {
    Path data = tmp.resolve("same");
    Path in = jsonInput(data.resolve("in.json"), 6, -1);
    String before = fingerprint(data);
    String model = fixture.resolve("model").toString();
    // the same folder, spelled three ways
    for (String out : new String[] {in.toString(), "file://" + in + "/", in.getParent() + "/./in.json"}) {
      Run r = cli("infer", "--model", model, "--input", in.toString(), "--output", out, "--mode", "overwrite");
      assertThat(r.code).as(r.err).isEqualTo(2);
      assertThat(r.err).startsWith("spark-tp: error: output " + out + " is the input (" + in + "); choose another"
          + " output path\n");
    }
    Run r = cli("infer", "--model", model, "--input", in.toString(), "--output", in.resolve("sub").toString(),
        "--mode", "overwrite");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: output " + in.resolve("sub") + " is inside the input " + in
        + "; choose an output path outside it\n");
    r = cli("infer", "--model", model, "--input", in.toString(), "--output", data.toString(), "--mode", "overwrite");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: output " + data + " contains the input " + in
        + "; choose an output path that does not hold it\n");
    // through a symbolic link to the input's folder
    Path link = Files.createSymbolicLink(tmp.resolve("same-link"), data);
    r = cli("infer", "--model", model, "--input", in.toString(), "--output", link.resolve("in.json").toString(),
        "--mode", "overwrite", "--format", "json");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).contains("is the input");
    // the model directory is protected the same way
    Path modelCopy = tmp.resolve("model-copy");
    copyTree(fixture.resolve("model"), modelCopy);
    String modelBefore = fingerprint(modelCopy);
    r = cli("infer", "--model", modelCopy.toString(), "--input", in.toString(), "--output", modelCopy.toString(),
        "--mode", "overwrite");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: output " + modelCopy + " is the model directory");
    assertThat(fingerprint(modelCopy)).isEqualTo(modelBefore);
    assertThat(fingerprint(data)).isEqualTo(before);
  }

  static void copyTree(Path src, Path dst) throws IOException {
    try (Stream<Path> files = Files.walk(src)) {
      for (Path p : files.toList()) {
        Path d = dst.resolve(src.relativize(p).toString());
        if (Files.isDirectory(p)) {
          Files.createDirectories(d);
        } else {
          Files.copy(p, d);
        }
      }
    }
  }

  @Test
  void aFailedOverwriteKeepsTheOldOutputAndLeavesNoStagingFolder() throws Exception {
    Path parent = Files.createDirectories(tmp.resolve("ow"));
    Path out = Files.createDirectories(parent.resolve("scored"));
    Files.writeString(out.resolve("part-00000.json"), "{\"id\": 1, \"old\": " + new java.util.Random().nextLong()
        + "}\n");
    Files.writeString(out.resolve("_SUCCESS"), "");
    String before = fingerprint(out);
    Path bad = jsonInput(tmp.resolve("ow-bad.json"), 9, 4);
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", bad.toString(), "--output",
        out.toString(), "--output-format", "json", "--mode", "overwrite", "--master", "local[2]");
    assertThat(r.code).as(r.err).isEqualTo(1);
    assertThat(fingerprint(out)).as("the old output after a failed overwrite").isEqualTo(before);
    try (Stream<Path> l = Files.list(parent)) {
      assertThat(l.map(p -> p.getFileName().toString()).toList()).containsExactly("scored");
    }
    // a job that succeeds replaces it, and leaves nothing beside it
    Path good = jsonInput(tmp.resolve("ow-good.json"), 9, -1);
    r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", good.toString(), "--output",
        out.toString(), "--output-format", "json", "--mode", "overwrite", "--master", "local[2]");
    assertThat(r.code).as(r.err).isZero();
    assertThat(out.resolve("part-00000.json")).doesNotExist();
    long rows = 0;
    try (Stream<Path> parts = Files.list(out)) {
      for (Path part : parts.filter(p -> p.getFileName().toString().startsWith("part-")).toList()) {
        rows += Files.readAllLines(part).size();
      }
    }
    assertThat(rows).isEqualTo(9);
    try (Stream<Path> l = Files.list(parent)) {
      assertThat(l.map(p -> p.getFileName().toString()).toList()).containsExactly("scored");
    }
  }

  @Test
  void badSettingsAreUsageErrorsThatNameTheKey() {
    String model = fixture.resolve("model").toString();
    String in = fixture.resolve("inputs.json").toString();
    Run r = cli("infer", "--model", model, "--input", in, "--output", tmp.resolve("o1").toString(), "--conf",
        "spark.tp.comm.timeout=abc");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: --conf Invalid duration for spark.tp.comm.timeout: 'abc' (use a"
        + " positive number with a unit: 500ms, 30s, 5m, 1h)\n");
    r = cli("demo", "--conf", "spark.tp.comm.chunkbytes=1m");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: --conf Unknown setting spark.tp.comm.chunkbytes; did you mean"
        + " spark.tp.comm.chunk-bytes? (the spark.tp.* keys are listed in docs/configuration.md)\n");
    r = cli("infer", "--model", model, "--input", in, "--output", tmp.resolve("o2").toString(), "--backend", "tpu");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: --backend tpu is not a backend; use auto, cpu or cuda\n");
    org.junit.jupiter.api.Assumptions.assumeFalse(org.sparktp.backend.cuda.CudaProbe.status().available(),
        "this machine has a GPU: --backend cuda is valid here");
    r = cli("infer", "--model", model, "--input", in, "--output", tmp.resolve("o3").toString(), "--backend", "cuda");
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: --backend cuda is not available on this machine (");
    assertThat(r.err).contains("); use auto or cpu\n");
  }

  @Test
  void aBadModelFileOrAnEmptyInputIsOneLineThatNamesIt() throws Exception {
    Path broken = tmp.resolve("model-broken");
    copyTree(fixture.resolve("model"), broken);
    Files.writeString(broken.resolve("config.json"), "{\"spark_tp\": 1, \"input_dim\": 50,, }");
    Run r = cli("infer", "--model", broken.toString(), "--input", fixture.resolve("inputs.json").toString(),
        "--output", tmp.resolve("o3").toString());
    assertThat(r.code).isEqualTo(1);
    String first = r.err.lines().findFirst().orElse("");
    assertThat(first).startsWith("spark-tp infer failed: Cannot open the model directory " + broken + ": ")
        .contains(broken.resolve("config.json").toString()).contains("not valid JSON");
    assertThat(r.err.lines().count()).as(r.err).isEqualTo(2); // the line and the SPARK_TP_DEBUG hint
    // a safetensors header that is not JSON
    Path badWeights = tmp.resolve("model-bad-weights");
    copyTree(fixture.resolve("model"), badWeights);
    byte[] header = "{\"fc1.weight\": [".getBytes(StandardCharsets.UTF_8);
    java.nio.ByteBuffer buf = java.nio.ByteBuffer.allocate(8 + header.length).order(java.nio.ByteOrder.LITTLE_ENDIAN);
    buf.putLong(header.length).put(header);
    Files.write(badWeights.resolve("model.safetensors"), buf.array());
    r = cli("infer", "--model", badWeights.toString(), "--input", fixture.resolve("inputs.json").toString(),
        "--output", tmp.resolve("o3b").toString());
    assertThat(r.code).isEqualTo(1);
    assertThat(r.err.lines().findFirst().orElse("")).startsWith("spark-tp infer failed: Cannot open the model"
        + " directory " + badWeights + ": ").contains(badWeights.resolve("model.safetensors").toString());
    Path empty = Files.createDirectories(tmp.resolve("empty-in"));
    Files.writeString(empty.resolve("_SUCCESS"), "");
    r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", empty.toString(), "--output",
        tmp.resolve("o4").toString());
    assertThat(r.code).isEqualTo(2);
    assertThat(r.err).startsWith("spark-tp: error: input " + empty + " is empty: it holds no data files (or only"
        + " empty ones)\n");
  }

  @Test
  void anUnreachableFileSystemNamesThePathAndTheHost() {
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", "hdfs://127.0.0.1:1/data/x.parquet",
        "--output", tmp.resolve("o5").toString(), "--conf", "spark.hadoop.ipc.client.connect.max.retries=0");
    assertThat(r.code).isEqualTo(1);
    assertThat(r.err.lines().findFirst().orElse("")).startsWith("spark-tp infer failed: Cannot reach the input"
        + " hdfs://127.0.0.1:1/data/x.parquet: Call From ").contains(":1 failed on connection exception")
        .contains("Connection refused");
  }

  @Test
  void theMessageIsTheOutermostOneSparkTpWrote() {
    Exception nfe;
    try {
      Integer.parseInt("abc");
      throw new AssertionError();
    } catch (NumberFormatException e) {
      nfe = e;
    }
    Exception ours;
    try {
      org.sparktp.TpConf.parseInt("spark.tp.batch-size", "abc", 1);
      throw new AssertionError();
    } catch (IllegalArgumentException e) {
      ours = e;
    }
    assertThat(ours.getCause()).isInstanceOf(NumberFormatException.class);
    Exception inner = new org.apache.spark.SparkException("[TASK_WRITE_FAILED] Task failed", ours);
    Exception wrapped = new org.apache.spark.SparkException("Job aborted due to stage failure: Task 0 in stage 3.0"
        + " failed\n\tat somewhere", inner);
    StackTraceElement[] sparkFrame = {new StackTraceElement("org.apache.spark.scheduler.DAGScheduler", "abort", null,
        1)};
    inner.setStackTrace(sparkFrame);
    wrapped.setStackTrace(sparkFrame);
    assertThat(SparkTpCli.message(wrapped)).isEqualTo("Invalid value for spark.tp.batch-size: 'abc' (use an"
        + " integer >= 1)");
    // nothing of spark-tp's: the outermost that is not a Spark wrapper, with its type
    Exception io = new java.io.IOException("Call From h/127.0.0.1 to localhost:9000 failed on connection exception:"
        + " java.net.ConnectException: Connection refused", new java.net.ConnectException("Connection refused"));
    StackTraceElement[] hadoopFrame = {new StackTraceElement("org.apache.hadoop.ipc.Client", "call", null, 1)};
    io.setStackTrace(hadoopFrame);
    io.getCause().setStackTrace(hadoopFrame);
    Exception w = new org.apache.spark.SparkException("wrapper", io);
    w.setStackTrace(sparkFrame);
    assertThat(SparkTpCli.message(w)).isEqualTo("IOException: Call"
        + " From h/127.0.0.1 to localhost:9000 failed on connection exception: java.net.ConnectException: Connection"
        + " refused");
    assertThat(SparkTpCli.message(nfe)).isEqualTo("NumberFormatException: For input string: \"abc\"");
  }

  @Test
  void theLauncherBuildsTheRuntimeClassPathWithoutTestJars() throws IOException {
    String launcher = Files.readString(Path.of(System.getProperty("user.dir")).getParent().resolve("bin/spark-tp"));
    assertThat(launcher).contains("dependency:build-classpath -DincludeScope=compile")
        .doesNotContain("mdep.includeScope");
  }

  @Test
  void theRowCountComesFromTheCommittedOutputAlsoAfterARetriedStage() throws Exception {
    Path in = jsonInput(tmp.resolve("count.json"), 60, -1);
    // 7 of the 67 rows have a null feature: with null-policy=null they are written with a null output
    StringBuilder nulls = new StringBuilder();
    for (int i = 0; i < 7; i++) {
      nulls.append("{\"id\": ").append(1000 + i).append(", \"features\": null}\n");
    }
    Files.writeString(in.resolve("part-00001.json"), nulls.toString());
    Path out = tmp.resolve("count-out");
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", in.toString(), "--output",
        out.toString(), "--output-format", "json", "--tp", "2", "--batch-size", "4", "--master", "local[2,3]",
        "--conf", "spark.tp.null-policy=null", "--conf", "spark.tp.test.fail-rank=1");
    assertThat(r.code).as(r.err).isZero();
    long written = 0;
    try (Stream<Path> parts = Files.list(out)) {
      for (Path part : parts.filter(p -> p.getFileName().toString().startsWith("part-")).toList()) {
        written += Files.readAllLines(part).size();
      }
    }
    assertThat(written).isEqualTo(67);
    assertThat(r.out).startsWith("wrote 67 rows to " + out + " (json)");
  }

  @Test
  void aCsvFeatureThatDoesNotParseNamesTheRowAndPartition() throws Exception {
    Path in = Files.createDirectories(tmp.resolve("bad-csv"));
    java.util.Random rnd = new java.util.Random();
    StringBuilder sb = new StringBuilder("id,features\n");
    for (int i = 0; i < 4; i++) {
      sb.append(i).append(",\"");
      for (int j = 0; j < 50; j++) {
        sb.append(j == 0 ? "" : " ").append(i == 2 && j == 5 ? "1.0x" : String.valueOf(rnd.nextGaussian()));
      }
      sb.append("\"\n");
    }
    Files.writeString(in.resolve("part-00000.csv"), sb.toString());
    Run r = cli("infer", "--model", fixture.resolve("model").toString(), "--input", in.toString(), "--format", "csv",
        "--output", tmp.resolve("bad-csv-out").toString(), "--master", "local[2]");
    assertThat(r.code).as(r.err).isEqualTo(1);
    assertThat(r.err.lines().findFirst().orElse("")).isEqualTo("spark-tp infer failed: Column 'features': row 2 of"
        + " input partition 0 has a null element at position 5 (a missing value, or in CSV text one that is not a"
        + " number)");
  }

  static double[] doubles(JsonNode arr) {
    double[] a = new double[arr.size()];
    for (int i = 0; i < a.length; i++) {
      a[i] = arr.get(i).asDouble();
    }
    return a;
  }
}
