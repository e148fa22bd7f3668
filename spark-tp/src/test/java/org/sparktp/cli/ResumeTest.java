package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.backend.Activation;
import org.sparktp.model.ModelWriter;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.spark.ResumableWrite;
import org.sparktp.testing.Compare;
import org.sparktp.testing.Reference;

/**
 * {@code infer --resume} (issue 20): a driver killed with {@code kill -9} after some ranges were committed, started
 * again with {@code --resume}, computes only the missing ranges, removes the staging folder the killed run left
 * (and says so), and its output holds every input row exactly once, equal to a float64 reference; a target made
 * by a different job is refused in one line.
 */
class ResumeTest {
  private static final int FILES = 8;
  private static final int ROWS_PER_FILE = 300;
  private static final int IN = 24;
  private static final int HIDDEN = 64;
  private static final int OUT = 8;

  @TempDir
  Path tmp;

  /** A random MLP in -> hidden (gelu) -> out, written as a model directory. */
  private static ModelSpec mlp(Random rnd, Path dir) throws IOException {
    ModelSpec spec = new ModelSpec(IN, List.of(linear(rnd, "fc1", IN, HIDDEN), new LayerSpec.Act(Activation.GELU,
        HIDDEN), linear(rnd, "fc2", HIDDEN, OUT)));
    ModelWriter.write(spec.model(), dir.toString());
    return spec;
  }

  private static LayerSpec.Linear linear(Random rnd, String name, int in, int out) {
    float[] w = new float[out * in];
    float[] b = new float[out];
    for (int i = 0; i < w.length; i++) {
      w[i] = (float) (rnd.nextGaussian() / Math.sqrt(in));
    }
    for (int i = 0; i < b.length; i++) {
      b[i] = (float) (rnd.nextGaussian() * 0.1);
    }
    return new LayerSpec.Linear(name, in, out, w, b, null);
  }

  /** {@code files} JSON files of {@code rows} rows each ({@code id}, {@code features}); returns features by id. */
  private static Map<Long, float[]> input(Random rnd, Path dir, int files, int rows) throws IOException {
    Files.createDirectories(dir);
    Map<Long, float[]> byId = new HashMap<>();
    long id = 0;
    for (int f = 0; f < files; f++) {
      StringBuilder sb = new StringBuilder();
      for (int r = 0; r < rows; r++, id++) {
        float[] x = new float[IN];
        sb.append("{\"id\":").append(id).append(",\"features\":[");
        for (int j = 0; j < IN; j++) {
          x[j] = (float) rnd.nextGaussian();
          sb.append(j == 0 ? "" : ",").append(x[j]);
        }
        sb.append("]}\n");
        byId.put(id, x);
      }
      Files.writeString(dir.resolve(String.format("part-%05d.json", f)), sb);
    }
    return byId;
  }

  private static JsonNode manifest(Path target) {
    try {
      return CliTest.JSON.readTree(target.resolve(ResumableWrite.MANIFEST).toFile());
    } catch (IOException e) {
      return null; // not written yet, or being replaced
    }
  }

  private static List<Path> stagingFolders(Path target) throws IOException {
    try (Stream<Path> l = Files.list(target)) {
      return l.filter(p -> p.getFileName().toString().startsWith(".spark-tp-staging-")).toList();
    }
  }

