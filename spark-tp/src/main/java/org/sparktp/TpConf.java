package org.sparktp;

import java.util.Locale;
import java.util.Map;
import org.apache.spark.sql.SparkSession;

/**
 * Every {@code spark.tp.*} configuration key, with its default. An option given on a call wins over
 * the Spark conf, which wins over the default ({@link #resolve}). Durations are strings such as {@code 500ms},
 * {@code 30s}, {@code 5m} (a bare number is seconds); sizes such as {@code 512k}, {@code 1m}
 * (a bare number is bytes).
 */
public final class TpConf {
  private TpConf() {}

  /** Bound on every wait of a communicator (a receive, a send, the rendezvous). */
  public static final String COMM_TIMEOUT = "spark.tp.comm.timeout";
  public static final String COMM_TIMEOUT_DEFAULT = "120s";

  /** Largest frame the TCP communicator sends; large messages are split into chunks of this size and pipelined. */
  public static final String COMM_CHUNK_BYTES = "spark.tp.comm.chunk-bytes";
  public static final String COMM_CHUNK_BYTES_DEFAULT = "1m";

  /** Ports the communicator may listen on, {@code min-max} (for firewalls); empty: any free (ephemeral) port. */
  public static final String COMM_PORT_RANGE = "spark.tp.comm.port-range";
  public static final String COMM_PORT_RANGE_DEFAULT = "";

  /** Shared-memory data path of the TCP communicator: {@code auto} (used when every rank of the group is on one host) or {@code off}. */
  public static final String COMM_SHM = "spark.tp.comm.shm";
  public static final String COMM_SHM_DEFAULT = "auto";

  /** How the ranks of a group talk: {@code auto} (in-JVM on a {@code local[N]} master, else TCP), {@code local} or {@code tcp}. */
  public static final String COMM_TRANSPORT = "spark.tp.comm.transport";
  public static final String COMM_TRANSPORT_DEFAULT = "auto";

  /** Off local mode, how long {@code transform} waits for executors to register enough task slots before it fails. */
  public static final String SLOTS_WAIT = "spark.tp.slots.wait";
  public static final String SLOTS_WAIT_DEFAULT = "30s";

  /** Rows each rank brings to one step of the group (the micro-batch). */
  public static final String BATCH_SIZE = "spark.tp.batch-size";
  public static final String BATCH_SIZE_DEFAULT = "1024";

  /** Compute backend of the ranks: {@code auto} (the best available; today the CPU) or {@code cpu}. */
  public static final String BACKEND = "spark.tp.backend";
  public static final String BACKEND_DEFAULT = "auto";

  /** OpenBLAS threads per process on the CPU backend (one per rank keeps ranks of a JVM from oversubscribing). */
  public static final String CPU_BLAS_THREADS = "spark.tp.cpu.blas-threads";
  public static final String CPU_BLAS_THREADS_DEFAULT = "1";

  /** Bound on the weights held by the executor-side cache of loaded rank models (LRU eviction beyond it). */
  public static final String CACHE_MAX_BYTES = "spark.tp.cache.max-bytes";
  public static final String CACHE_MAX_BYTES_DEFAULT = "4g";

  /** What a null input value does: {@code error} (fail, naming the column and count), {@code skip} (drop the row) or {@code null} (null output). */
  public static final String NULL_POLICY = "spark.tp.null-policy";
  public static final String NULL_POLICY_DEFAULT = "error";

  /** Tensor-parallel size when the model's {@code tpSize} param is not set. */
  public static final String TP_SIZE = "spark.tp.tp-size";
  public static final String TP_SIZE_DEFAULT = "1";

  /** Number of tensor-parallel groups when the {@code groups} param is not set; 0 = as many as the task slots allow. */
  public static final String GROUPS = "spark.tp.groups";
  public static final String GROUPS_DEFAULT = "0";

  /** End the barrier stage in a shuffle that restores the input partitioning, so a failed attempt is retried whole. */
  public static final String RETRYABLE = "spark.tp.retryable";
  public static final String RETRYABLE_DEFAULT = "true";

  /** Tests only: the rank (partition of the barrier stage) that throws during the stage's first attempt; -1 = none. */
  public static final String TEST_FAIL_RANK = "spark.tp.test.fail-rank";
  public static final String TEST_FAIL_RANK_DEFAULT = "-1";

  // --- issue 10: transformers (sequences, tasks) ---

  /** Token budget of one micro-batch of sequences per rank (rows are also bounded by spark.tp.batch-size). */
  public static final String BATCH_TOKENS = "spark.tp.batch-tokens";
  public static final String BATCH_TOKENS_DEFAULT = "8192";

  /** Sequences longer than the model's max_position_embeddings: {@code false} fails naming the row, {@code true} keeps the first tokens. */
  public static final String TRUNCATE = "spark.tp.truncate";
  public static final String TRUNCATE_DEFAULT = "false";

  // --- issue 12: generation ---

