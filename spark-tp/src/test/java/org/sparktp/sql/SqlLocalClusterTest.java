package org.sparktp.sql;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.nn.ModelSpec;

/** A SQL call whose ranks are in two executor JVMs ({@code local-cluster[2,1,1024]}, TCP between them). */
class SqlLocalClusterTest extends SqlTestBase {
  static SparkSession cluster;
  @TempDir
  static Path tmp;

  @BeforeAll
  static void start() throws Exception {
    stopAnySession();
    String home = System.getenv("SPARK_HOME");
    assertThat(home).as("SPARK_HOME (set by the surefire configuration)").isNotNull();
    Files.createDirectories(Path.of(home, "jars"));
    String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
    cluster = SparkSession.builder()
        .master("local-cluster[2,1,1024]")
        .appName("spark-tp-sql-local-cluster")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.executor.extraClassPath", cp)
        .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.tp.comm.timeout", "30s")
        .config("spark.sql.extensions", TensorParallelExtensions.class.getName())
        .getOrCreate();
    long deadline = System.currentTimeMillis() + 90_000;
    while (cluster.sparkContext().statusTracker().getExecutorInfos().length < 3) {
      if (System.currentTimeMillis() > deadline) {
        throw new AssertionError("The 2 executors of local-cluster did not register within 90 s");
      }
      Thread.sleep(200);
    }
  }

  @AfterAll
  static void stop() {
    if (cluster != null) {
      cluster.stop();
    }
    stopAnySession();
  }

  @Test
  void tp2AcrossTwoExecutorsMatchesTheReference() throws Exception {
    Random rng = new Random(System.nanoTime());
    Path dir = tmp.resolve("mlp");
    ModelSpec spec = writeMlp(rng, dir, 50, 203, 37);
    float[][] x = inputs(rng, 40, 50);
    frame(cluster, x, 3).createOrReplaceTempView("t");
    String sql = "SELECT id, tp_predict('" + dir + "', features, map('tp', '2', 'batch-size', '8')) AS p FROM t";
    String plan = cluster.sql("EXPLAIN " + sql).first().getString(0);
    assertThat(plan).contains("TensorParallelInference [model=" + dir + ", tp=2, groups=1, dtype=f32]");
    List<Row> rows = cluster.sql(sql).collectAsList();
    assertThat(rows).hasSize(x.length);
    assertClose(byId(rows, x.length, "p"), reference(spec, x, 1), "local-cluster tp 2");
  }
}
