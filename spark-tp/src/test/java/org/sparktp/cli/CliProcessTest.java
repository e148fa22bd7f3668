package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The CLI as its own process, as {@code bin/spark-tp} runs it (with {@code conf/log4j2.properties}):
 * what a user sees on the console for a bad row, and for a job stopped by SIGTERM.
 */
class CliProcessTest {
  @TempDir
  static Path tmp;
  static Path model;

  @BeforeAll
  static void copyModel() throws Exception {
    Path src = Path.of(CliProcessTest.class.getResource("/interop/inputs.json").toURI()).getParent().resolve("model");
    model = tmp.resolve("model");
    CliTest.copyTree(src, model);
  }

  static Process start(Path errFile, String... args) throws IOException {
    return start(errFile, null, args);
  }

  /** As {@link #start(Path, String...)}, with stdout to {@code outFile} (null: discarded). */
  static Process start(Path errFile, Path outFile, String... args) throws IOException {
    List<String> cmd = new ArrayList<>();
    cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
    cmd.add("-Xmx1g");
    cmd.add("-XX:TieredStopAtLevel=1"); // starts faster; these runs are short
    cmd.add("-XX:+UseSerialGC");
    cmd.add("-Dlog4j2.configurationFile=" + Path.of(System.getProperty("user.dir")).getParent()
        .resolve("conf/log4j2.properties"));
    cmd.add("-cp");
    cmd.add(System.getProperty("java.class.path"));
    cmd.add(SparkTpCli.class.getName());
    cmd.addAll(List.of(args));
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectError(errFile.toFile())
        .redirectOutput(outFile == null ? ProcessBuilder.Redirect.DISCARD : ProcessBuilder.Redirect.to(outFile.toFile()));
    pb.environment().remove("SPARK_TP_DEBUG");
    return pb.start();
  }

  @Test
  void aBadRowPrintsOneLineNotSparksStackTraces() throws Exception {
    Path in = CliTest.jsonInput(tmp.resolve("bad.json"), 20, 13);
    Path errFile = tmp.resolve("bad.err");
    Process p = start(errFile, "infer", "--model", model.toString(), "--input", in.toString(), "--output",
        tmp.resolve("bad-out").toString(), "--master", "local[1]");
    assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
    List<String> lines = Files.readAllLines(errFile, StandardCharsets.UTF_8);
    assertThat(p.exitValue()).as(String.join("\n", lines)).isEqualTo(1);
    assertThat(lines).as(String.join("\n", lines)).containsExactly(
        "spark-tp infer failed: Column 'features': row 13 of input partition 0 has width 49, the model expects width 50",
        "(set SPARK_TP_DEBUG=1 for the stack trace)");
    assertThat(tmp.resolve("bad-out")).doesNotExist();
  }

  @Test
  void aJobStoppedBySigtermSaysInterruptedAndKeepsTheOldOutput() throws Exception {
    Path in = Files.createDirectories(tmp.resolve("long.json"));
    Random rnd = new Random();
    StringBuilder sb = new StringBuilder();
    for (int i = 0; i < 20000; i++) {
      sb.append("{\"id\":").append(i).append(",\"features\":[");
      for (int j = 0; j < 50; j++) {
        sb.append(j == 0 ? "" : ",").append(String.format(Locale.ROOT, "%.3f", rnd.nextGaussian()));
      }
      sb.append("]}\n");
    }
    Files.writeString(in.resolve("part-00000.json"), sb);
    Path parent = Files.createDirectories(tmp.resolve("sig"));
    Path out = Files.createDirectories(parent.resolve("scored"));
    Files.writeString(out.resolve("part-00000.json"), "{\"id\": 1, \"old\": " + rnd.nextLong() + "}\n");
    String before = CliTest.fingerprint(out);
    Path errFile = tmp.resolve("sig.err");
    Process p = start(errFile, "infer", "--model", model.toString(), "--input", in.toString(), "--output",
        out.toString(), "--output-format", "json", "--mode", "overwrite", "--tp", "2", "--batch-size", "1",
        "--master", "local[2]");
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(90);
    while (!hasStaging(parent) && p.isAlive() && System.nanoTime() < deadline) {
      Thread.sleep(100);
    }
    assertThat(p.isAlive()).as("the job is still running when it is signalled").isTrue();
    Thread.sleep(1000);
    p.destroy(); // SIGTERM
    assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
    List<String> lines = Files.readAllLines(errFile, StandardCharsets.UTF_8);
    assertThat(lines).as(String.join("\n", lines)).contains("spark-tp infer interrupted (SIGINT or SIGTERM): the job"
        + " was stopped; nothing was written and an existing output is unchanged");
    assertThat(String.join("\n", lines)).doesNotContain("stopped SparkContext");
    assertThat(CliTest.fingerprint(out)).isEqualTo(before);
    try (Stream<Path> l = Files.list(parent)) {
      assertThat(l.map(x -> x.getFileName().toString()).toList()).containsExactly("scored");
    }
  }

  private static boolean hasStaging(Path parent) throws IOException {
    try (Stream<Path> l = Files.list(parent)) {
      return l.anyMatch(x -> x.getFileName().toString().contains("spark-tp-staging"));
    }
  }

}
