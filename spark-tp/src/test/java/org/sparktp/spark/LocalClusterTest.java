package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.sparktp.nn.ModelSpec;

/**
 * Ranks in separate executor JVMs: {@code local-cluster[2,1,1024]}, so the ranks of a group talk over
 * TCP ({@code spark.tp.comm.transport=auto} picks it off local mode). Needs {@code SPARK_HOME} (an empty
 * {@code jars/} folder is made here) and {@code SPARK_SCALA_VERSION}, which the build sets.
 */
class LocalClusterTest {
  private static SparkSession cluster;

  @BeforeAll
  static void start() throws Exception {
    SparkTestBase.stopSpark();
    String home = System.getenv("SPARK_HOME");
    assertThat(home).as("SPARK_HOME (set by the surefire configuration)").isNotNull();
    Files.createDirectories(Path.of(home, "jars"));
    String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
    cluster = SparkSession.builder()
        .master("local-cluster[2,1,1024]")
        .appName("spark-tp-local-cluster")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.executor.extraClassPath", cp)
        .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
        .config("spark.task.maxFailures", "2")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.tp.comm.timeout", "30s")
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
  }

  @Test
  void ranksInTwoExecutorsMatchReferenceAndLaterJobsLoadNothing() {
    Random rng = new Random(4000);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = SparkTestBase.inputs(rng, 70, 50, false);
    java.util.List<Row> rows = new java.util.ArrayList<>();
    for (int i = 0; i < x.length; i++) {
      rows.add(org.apache.spark.sql.RowFactory.create((long) i, SparkTestBase.value(SparkTestBase.Input.FLOATS, x[i]),
          "row-" + i));
    }
    org.apache.spark.sql.types.StructType schema = new org.apache.spark.sql.types.StructType()
        .add("id", org.apache.spark.sql.types.DataTypes.LongType, false)
        .add("features", SparkTestBase.type(SparkTestBase.Input.FLOATS), false)
        .add("tag", org.apache.spark.sql.types.DataTypes.StringType, false);
    JavaSparkContext jsc = JavaSparkContext.fromSparkContext(cluster.sparkContext());
    Dataset<Row> in = cluster.createDataFrame(jsc.parallelize(rows, 3), schema);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(2).setGroups(1).setBatchSize(8);

    Dataset<Row> out = model.transform(in);
    float[][] y = new float[x.length][];
    for (Row r : out.collectAsList()) {
      java.util.List<Float> v = r.getList(3);
      float[] f = new float[v.size()];
      for (int j = 0; j < f.length; j++) {
        f[j] = v.get(j);
      }
      y[(int) r.getLong(0)] = f;
    }
    SparkTestBase.assertClose(y, Reference.forward(spec, x));
    assertThat(model.lastMetrics().totalLoads()).isEqualTo(2);
    assertThat(model.lastMetrics().commBytesSent(1)).isPositive();

    // later jobs prefer the executors where each rank ran (and holds its cached model)
    for (int job = 0; job < 3; job++) {
      model.transform(in).write().format("noop").mode("overwrite").save();
      assertThat(model.lastMetrics().totalRows()).isEqualTo(x.length);
      assertThat(model.lastMetrics().totalLoads()).as("job %d: executors reuse their cached shards", job).isZero();
    }
    // release() reaches the executors: their cached shards are freed, and the next job loads them again
    assertThat(model.release()).isEqualTo(2);
    model.transform(in).write().format("noop").mode("overwrite").save();
    assertThat(model.lastMetrics().totalLoads()).isEqualTo(2);
  }
}
