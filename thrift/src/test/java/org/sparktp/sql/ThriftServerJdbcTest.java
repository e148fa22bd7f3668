package org.sparktp.sql;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.nn.ModelSpec;

/**
 * The Thrift server as a user runs it ({@code org.sparktp.thrift.TpThriftServer}, the main class of
 * {@code bin/spark-tp thrift-server}, in a JVM of its own on {@code local[2]}, on a free port) queried through Hive's
 * JDBC driver 2.3.10 (the version of Spark's built-in Hive, the driver BI tools use for Spark): {@code tp_predict}
 * and {@code tp_embed} of a random MLP at tp 2 against the float64 reference, an analysis error as the statement's
 * SQLException, per-connection sessions (URL settings, temporary views), and the metadata calls BI tools make.
 */
@TestInstance(TestInstance.Lifecycle.PER_CLASS)
@Timeout(value = 600, unit = TimeUnit.SECONDS)
class ThriftServerJdbcTest extends SqlTestBase {
  private static final int N = 24;
  private static final int IN = 8;
  /** Under load the server's JVM and Spark may take long to start; bounded all the same. */
  private static final long START_WAIT_S = 240;
  private static final Pattern LISTENING = Pattern.compile("listening on (jdbc:hive2://[^ ]+/default)");

  @TempDir
  static Path dir;
  private Process server;
  private Path log;
  private String url;
  private ModelSpec spec;
  private float[][] x;
  private final List<String> output = java.util.Collections.synchronizedList(new ArrayList<>());

  @BeforeAll
  void startServer() throws Exception {
    long seed = System.nanoTime();
    Random rng = new Random(seed);
    Path model = dir.resolve("mlp");
    spec = writeMlp(rng, model, IN, 16, 4);
    x = inputs(rng, N, IN);
    String cp = System.getProperty("sparktp.thrift.classpath") + java.io.File.pathSeparator
        + Files.readString(Path.of(System.getProperty("sparktp.thrift.classpath.file"))).trim();
    String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
    // as bin/spark-tp thrift-server runs it: with the JVM flags spark-submit adds for Java 17
    List<String> cmd = new ArrayList<>(List.of(java, "-Xmx1g"));
    cmd.addAll(List.of(org.apache.spark.launcher.JavaModuleOptions.defaultModuleOptionArray()));
    cmd.addAll(List.of("-Dlog4j2.configurationFile=" + System.getProperty("sparktp.log4j"),
        "-cp", cp, "org.sparktp.thrift.TpThriftServer", "--master", "local[2]", "--port", "0",
        "--conf", "spark.tp.models.mlp=" + model, "--conf", "spark.ui.enabled=false",
        "--conf", "spark.tp.comm.timeout=60s"));
    ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
    pb.environment().put("SPARK_LOCAL_IP", "127.0.0.1");
    pb.environment().put("OMP_NUM_THREADS", "1");
    log = dir.resolve("server.log");
    server = pb.start();
    // should this JVM go down before @AfterAll (a surefire timeout, Ctrl-C), the server goes with it
    Process started = server;
    Runtime.getRuntime().addShutdownHook(new Thread(started::destroyForcibly, "thrift-server-reaper"));
    CompletableFuture<String> listening = new CompletableFuture<>();
    Thread reader = new Thread(() -> {
      try (BufferedReader r = new BufferedReader(new InputStreamReader(server.getInputStream(), StandardCharsets.UTF_8))) {
        for (String line; (line = r.readLine()) != null; ) {
          output.add(line);
          Matcher m = LISTENING.matcher(line);
          if (m.find()) {
            listening.complete(m.group(1));
          }
        }
      } catch (IOException e) {
        listening.completeExceptionally(e);
      }
      listening.completeExceptionally(new IllegalStateException("the server's output ended before it listened"));
    }, "thrift-server-output");
    reader.setDaemon(true);
    reader.start();
    try {
      url = listening.get(START_WAIT_S, TimeUnit.SECONDS);
    } catch (Exception e) {
      throw new AssertionError("The Thrift server did not listen within " + START_WAIT_S + " s (seed " + seed
          + "); its output:\n" + tail(), e);
    }
    assertThat(url).as("the server's JDBC URL").startsWith("jdbc:hive2://127.0.0.1:");
    Class.forName("org.apache.hive.jdbc.HiveDriver");
    // the Hive driver uses it as its socket's read timeout too: no call waits on a hung server for ever (a statement
    // returns at once and its status is polled, so every call answers within seconds)
    DriverManager.setLoginTimeout(120);
  }

  @AfterAll
  void stopServer() throws Exception {
    if (server == null) {
      return;
    }
    try {
      server.destroy(); // SIGTERM: the server's hook closes the sessions and stops Spark
      boolean exited = server.waitFor(60, TimeUnit.SECONDS);
      assertThat(exited).as("the server exits on SIGTERM within 60 s; its output:\n%s", tail()).isTrue();
      assertThat(server.descendants().filter(ProcessHandle::isAlive).count()).as("processes left behind").isZero();
    } finally {
      server.descendants().forEach(ProcessHandle::destroyForcibly);
      server.destroyForcibly();
      Files.write(log, List.copyOf(output));
    }
  }

