package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.model.ModelWriter;
import org.sparktp.nn.ModelSpec;
import org.sparktp.testing.ScriptCluster;

/**
 * {@code spark-submit --master spark://...} of the examples' {@code BatchInferenceJob} against a standalone cluster
 * of two workers on their own hosts ({@code bin/spark-tp-cluster up --netns}): the driver is a separate process on
 * the host (Spark's {@code SparkSubmit}, as the {@code spark-submit} script runs it, with the examples jar as the
 * application), the model at tp 2 has one rank per host, and the parquet it writes holds every input row once with
 * the float64 reference's output (1e-5 relative). Skipped, with the reason, where network namespaces are not
 * available (see {@link ScriptCluster#assumeNetns()}).
 */
class BatchInferenceJobIT {

  @Test
  void sparkSubmitOfTheBatchJobAtTp2AcrossTwoHostsMatchesTheReference(@TempDir Path tmp) throws Exception {
    ScriptCluster.assumeNetns();
    Random rng = new Random(System.nanoTime());
    ModelSpec spec = Reference.mlp(rng, 40, 157, 23);
    float[][] x = SparkTestBase.inputs(rng, 60, 40, false);
    Path model = tmp.resolve("model");
    ModelWriter.write(spec.model(), model.toString());
    Path input = tmp.resolve("input.parquet");
    Path output = tmp.resolve("output.parquet");
    SparkSession local = SparkSession.builder().master("local[1]").config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1").getOrCreate();
    try {
      List<Row> rows = new ArrayList<>();
      for (int i = 0; i < x.length; i++) {
        rows.add(RowFactory.create((long) i, SparkTestBase.value(SparkTestBase.Input.FLOATS, x[i])));
      }
      StructType schema = new StructType().add("id", DataTypes.LongType, false)
          .add("features", SparkTestBase.type(SparkTestBase.Input.FLOATS), false);
      local.createDataFrame(rows, schema).repartition(3).write().parquet(input.toString());
    } finally {
      local.stop();
    }

    try (ScriptCluster cluster = ScriptCluster.up(2)) {
      List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
          "-Xmx1g", "-cp", ScriptCluster.classPath(), "org.apache.spark.deploy.SparkSubmit",
          "--master", cluster.url(),
          "--conf", "spark.ui.enabled=false",
          "--conf", "spark.executor.memory=768m",
          "--class", "org.sparktp.examples.BatchInferenceJob",
          examplesJar().toString(), model.toString(), input.toString(), output.toString(), "2"));
      ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
      pb.environment().put("SPARK_LOCAL_IP", cluster.hostAddress()); // what docs/cluster.md tells spark-submit users
      Path log = tmp.resolve("submit.log");
      pb.redirectOutput(log.toFile());
      Process p = pb.start();
      boolean done = p.waitFor(300, TimeUnit.SECONDS);
      if (!done) {
        p.destroyForcibly();
      }
      String out = Files.readString(log, StandardCharsets.UTF_8);
      assertThat(done && p.exitValue() == 0).as("spark-submit exited 0 within 300 s; its output:%n%s", out).isTrue();
      assertThat(out).contains("Plan for tp=2");
    }

    SparkSession check = SparkSession.builder().master("local[1]").config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1").getOrCreate();
    try {
      SparkTestBase.assertClose(SparkTestBase.outputsById(check.read().parquet(output.toString()), x.length,
          "prediction"), Reference.forward(spec, x));
    } finally {
      check.stop();
    }
  }

  /** examples/target/spark-tp-examples-VERSION.jar, packaged before the integration tests run. */
  private static Path examplesJar() throws IOException {
    Path target = Path.of(System.getProperty("basedir", "."), "target");
    try (Stream<Path> s = Files.list(target)) {
      return s.filter(p -> p.getFileName().toString().matches("spark-tp-examples-[0-9.]+(-SNAPSHOT)?\\.jar"))
          .findFirst()
          .orElseThrow(() -> new AssertionError("no spark-tp-examples jar in " + target + ": run mvn verify (package"
              + " comes before the integration tests)"));
    }
  }
}
