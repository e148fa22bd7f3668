package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ThreadLocalRandom;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkEnv;
import org.apache.spark.api.java.JavaSparkContext;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.tcp.TcpCommunicator;
import org.sparktp.backend.Tensor;

/**
 * Ranks as Spark executors: a barrier stage of 2 tasks on {@code local-cluster[2,1,1024]} (two executor
 * JVMs) connects through {@link SparkRendezvous} and runs collectives. Needs {@code SPARK_HOME} (an
 * empty {@code jars/} folder is made here) and {@code SPARK_SCALA_VERSION}, which the build sets.
 */
class SparkRendezvousTest {
  private static JavaSparkContext jsc;

  @BeforeAll
  static void start() throws Exception {
    String home = System.getenv("SPARK_HOME");
    assertThat(home).as("SPARK_HOME (set by the surefire configuration)").isNotNull();
    Files.createDirectories(Path.of(home, "jars"));
    String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
    SparkConf conf = new SparkConf()
        .setMaster("local-cluster[2,1,1024]")
        .setAppName("SparkRendezvousTest")
        .set("spark.ui.enabled", "false")
        .set("spark.driver.host", "127.0.0.1")
        .set("spark.executor.extraClassPath", cp)
        .set("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
        .set("spark.tp.comm.timeout", "30s")
        .set("spark.stage.maxConsecutiveAttempts", "1"); // a failed barrier stage fails the job at once
    jsc = new JavaSparkContext(conf);
    long deadline = System.currentTimeMillis() + 90_000;
    // The driver is listed too: wait for it and both executors before submitting the barrier job.
    while (jsc.sc().statusTracker().getExecutorInfos().length < 3) {
      if (System.currentTimeMillis() > deadline) {
        throw new AssertionError("The 2 executors of local-cluster did not register within 90 s");
      }
      Thread.sleep(200);
    }
  }

  @AfterAll
  static void stop() {
    if (jsc != null) {
      jsc.stop();
    }
  }

  private static float[] data(long seed, int rank, int n) {
    Random rnd = new Random(seed + 7919L * rank);
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  @Test
  void aBarrierStageOfTwoExecutorsConnectsAndReduces() {
    CommSecret secret = CommSecret.forJob(jsc.sc());
    assertThat(secret.toString()).doesNotContain("[B").isEqualTo("CommSecret(random per job)");
    long seed = ThreadLocalRandom.current().nextLong();
    int n = 300_001;
    jsc.setLocalProperty("spark.tp.comm.timeout", "45s"); // the job's setting wins over the conf's 30s
    scala.Function1<scala.collection.Iterator<Integer>, scala.collection.Iterator<String>> task =
        (scala.Function1<scala.collection.Iterator<Integer>, scala.collection.Iterator<String>> & java.io.Serializable) it -> {
      BarrierTaskContext ctx = BarrierTaskContext.get();
      try (CpuBackend be = new CpuBackend(); TcpCommunicator comm = SparkRendezvous.connect(ctx, 2, secret)) {
        int r = comm.rank();
        String verdict = "PASS";
        try (Tensor t = be.upload(data(seed, r, n), 1, n)) {
          comm.allReduce(t);
          float[] got = be.download(t);
          float[] a = data(seed, 0, n);
          float[] b = data(seed, 1, n);
          for (int i = 0; i < n; i++) {
            double ref = (double) a[i] + b[i];
            if (Math.abs(got[i] - ref) > 1e-5 * 10) {
              verdict = "FAIL at " + i + ": " + got[i] + " vs " + ref;
              break;
            }
          }
        }
        long[] ranks = comm.allGatherLong(r);
        comm.barrier();
        return scala.jdk.javaapi.CollectionConverters.asScala(Collections.singletonList("rank=" + r + " ranks="
            + Arrays.toString(ranks) + " executor=" + SparkEnv.get().executorId() + " timeout=" + comm.timeoutMillis()
            + " " + verdict).iterator());
      }
    };
    List<String> out = Arrays.asList((String[]) jsc.parallelize(Arrays.asList(0, 1), 2).rdd().barrier()
        .mapPartitions(task, false, scala.reflect.ClassTag$.MODULE$.apply(String.class)).collect());
    assertThat(out).hasSize(2);
    assertThat(out.get(0)).startsWith("rank=0 ranks=[0, 1]").endsWith("timeout=45000 PASS");
    assertThat(out.get(1)).startsWith("rank=1 ranks=[0, 1]").endsWith("timeout=45000 PASS");
    String e0 = out.get(0).replaceAll(".*executor=(\\S+).*", "$1");
    String e1 = out.get(1).replaceAll(".*executor=(\\S+).*", "$1");
    assertThat(e0).as("the ranks run in different executor JVMs").isNotEqualTo(e1);
  }

  @Test
  void aFailedTaskAbortsItsCommunicatorAndItsPeerFailsAtOnce() throws Exception {
    CommSecret secret = CommSecret.forJob(jsc.sc());
    Path report = Files.createTempFile("spark-tp-peer-failure", ".txt");
    String reportPath = report.toString();
    jsc.setLocalProperty("spark.tp.comm.timeout", "60s");
    scala.Function1<scala.collection.Iterator<Integer>, scala.collection.Iterator<String>> task =
        (scala.Function1<scala.collection.Iterator<Integer>, scala.collection.Iterator<String>> & java.io.Serializable) it -> {
      BarrierTaskContext ctx = BarrierTaskContext.get();
      try (CpuBackend be = new CpuBackend(); TcpCommunicator comm = SparkRendezvous.connect(ctx, 2, secret)) {
        comm.barrier();
        if (comm.rank() == 1) {
          throw new IllegalStateException("rank 1 fails on purpose");
        }
        long t0 = System.nanoTime();
        try (Tensor t = be.upload(data(1, 0, 1000), 1, 1000)) {
          comm.allReduce(t);
        } catch (RuntimeException e) {
          writeReport(reportPath, (System.nanoTime() - t0) / 1_000_000 + " ms: " + e.getMessage() + " | peer "
              + comm.peerAddress(1));
          throw e;
        }
        return scala.jdk.javaapi.CollectionConverters.asScala(Collections.singletonList("unexpected").iterator());
      }
    };
    try {
      org.assertj.core.api.Assertions.assertThatThrownBy(() -> jsc.parallelize(Arrays.asList(0, 1), 2).rdd().barrier()
          .mapPartitions(task, false, scala.reflect.ClassTag$.MODULE$.apply(String.class)).collect())
          // whichever task's failure reaches the driver first fails the job: rank 1's own error, or rank 0's
          // communicator error about rank 1 (checked in detail through the report below)
          .satisfies(e -> assertThat(e.getMessage()).containsAnyOf("rank 1 fails on purpose", "allReduce on rank 0"));
      long deadline = System.currentTimeMillis() + 20_000;
      while (Files.size(report) == 0 && System.currentTimeMillis() < deadline) {
        Thread.sleep(100);
      }
      String got = Files.readString(report);
      long ms = Long.parseLong(got.substring(0, got.indexOf(" ms")));
      String peer = got.substring(got.indexOf("| peer ") + 7);
      assertThat(got).contains("allReduce on rank 0").contains("rank 1 at " + peer);
      assertThat(ms).as("rank 0 fails long before its 60 s timeout: " + got).isLessThan(10_000);
    } finally {
      Files.deleteIfExists(report);
    }
  }

  private static void writeReport(String path, String text) {
    try {
      Files.writeString(Path.of(path), text);
    } catch (java.io.IOException e) {
      throw new java.io.UncheckedIOException(e);
    }
  }

  @Test
  void executorAddressesAreParsedWithOrWithoutAPort() {
    // two executors of one machine differ only in their port: one host, no "different hosts" warning
    assertThat(RankTask.oneHost(new String[] {"10.1.2.3:40123", "10.1.2.3:40999"})).isTrue();
    assertThat(RankTask.oneHost(new String[] {"10.1.2.3:40123", "10.1.2.4:40123"})).isFalse();
    assertThat(SparkRendezvous.hostOf("10.1.2.3:40123")).isEqualTo("10.1.2.3");
    assertThat(SparkRendezvous.hostOf("worker-7.example.com")).isEqualTo("worker-7.example.com");
    assertThat(SparkRendezvous.hostOf("[fe80::1]:7077")).isEqualTo("fe80::1");
    assertThat(new File(System.getenv("SPARK_HOME"), "jars")).isDirectory();
  }
}