  private String tail() {
    List<String> lines = List.copyOf(output);
    return String.join("\n", lines.subList(Math.max(0, lines.size() - 60), lines.size()));
  }

  /** The rows as a VALUES table {@code (id, features array<float>)}: float literals that read back exactly. */
  private String valuesView(String name) {
    StringBuilder sql = new StringBuilder("CREATE TEMPORARY VIEW " + name + " AS SELECT * FROM VALUES ");
    for (int i = 0; i < x.length; i++) {
      sql.append(i == 0 ? "" : ", ").append("(").append(i).append(", array(");
      for (int j = 0; j < x[i].length; j++) {
        sql.append(j == 0 ? "" : ", ").append(Float.toString(x[i][j])).append("F");
      }
      sql.append("))");
    }
    return sql.append(" AS t(id, features)").toString();
  }

  /** An {@code array<float>} as the driver returns it, Spark's text {@code [a,b,...]}. */
  private static float[] floats(String text) {
    assertThat(text).as("array text").startsWith("[").endsWith("]");
    String[] parts = text.substring(1, text.length() - 1).split(",");
    float[] out = new float[parts.length];
    for (int i = 0; i < parts.length; i++) {
      out[i] = Float.parseFloat(parts[i].trim());
    }
    return out;
  }

  /** Column 2 of the query's rows (column 1 the id), by id; every id once. */
  private static float[][] byId(Statement st, String sql) throws SQLException {
    float[][] y = new float[N][];
    try (ResultSet rs = st.executeQuery(sql)) {
      assertThat(rs.getMetaData().getColumnType(2)).as("result column type of %s", sql).isEqualTo(Types.ARRAY);
      while (rs.next()) {
        int id = rs.getInt(1);
        assertThat(y[id]).as("row %d appears once", id).isNull();
        y[id] = floats(rs.getString(2));
      }
    }
    for (int i = 0; i < N; i++) {
      assertThat(y[i]).as("row %d of %s", i, sql).isNotNull();
    }
    return y;
  }

  @Test
  void predictAndEmbedThroughJdbcMatchTheFloat64Reference() throws Exception {
    double[][] ref = reference(spec, x, 1);
    try (Connection c = DriverManager.getConnection(url, "bi-user", "any");
         Statement st = c.createStatement()) {
      st.execute(valuesView("rows"));
      assertClose(byId(st, "SELECT id, tp_predict('mlp', features, map('tp', '2')) AS p FROM rows ORDER BY id"), ref,
          "tp_predict over JDBC at tp 2");
      assertClose(byId(st, "SELECT id, tp_embed(model => 'mlp', input => features, tp => 2, batch_size => 5) AS e"
          + " FROM rows"), ref, "tp_embed over JDBC at tp 2");
      // an aggregate over the call's column, computed by Spark, arrives as a number
      try (ResultSet rs = st.executeQuery("SELECT count(*), sum(p[0]) FROM (SELECT tp_predict('mlp', features) AS p"
          + " FROM rows)")) {
        assertThat(rs.next()).isTrue();
        assertThat(rs.getLong(1)).as("count").isEqualTo(N);
        double sum = 0;
        double scale = 0;
        for (double[] r : ref) {
          sum += r[0];
          scale += Math.abs(r[0]);
        }
        assertThat(rs.getDouble(2)).as("sum of the first outputs").isCloseTo(sum, org.assertj.core.data.Offset
            .offset(1e-5 * scale));
      }
    }
  }

  @Test
  void analysisErrorsReachTheClientAsOneLine() throws Exception {
    try (Connection c = DriverManager.getConnection(url, "bi-user", "");
         Statement st = c.createStatement()) {
      st.execute(valuesView("rows"));
      assertThatThrownBy(() -> st.executeQuery("SELECT tp_predict('nosuch', features) FROM rows"))
          .isInstanceOf(SQLException.class)
          .hasMessageContaining("nosuch").hasMessageContaining("mlp");
      // the session goes on after a failed statement
      try (ResultSet rs = st.executeQuery("SELECT count(*) FROM rows")) {
        assertThat(rs.next()).isTrue();
        assertThat(rs.getLong(1)).isEqualTo(N);
      }
    }
  }