  /** Bound on one rank's KV cache in task generate; a row joins the batch when its whole cache (prompt + maxNewTokens) fits. */
  public static final String KV_CACHE_MAX_BYTES = "spark.tp.kv-cache.max-bytes";
  public static final String KV_CACHE_MAX_BYTES_DEFAULT = "1g";

  /** Tokens one forward pass of task generate takes: one per decoding row, then chunks of the prompts being prefilled. */
  public static final String GENERATE_BATCH_TOKENS = "spark.tp.generate.max-batch-tokens";
  public static final String GENERATE_BATCH_TOKENS_DEFAULT = "2048";

  /**
   * The value of {@code key}: {@code options} (when it holds the key) wins over the session conf, which
   * wins over {@code def}.
   */
  public static String resolve(SparkSession spark, Map<String, String> options, String key, String def) {
    if (options != null && options.get(key) != null) {
      return options.get(key);
    }
    if (spark != null) {
      String v = spark.conf().get(key, null);
      if (v != null) {
        return v;
      }
    }
    return def;
  }

  /** Parses an integer setting, with an error naming the key. */
  public static int parseInt(String key, String value, int min) {
    try {
      int n = Integer.parseInt(value == null ? "" : value.trim());
      if (n < min) {
        throw new NumberFormatException("below " + min);
      }
      return n;
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("Invalid value for " + key + ": '" + value + "' (use an integer >= " + min
          + ")", e);
    }
  }

  /** Parses a boolean setting ({@code true} or {@code false}), with an error naming the key. */
  public static boolean parseBoolean(String key, String value) {
    String v = value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
    if (v.equals("true") || v.equals("false")) {
      return v.equals("true");
    }
    throw new IllegalArgumentException("Invalid value for " + key + ": '" + value + "' (use true or false)");
  }

  /** Parses a port range {@code min-max} (or a single port); returns {@code {0, 0}} for an empty value. */
  public static int[] parsePortRange(String key, String value) {
    String v = value == null ? "" : value.trim();
    if (v.isEmpty()) {
      return new int[] {0, 0};
    }
    try {
      String[] parts = v.split("-", -1);
      int lo = Integer.parseInt(parts[0].trim());
      int hi = parts.length == 1 ? lo : Integer.parseInt(parts[1].trim());
      if (parts.length > 2 || lo < 1 || hi > 65535 || lo > hi) {
        throw new NumberFormatException("bad bounds");
      }
      return new int[] {lo, hi};
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("Invalid port range for " + key + ": '" + value
          + "' (use min-max within 1-65535, e.g. 40000-40100, or leave it empty for any free port)", e);
    }
  }

  /** Parses a duration ({@code 500ms}, {@code 30s}, {@code 5m}, {@code 1h}, bare number = seconds) into milliseconds. */
  public static long parseDurationMillis(String key, String value) {
    String v = value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
    long mult;
    String num;
    if (v.endsWith("ms")) {
      mult = 1;
      num = v.substring(0, v.length() - 2);
    } else if (v.endsWith("s")) {
      mult = 1000;
      num = v.substring(0, v.length() - 1);
    } else if (v.endsWith("min")) {
      mult = 60_000;
      num = v.substring(0, v.length() - 3);
    } else if (v.endsWith("m")) {
      mult = 60_000;
      num = v.substring(0, v.length() - 1);
    } else if (v.endsWith("h")) {
      mult = 3_600_000;
      num = v.substring(0, v.length() - 1);
    } else if (v.endsWith("d")) {
      mult = 86_400_000;
      num = v.substring(0, v.length() - 1);
    } else {
      mult = 1000;
      num = v;
    }
    try {
      long n = Long.parseLong(num.trim());
      if (n <= 0) {
        throw new NumberFormatException("not positive");
      }
      return Math.multiplyExact(n, mult);
    } catch (NumberFormatException | ArithmeticException e) {
      throw new IllegalArgumentException("Invalid duration for " + key + ": '" + value
          + "' (use a positive number with a unit: 500ms, 30s, 5m, 1h)", e);
    }
  }

  /** Parses a size ({@code 4096}, {@code 512k}, {@code 1m}, {@code 1g}; binary units) into bytes. */
  public static long parseBytes(String key, String value) {
    String v = value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
    if (v.endsWith("b")) {
      v = v.substring(0, v.length() - 1);
    }
    long mult = 1;
    if (v.endsWith("k")) {
      mult = 1L << 10;
    } else if (v.endsWith("m")) {
      mult = 1L << 20;
    } else if (v.endsWith("g")) {
      mult = 1L << 30;
    }
    if (mult != 1) {
      v = v.substring(0, v.length() - 1);
    }
    try {
      long n = Long.parseLong(v.trim());
      if (n <= 0) {
        throw new NumberFormatException("not positive");
      }
      return Math.multiplyExact(n, mult);
    } catch (NumberFormatException | ArithmeticException e) {
      throw new IllegalArgumentException("Invalid size for " + key + ": '" + value
          + "' (use a positive number of bytes, optionally with k, m or g: 512k, 1m)", e);
    }
  }
}