  @Test
  void aKilledDriverResumedComputesOnlyTheMissingRangesAndEveryRowIsWrittenOnce() throws Exception {
    Random rnd = new Random();
    ModelSpec spec = mlp(rnd, Files.createDirectories(tmp.resolve("model")));
    Map<Long, float[]> rows = input(rnd, tmp.resolve("in.json"), FILES, ROWS_PER_FILE);
    Path target = tmp.resolve("scored");
    String[] args = {"infer", "--model", tmp.resolve("model").toString(), "--input", tmp.resolve("in.json").toString(),
        "--output", target.toString(), "--output-format", "json", "--tp", "2", "--batch-size", "2", "--master",
        "local[2]", "--resume", "--ranges", String.valueOf(FILES)};

    // the first run: killed with SIGKILL once two ranges are committed
    Path err1 = tmp.resolve("run1.err");
    Process p = CliProcessTest.start(err1, tmp.resolve("run1.out"), args);
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(240);
    JsonNode m = null;
    while (p.isAlive() && System.nanoTime() < deadline) {
      m = manifest(target);
      if (m != null && m.path("committed").size() >= 2) {
        break;
      }
      Thread.sleep(20);
    }
    assertThat(p.isAlive()).as("the first run is still running after 2 ranges: %s", Files.readString(err1)).isTrue();
    p.destroyForcibly(); // SIGKILL: no shutdown hook runs, the staging folder stays
    assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
    m = manifest(target);
    int committed = m.path("committed").size();
    assertThat(m.path("input_partitions").asInt()).as("the input splits into one partition per file: %s", m)
        .isEqualTo(FILES);
    assertThat(m.path("ranges").asInt()).isEqualTo(FILES);
    assertThat(committed).as("ranges committed when the driver was killed").isBetween(2, FILES - 1);
    assertThat(m.path("complete").asBoolean()).isFalse();
    List<Path> left = stagingFolders(target);
    assertThat(left).as("the killed run's staging folder").hasSize(1);

    // the same command again: only the missing ranges run, the left staging folder is reported and removed
    Path err2 = tmp.resolve("run2.err");
    Path out2 = tmp.resolve("run2.out");
    Process q = CliProcessTest.start(err2, out2, args);
    assertThat(q.waitFor(300, TimeUnit.SECONDS)).as("the resumed run finishes").isTrue();
    String err = Files.readString(err2);
    assertThat(q.exitValue()).as(err).isZero();
    assertThat(err).as(err).containsOnlyOnce("spark-tp infer: WARN removing the staging folder ")
        .contains(left.get(0).getFileName() + " that an earlier run into " + target + " left (it was killed before it"
            + " could clean up)");
    assertThat(stagingFolders(target)).isEmpty();
    String out = Files.readString(out2);
    Matcher line = Pattern.compile("(\\d+) of (\\d+) ranges were committed before, (\\d+) computed now").matcher(out);
    assertThat(line.find()).as(out).isTrue();
    assertThat(Integer.parseInt(line.group(1))).as(out).isEqualTo(committed);
    assertThat(Integer.parseInt(line.group(2))).as(out).isEqualTo(FILES);
    assertThat(Integer.parseInt(line.group(3))).as("ranges computed by the resumed run == ranges missing at the kill: "
        + out).isEqualTo(FILES - committed);
    assertThat(out).startsWith(String.format("wrote %,d rows to %s", FILES * ROWS_PER_FILE, target));
    m = manifest(target);
    assertThat(m.path("complete").asBoolean()).as("%s", m).isTrue();
    assertThat(m.path("rows").asLong()).isEqualTo((long) FILES * ROWS_PER_FILE);
    assertThat(target.resolve("_SUCCESS")).exists();

    // every input row exactly once, its prediction the float64 reference's
    Map<Long, Integer> seen = new HashMap<>();
    List<Long> ids = new ArrayList<>();
    List<float[]> got = new ArrayList<>();
    try (Stream<Path> files = Files.list(target)) {
      for (Path f : files.filter(x -> !x.getFileName().toString().startsWith(".")
          && !x.getFileName().toString().startsWith("_")).sorted().toList()) {
        for (String l : Files.readAllLines(f, StandardCharsets.UTF_8)) {
          JsonNode r = CliTest.JSON.readTree(l);
          long id = r.path("id").asLong();
          seen.merge(id, 1, Integer::sum);
          ids.add(id);
          got.add(floats(r.path("prediction")));
        }
      }
    }
    assertThat(ids).as("rows in the output").hasSize(FILES * ROWS_PER_FILE);
    assertThat(seen.keySet()).as("every input row id").isEqualTo(rows.keySet());
    assertThat(seen.values()).as("each row once").allMatch(c -> c == 1);
    double[][] x = new double[ids.size()][IN];
    float[] y = new float[ids.size() * OUT];
    for (int i = 0; i < ids.size(); i++) {
      float[] in = rows.get(ids.get(i));
      for (int j = 0; j < IN; j++) {
        x[i][j] = in[j];
      }
      assertThat(got.get(i)).as("prediction width of row %d", ids.get(i)).hasSize(OUT);
      System.arraycopy(got.get(i), 0, y, i * OUT, OUT);
    }
    Compare.assertClose(y, Reference.forward(spec, x), "resumed tp=2 output");
  }

  private static float[] floats(JsonNode arr) {
    float[] f = new float[arr.size()];
    for (int i = 0; i < f.length; i++) {
      f[i] = (float) arr.get(i).asDouble();
    }
    return f;
  }

