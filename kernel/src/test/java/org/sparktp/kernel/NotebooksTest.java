package org.sparktp.kernel;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.fail;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The notebooks in {@code notebooks/}: committed without outputs and naming the spark-tp kernel; each one
 * executed headless by {@code jupyter nbconvert --execute} on the kernel built here (fails on any error cell);
 * a notebook with a failing cell is reported as failed. {@code -Dsparktp.notebooks=skip} keeps only the static
 * checks (for machines without Jupyter; CI installs it, see {@code .ci/run}).
 */
class NotebooksTest {
  static Path repo;
  static Path target;

  @BeforeAll
  static void paths() {
    repo = Path.of(System.getProperty("sparktp.repo", "..")).toAbsolutePath().normalize();
    target = repo.resolve("kernel/target");
  }

  static List<Path> notebooks() throws IOException {
    try (Stream<Path> s = Files.list(repo.resolve("notebooks"))) {
      return s.filter(p -> p.toString().endsWith(".ipynb")).sorted().toList();
    }
  }

  @Test
  void committedNotebooksHoldNoOutputsAndNameTheKernel() throws Exception {
    List<Path> nbs = notebooks();
    assertThat(nbs.stream().map(p -> p.getFileName().toString()))
        .contains("quickstart.ipynb", "sql.ipynb", "model-directory-and-cli.ipynb");
    for (Path nb : nbs) {
      JsonObject doc = JsonParser.parseString(Files.readString(nb)).getAsJsonObject();
      assertThat(doc.getAsJsonObject("metadata").getAsJsonObject("kernelspec").get("name").getAsString())
          .as("%s names the kernel", nb).isEqualTo(KernelSpec.NAME);
      for (JsonElement c : doc.getAsJsonArray("cells")) {
        JsonObject cell = c.getAsJsonObject();
        if (cell.get("cell_type").getAsString().equals("code")) {
          assertThat(cell.getAsJsonArray("outputs").size()).as("%s cell %s has outputs: strip them before commit (jupyter"
              + " nbconvert --clear-output --inplace %s)", nb.getFileName(), cell.get("id"), nb).isZero();
          assertThat(cell.get("execution_count").isJsonNull()).as("%s cell %s has an execution count",
              nb.getFileName(), cell.get("id")).isTrue();
        }
      }
    }
    try (Stream<Path> s = Files.list(repo.resolve("notebooks/zeppelin"))) {
      List<Path> notes = s.filter(p -> p.toString().endsWith(".zpln")).toList();
      assertThat(notes).isNotEmpty();
      for (Path z : notes) {
        JsonObject note = JsonParser.parseString(Files.readString(z)).getAsJsonObject();
        for (JsonElement p : note.getAsJsonArray("paragraphs")) {
          assertThat(p.getAsJsonObject().has("results")).as("%s holds results", z).isFalse();
        }
      }
    }
  }

  @Test
  void everyNotebookRunsHeadlessWithoutErrors() throws Exception {
    Assumptions.assumeFalse("skip".equals(System.getProperty("sparktp.notebooks")), "-Dsparktp.notebooks=skip");
    Path data = installKernel();
    for (Path nb : notebooks()) {
      long t0 = System.nanoTime();
      Run r = execute(nb, data);
      System.out.printf("notebook %s: %.1f s%n", nb.getFileName(), (System.nanoTime() - t0) / 1e9);
      assertThat(r.code).as("nbconvert --execute %s:\n%s", nb.getFileName(), r.log).isZero();
      JsonObject out = JsonParser.parseString(Files.readString(r.executed)).getAsJsonObject();
      int images = 0;
      for (JsonElement c : out.getAsJsonArray("cells")) {
        JsonObject cell = c.getAsJsonObject();
        if (!cell.has("outputs")) {
          continue;
        }
        for (JsonElement o : cell.getAsJsonArray("outputs")) {
          JsonObject output = o.getAsJsonObject();
          assertThat(output.get("output_type").getAsString()).as("%s cell %s", nb.getFileName(), cell.get("id"))
              .isNotEqualTo("error");
          if (output.has("data") && output.getAsJsonObject("data").has("image/png")) {
            byte[] png = Base64.getDecoder().decode(output.getAsJsonObject("data").get("image/png").getAsString()
                .replace("\n", ""));
            assertThat(png).as("PNG signature").startsWith((byte) 0x89, (byte) 'P', (byte) 'N', (byte) 'G');
            images++;
          }
        }
      }
      if (nb.getFileName().toString().equals("quickstart.ipynb")) {
        assertThat(images).as("plots rendered as images in the quickstart").isEqualTo(2);
      }
    }
  }

  @Test
  void aFailingCellFailsTheRun() throws Exception {
    Assumptions.assumeFalse("skip".equals(System.getProperty("sparktp.notebooks")), "-Dsparktp.notebooks=skip");
    Path data = installKernel();
    Path nb = Path.of(NotebooksTest.class.getResource("/failing.ipynb").toURI());
    Run r = execute(nb, data);
    assertThat(r.code).as(r.log).isNotZero();
    assertThat(r.log).contains("boom: the cell failed");
  }

  record Run(int code, String log, Path executed) {}

  static synchronized Path installKernel() throws IOException {
    String cp = System.getProperty("sparktp.kernel.classpath") + File.pathSeparator
        + Files.readString(Path.of(System.getProperty("sparktp.kernel.classpath.file"))).strip();
    Path data = target.resolve("jupyter");
    KernelSpec.write(data, Path.of(System.getProperty("java.home"), "bin", "java").toString(), cp,
        repo.resolve("conf/log4j2.properties").toString());
    return data;
  }

  static Run execute(Path nb, Path data) throws Exception {
    List<String> cmd = new ArrayList<>(jupyter());
    Path outDir = target.resolve("executed-notebooks");
    Files.createDirectories(outDir);
    cmd.addAll(List.of("nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=120",
        "--ExecutePreprocessor.startup_timeout=120", "--output-dir", outDir.toString(), nb.toString()));
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
    pb.environment().put("JUPYTER_PATH", data.toString());
    pb.environment().put("JUPYTER_RUNTIME_DIR", target.resolve("jupyter-runtime").toString());
    Path log = target.resolve("executed-notebooks/" + nb.getFileName() + ".log");
    pb.redirectOutput(log.toFile());
    Process p = pb.start();
    if (!p.waitFor(600, TimeUnit.SECONDS)) {
      p.destroy();
      fail("nbconvert did not finish " + nb + " within 600 s (its cell timeout is 120 s)");
    }
    return new Run(p.exitValue(), Files.readString(log, StandardCharsets.UTF_8), outDir.resolve(nb.getFileName()));
  }

  /** {@code jupyter} (Debian's runs /usr/bin/python3), or a message saying what to install. */
  static List<String> jupyter() {
    for (String c : List.of("/usr/bin/jupyter", "/usr/local/bin/jupyter")) {
      if (Files.isExecutable(Path.of(c))) {
        return List.of(c);
      }
    }
    String path = System.getenv("PATH");
    if (path != null) {
      for (String d : path.split(File.pathSeparator)) {
        if (Files.isExecutable(Path.of(d, "jupyter"))) {
          return List.of(Path.of(d, "jupyter").toString());
        }
      }
    }
    fail("jupyter is not installed: the notebooks are executed by the tests (sudo apt-get install jupyter-nbconvert"
        + " python3-nbclient python3-jupyter-client, or pip install nbconvert nbclient), or skip them with"
        + " -Dsparktp.notebooks=skip");
    return List.of();
  }
}
