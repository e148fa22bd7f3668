package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.backend.Activation;
import org.sparktp.model.ModelWriter;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.Parallel;

/** {@code spark-tp sql}: statements on an embedded session, results printed as tables or written with INSERT OVERWRITE DIRECTORY. */
class SqlCliTest {
  static final ObjectMapper JSON = new ObjectMapper();
  @TempDir
  Path tmp;

  @Test
  void statementsRunOnAnEmbeddedSessionWithTheFunctions() throws Exception {
    Random rng = new Random(System.nanoTime());
    int in = 6;
    int out = 3;
    float[] w = rand(rng, out * in);
    float[] b = rand(rng, out);
    ModelSpec spec = new ModelSpec(in, List.of(new LayerSpec.Linear("fc", in, out, w, b, Parallel.AUTO),
        new LayerSpec.Act(Activation.TANH, out)));
    Path model = tmp.resolve("model");
    ModelWriter.write(spec.model(), model.toString());
    double[][] x = new double[9][in];
    List<String> lines = new ArrayList<>();
    for (int i = 0; i < x.length; i++) {
      StringBuilder s = new StringBuilder("{\"id\": " + i + ", \"features\": [");
      for (int j = 0; j < in; j++) {
        x[i][j] = (float) rng.nextGaussian();
        s.append(j > 0 ? ", " : "").append((float) x[i][j]);
      }
      lines.add(s.append("]}").toString());
    }
    Path input = tmp.resolve("rows.json");
    Files.write(input, lines);
    Path outDir = tmp.resolve("scored");
    String statements = "CREATE TEMPORARY VIEW t USING json OPTIONS (path '" + input + "');\n"
        + "-- a comment; with a semicolon\n"
        + "SELECT name FROM tp_models();\n"
        + "SELECT count(*) AS n, 'a;b' AS s FROM t;\n"
        + "INSERT OVERWRITE DIRECTORY '" + outDir + "' USING json\n"
        + "  SELECT id, tp_predict('m', features, map('tp', '2')) AS p FROM t;\n";
    Path file = tmp.resolve("job.sql");
    Files.writeString(file, statements);
    CliTest.Run r = CliTest.cli("sql", "--master", "local[2]", "--conf", "spark.tp.models.m=" + model, "-f",
        file.toString());
    assertThat(r.code()).as(r.err()).isZero();
    assertThat(r.out()).contains("|name|\n+----+\n|m   |").contains("|n  |s  |\n+---+---+\n|9  |a;b|");
    double[][] seen = new double[x.length][];
    try (Stream<Path> parts = Files.list(outDir)) {
      for (Path p : parts.filter(p -> p.getFileName().toString().startsWith("part-")).toList()) {
        for (String line : Files.readAllLines(p)) {
          JsonNode n = JSON.readTree(line);
          int id = n.get("id").asInt();
          seen[id] = new double[out];
          for (int j = 0; j < out; j++) {
            seen[id][j] = n.get("p").get(j).asDouble();
          }
        }
      }
    }
    // EXPLAIN prints the plan's lines; a failure while a statement's job runs names the statement too
    CliTest.Run r2 = CliTest.cli("sql", "--master", "local[2]", "--conf", "spark.tp.models.m=" + model, "-e",
        "CREATE TEMPORARY VIEW t USING json OPTIONS (path '" + input + "');"
        + " EXPLAIN SELECT id, tp_predict('m', features) AS p FROM t; SELECT tp_predict('m', slice(features, 1, 2))"
        + " FROM t");
    assertThat(r2.code()).as(r2.err()).isEqualTo(1);
    assertThat(r2.out()).startsWith("== Physical Plan ==\n").contains("\n+- TensorParallelInference [model=m, tp=1")
        .doesNotContain("\\n");
    assertThat(r2.err()).startsWith("spark-tp sql failed: statement 3 (SELECT tp_predict('m', slice(features, 1, 2))"
        + " FROM t): Column 'slice(t.features, 1, 2)': row ").contains("has width 2, the model expects width 6");
    for (int i = 0; i < x.length; i++) {
      assertThat(seen[i]).as("row %d written", i).isNotNull();
      for (int o = 0; o < out; o++) {
        double s = b[o];
        for (int j = 0; j < in; j++) {
          s += x[i][j] * w[o * in + j];
        }
        assertThat(seen[i][o]).as("row %d output %d", i, o).isCloseTo(Math.tanh(s),
            org.assertj.core.data.Offset.offset(1e-5));
      }
    }
  }

  @Test
  void usageAndStatementErrors() {
    CliTest.Run none = CliTest.cli("sql", "--master", "local[1]");
    assertThat(none.code()).isEqualTo(2);
    assertThat(none.err()).startsWith("spark-tp: error: 'sql' needs exactly one of -e \"STATEMENTS\" or -f FILE");
    CliTest.Run bad = CliTest.cli("sql", "--master", "local[1]", "-e", "SELECT 1 AS one; SELECT tp_predict('nope', array(1.0))");
    assertThat(bad.code()).isEqualTo(1);
    assertThat(bad.out()).contains("|one|");
    assertThat(bad.err()).startsWith("spark-tp sql failed: statement 2 (SELECT tp_predict('nope', array(1.0))): "
        + "tp_predict argument 'model': no model named 'nope' is registered");
  }

  @Test
  void splitsOnSemicolonsOutsideQuotesAndComments() {
    assertThat(Sql.split("SELECT ';' AS a; -- x; y\nSELECT \"b;\" /* c; */ AS b;;  "))
        .containsExactly("SELECT ';' AS a", "SELECT \"b;\"   AS b");
  }

  static float[] rand(Random rng, int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) (rng.nextGaussian() * 0.5) + 0.01f;
    }
    return a;
  }
}
