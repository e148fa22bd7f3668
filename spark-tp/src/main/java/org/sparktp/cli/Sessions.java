package org.sparktp.cli;

import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.spark.SparkConf;
import org.apache.spark.sql.SparkSession;

/**
 * The Spark session of a CLI command: the one {@code spark-submit} made, or an embedded one for
 * {@code --master} (default {@code local[*]}) with loopback networking and the UI off unless asked for.
 * Public for the launchers of other modules (the Thrift server of {@code thrift/}).
 */
public final class Sessions {
  private static final Pattern LOCAL_CLUSTER = Pattern.compile("local-cluster\\[\\s*(\\d+)\\s*,\\s*(\\d+)\\s*,\\s*(\\d+)\\s*]");

  static final String EXTENSIONS = "spark.sql.extensions";

  private Sessions() {}

  /** {@code confs} with {@code spark.sql.extensions} holding spark-tp's SQL functions (added to what it names). */
  public static Map<String, String> withExtensions(Map<String, String> confs) {
    Map<String, String> out = new java.util.LinkedHashMap<>(confs);
    String ext = out.get(EXTENSIONS);
    String ours = org.sparktp.sql.TensorParallelExtensions.class.getName();
    out.put(EXTENSIONS, ext == null || ext.isBlank() ? ours : ext.contains(ours) ? ext : ext + "," + ours);
    return out;
  }

  /** A session for {@code master} ({@code null}: spark-submit's, else {@code local[*]}) with {@code confs} set. */
  public static SparkSession open(String app, String master, Map<String, String> confs) {
    SparkConf existing = new SparkConf();
    boolean submitted = existing.contains("spark.master") && master == null;
    SparkSession.Builder b = SparkSession.builder().appName("spark-tp " + app);
    String m = submitted ? existing.get("spark.master") : (master == null ? "local[*]" : master);
    if (!submitted) {
      b.master(m);
      if (m.startsWith("local")) {
        b.config("spark.driver.host", "127.0.0.1");
        b.config("spark.driver.bindAddress", "127.0.0.1");
        b.config("spark.ui.enabled", "false");
        b.config("spark.sql.shuffle.partitions", "8");
      }
      // running tasks report their rows with each heartbeat: a short interval keeps the progress line live
      b.config("spark.executor.heartbeatInterval", "2s");
      Matcher lc = LOCAL_CLUSTER.matcher(m);
      if (lc.matches()) {
        String cp = System.getenv("SPARK_TP_CLASSPATH");
        b.config("spark.executor.extraClassPath", cp != null ? cp : System.getProperty("java.class.path"));
        b.config("spark.executor.memory", lc.group(3) + "m");
      }
    }
    for (Map.Entry<String, String> e : confs.entrySet()) {
      b.config(e.getKey(), e.getValue());
    }
    if (!submitted && !m.startsWith("local[") && !m.equals("local")) {
      // executors' JavaCPP off-heap budget (default: their heap) from spark.executor.memoryOverhead and
      // spark.memory.offHeap.size, or for local-cluster from the machine; unless the options set it already
      String opts = confs.getOrDefault("spark.executor.extraJavaOptions", "");
      Matcher c = LOCAL_CLUSTER.matcher(m);
      String o = opts.contains("org.bytedeco.javacpp.maxBytes") ? null : org.sparktp.spark.RankMemory.executorOption(
          confs, c.matches() ? Integer.parseInt(c.group(1)) : 0, c.matches() ? Long.parseLong(c.group(3)) << 20 : 0);
      if (o != null) {
        b.config("spark.executor.extraJavaOptions", (opts + " " + o).trim());
      }
    }
    // oneDNN's OpenMP runtime reads OMP_NUM_THREADS once, when an executor loads it: give executors the
    // rank's thread budget (spark.tp.cpu.threads) unless the user set it
    if (!confs.containsKey("spark.executorEnv.OMP_NUM_THREADS") && !existing.contains("spark.executorEnv.OMP_NUM_THREADS")) {
      b.config("spark.executorEnv.OMP_NUM_THREADS", confs.getOrDefault(org.sparktp.TpConf.CPU_THREADS,
          org.sparktp.TpConf.CPU_THREADS_DEFAULT));
    }
    SparkSession spark = b.getOrCreate();
    Matcher lc = LOCAL_CLUSTER.matcher(m);
    if (lc.matches()) {
      awaitExecutors(spark, Integer.parseInt(lc.group(1)), 90_000);
    }
    return spark;
  }

  /** Waits until {@code n} executors have registered (a barrier stage needs all its slots at once). */
  static void awaitExecutors(SparkSession spark, int n, long timeoutMs) {
    long deadline = System.currentTimeMillis() + timeoutMs;
    while (spark.sparkContext().statusTracker().getExecutorInfos().length - 1 < n) {
      if (System.currentTimeMillis() > deadline) {
        throw new IllegalStateException("Only " + (spark.sparkContext().statusTracker().getExecutorInfos().length - 1)
            + " of " + n + " executors registered within " + timeoutMs / 1000 + " s; check that SPARK_HOME is set"
            + " (bin/spark-tp sets it) and that the machine has memory for " + n + " executor JVMs");
      }
      try {
        Thread.sleep(200);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        throw new IllegalStateException("Interrupted while waiting for executors", e);
      }
    }
  }
}