  @Test
  void eachConnectionIsASessionWithItsOwnSettingsAndViews() throws Exception {
    double[][] ref = reference(spec, new float[][] {x[0]}, 1);
    String model = dir.resolve("mlp").toString();
    try (Connection a = DriverManager.getConnection(url, "a", "");
         Connection b = DriverManager.getConnection(url + ";?spark.tp.models.other=" + model, "b", "");
         Statement sa = a.createStatement();
         Statement sb = b.createStatement()) {
      sa.execute(valuesView("only_in_a"));
      assertThatThrownBy(() -> sb.executeQuery("SELECT * FROM only_in_a")).isInstanceOf(SQLException.class)
          .hasMessageContaining("only_in_a");
      StringBuilder arr = new StringBuilder("array(");
      for (int j = 0; j < IN; j++) {
        arr.append(j == 0 ? "" : ", ").append(Float.toString(x[0][j])).append("F");
      }
      arr.append(")");
      try (ResultSet rs = sb.executeQuery("SELECT 0 AS id, tp_predict('other', " + arr + ") AS p")) {
        assertThat(rs.next()).isTrue();
        float[][] y = new float[1][];
        y[0] = floats(rs.getString(2));
        assertClose(y, ref, "a model registered in the JDBC URL");
      }
      assertThatThrownBy(() -> sa.executeQuery("SELECT tp_predict('other', " + arr + ")"))
          .as("the other connection's model is not this one's").isInstanceOf(SQLException.class)
          .hasMessageContaining("other");
    }
  }

  @Test
  void sparkTypesAsTheDriverReadsThem() throws Exception {
    try (Connection c = DriverManager.getConnection(url, "bi-user", "");
         Statement st = c.createStatement();
         ResultSet rs = st.executeQuery("SELECT 7 AS i, 9000000000L AS l, 0.1F AS f, 2.5D AS d, 'text' AS s, true AS b,"
             + " CAST(1.10 AS DECIMAL(5,2)) AS dec, DATE'2024-01-02' AS dt, TIMESTAMP'2024-01-02 03:04:05' AS ts,"
             + " CAST(NULL AS INT) AS n, map('k', 1) AS m")) {
      assertThat(rs.next()).isTrue();
      assertThat(rs.getInt("i")).isEqualTo(7);
      assertThat(rs.getLong("l")).isEqualTo(9_000_000_000L);
      assertThat(rs.getFloat("f")).as("a float arrives as the double its text reads as").isEqualTo(0.1f);
      assertThat(rs.getDouble("d")).isEqualTo(2.5);
      assertThat(rs.getString("s")).isEqualTo("text");
      assertThat(rs.getBoolean("b")).isTrue();
      assertThat(rs.getBigDecimal("dec")).isEqualByComparingTo("1.10");
      assertThat(rs.getDate("dt")).isEqualTo(java.sql.Date.valueOf("2024-01-02"));
      assertThat(rs.getTimestamp("ts")).isEqualTo(java.sql.Timestamp.valueOf("2024-01-02 03:04:05"));
      assertThat(rs.getObject("n")).isNull();
      assertThat(rs.wasNull()).isTrue();
      assertThat(rs.getString("m")).isEqualTo("{\"k\":1}");
      assertThat(rs.getMetaData().getColumnType(7)).isEqualTo(Types.DECIMAL);
      assertThat(rs.getMetaData().getPrecision(7)).isEqualTo(5);
      assertThat(rs.getMetaData().getScale(7)).isEqualTo(2);
      assertThat(rs.next()).isFalse();
    }
  }

  @Test
  void metadataForBiTools() throws Exception {
    try (Connection c = DriverManager.getConnection(url, "bi-user", "");
         Statement st = c.createStatement()) {
      st.execute(valuesView("scored"));
      DatabaseMetaData md = c.getMetaData();
      assertThat(md.getDatabaseProductName()).isEqualTo("Spark SQL");
      assertThat(md.getDatabaseProductVersion()).startsWith("4.");
      Set<String> functions = new HashSet<>();
      try (ResultSet rs = md.getFunctions(null, null, "tp\\_%")) {
        while (rs.next()) {
          functions.add(rs.getString("FUNCTION_NAME"));
        }
      }
      assertThat(functions).as("spark-tp's SQL functions").contains("tp_predict", "tp_embed", "tp_generate");
      Set<String> schemas = new HashSet<>();
      try (ResultSet rs = md.getSchemas()) {
        while (rs.next()) {
          schemas.add(rs.getString("TABLE_SCHEM"));
        }
      }
      assertThat(schemas).contains("default");
      try (ResultSet rs = md.getTables(null, "default", "scor%", null)) {
        assertThat(rs.next()).as("the temporary view is listed").isTrue();
        assertThat(rs.getString("TABLE_NAME")).isEqualTo("scored");
        assertThat(rs.getString("TABLE_TYPE")).isEqualTo("VIEW");
        assertThat(rs.next()).isFalse();
      }
      List<String> columns = new ArrayList<>();
      try (ResultSet rs = md.getColumns(null, "default", "scored", "%")) {
        while (rs.next()) {
          columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getInt("DATA_TYPE") + ":" + rs.getString("TYPE_NAME"));
        }
      }
      assertThat(columns).containsExactly("id:" + Types.INTEGER + ":INT",
          "features:" + Types.ARRAY + ":ARRAY<FLOAT>");
    }
  }
}