  @Test
  void aResumeIntoAnotherJobsOutputIsRefusedInOneLine() throws Exception {
    Random rnd = new Random();
    mlp(rnd, Files.createDirectories(tmp.resolve("model")));
    mlp(rnd, Files.createDirectories(tmp.resolve("model2")));
    Path in = tmp.resolve("in.json");
    input(rnd, in, 2, 20);
    Path target = tmp.resolve("out");
    CliTest.Run r = CliTest.cli("infer", "--model", tmp.resolve("model").toString(), "--input", in.toString(),
        "--output", target.toString(), "--output-format", "json", "--master", "local[1]", "--resume", "--ranges", "2");
    assertThat(r.code()).as(r.err()).isZero();
    assertThat(r.out()).contains("0 of 2 ranges were committed before, 2 computed now");
    // a file moved in by a run killed before its manifest update: removed by the next run, which says so; a complete
    // output computes nothing
    Path orphan = target.resolve("r00001-part-00000-0badf00d-c000.json");
    Files.writeString(orphan, "{\"id\": 0}\n");
    r = CliTest.cli("infer", "--model", tmp.resolve("model").toString(), "--input", in.toString(), "--output",
        target.toString(), "--output-format", "json", "--master", "local[1]", "--resume", "--ranges", "2");
    assertThat(r.code()).as(r.err()).isZero();
    assertThat(r.err()).contains("spark-tp infer: WARN removed 1 file(s) of a range whose commit an earlier run did not"
        + " finish from " + target + " (" + orphan.getFileName() + ")\n");
    assertThat(orphan).doesNotExist();
    assertThat(r.out()).startsWith("wrote 40 rows to " + target).contains("2 of 2 ranges were committed before, 0"
        + " computed now (0 rows)");
    String before = CliTest.fingerprint(target);

    // without --resume: today's refusal
    r = CliTest.cli("infer", "--model", tmp.resolve("model").toString(), "--input", in.toString(), "--output",
        target.toString(), "--output-format", "json");
    assertThat(r.code()).isEqualTo(2);
    assertThat(r.err()).startsWith("spark-tp: error: output " + target + " already exists; choose another path or"
        + " pass --mode overwrite\n");
    // another model
    r = CliTest.cli("infer", "--model", tmp.resolve("model2").toString(), "--input", in.toString(), "--output",
        target.toString(), "--output-format", "json", "--master", "local[1]", "--resume", "--ranges", "2");
    assertThat(r.code()).as(r.err()).isEqualTo(2);
    assertThat(r.err()).startsWith("spark-tp: error: output " + target + " holds part of a different job (model then: ")
        .contains("; --resume only finishes the same job (same input, model and options): choose another output path"
            + " or delete it\n");
    // another input (a file changed)
    input(rnd, in, 2, 21);
    r = CliTest.cli("infer", "--model", tmp.resolve("model").toString(), "--input", in.toString(), "--output",
        target.toString(), "--output-format", "json", "--master", "local[1]", "--resume", "--ranges", "2");
    assertThat(r.code()).as(r.err()).isEqualTo(2);
    assertThat(r.err()).startsWith("spark-tp: error: output " + target + " holds part of a different job (input files"
        + " then: 2 files, ");
    assertThat(CliTest.fingerprint(target)).as("a refused resume leaves the target as it was").isEqualTo(before);
    // a folder that no resumable job wrote
    Path other = Files.createDirectories(tmp.resolve("other"));
    Files.writeString(other.resolve("part-00000.json"), "{\"id\": 1}\n");
    r = CliTest.cli("infer", "--model", tmp.resolve("model").toString(), "--input", in.toString(), "--output",
        other.toString(), "--output-format", "json", "--master", "local[1]", "--resume");
    assertThat(r.code()).as(r.err()).isEqualTo(2);
    assertThat(r.err()).startsWith("spark-tp: error: output " + other + " exists and was not written by a resumable"
        + " job (it has no _spark_tp_manifest.json); choose another output path\n");

    // without --resume: the staging folder a killed run left beside the target is removed by the next run, which
    // says so in one line
    Path killed = Files.createDirectories(tmp.resolve(".other.spark-tp-staging-0badf00d").resolve("_temporary"));
    Files.writeString(killed.resolve("part-00000.json"), "{\"id\": 2}\n");
    r = CliTest.cli("infer", "--model", tmp.resolve("model").toString(), "--input", in.toString(), "--output",
        other.toString(), "--output-format", "json", "--master", "local[1]", "--mode", "overwrite");
    assertThat(r.code()).as(r.err()).isZero();
    assertThat(r.err()).containsOnlyOnce("spark-tp infer: WARN removing the staging folder ")
        .contains(".other.spark-tp-staging-0badf00d that an earlier run into " + other + " left (it was killed before"
            + " it could clean up)\n");
    assertThat(killed.getParent()).doesNotExist();
    assertThat(r.out()).startsWith("wrote 42 rows to " + other);
  }
}
