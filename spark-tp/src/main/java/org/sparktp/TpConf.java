package org.sparktp;

import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.sparktp.comm.tcp.TcpOptions;

/**
 * Every {@code spark.tp.*} configuration key, with its default. An option given on a call wins over a local
 * property, which wins over the session conf, which wins over the default: resolved once, in {@link TpSettings}.
 * Durations are strings such as {@code 500ms}, {@code 30s}, {@code 5m} (a bare number is seconds); sizes such as
 * {@code 512k}, {@code 1m} (a bare number is bytes).
 */
public final class TpConf {
  private TpConf() {}

  /** Bound on every wait of a communicator (a receive, a send, the rendezvous). */
  public static final String COMM_TIMEOUT = "spark.tp.comm.timeout";
  public static final String COMM_TIMEOUT_DEFAULT = "120s";

  /**
   * Largest frame the TCP communicator sends; large messages are split into chunks of this size and pipelined (a
   * multiple of 4 bytes from 4k to 64m).
   */
  public static final String COMM_CHUNK_BYTES = "spark.tp.comm.chunk-bytes";
  public static final String COMM_CHUNK_BYTES_DEFAULT = "1m";

  /** Ports the communicator may listen on, {@code min-max} (for firewalls); empty: any free (ephemeral) port. */
  public static final String COMM_PORT_RANGE = "spark.tp.comm.port-range";
  public static final String COMM_PORT_RANGE_DEFAULT = "";

  /**
   * Shared-memory data path of the TCP communicator: {@code auto} (a group whose ranks are all on one host moves data
   * through a segment of about 2 x ranks x {@code chunk-bytes} in {@code /dev/shm}; TCP if it cannot be made) or
   * {@code off} (TCP only).
   */
  public static final String COMM_SHM = "spark.tp.comm.shm";
  public static final String COMM_SHM_DEFAULT = "auto";

  /**
   * How the ranks of a group talk: {@code auto} (NCCL when the job runs on GPUs: backend {@code cuda}, or {@code auto}
   * with {@code spark.task.resource.gpu.amount} > 0; else in-JVM on a {@code local[N]} master, else TCP),
   * {@code local}, {@code tcp} or {@code nccl}.
   */
  public static final String COMM_TRANSPORT = "spark.tp.comm.transport";
  public static final String COMM_TRANSPORT_DEFAULT = "auto";

  /** Off local mode, how long {@code transform} waits for executors to register enough task slots before it fails. */
  public static final String SLOTS_WAIT = "spark.tp.slots.wait";
  public static final String SLOTS_WAIT_DEFAULT = "30s";

  /** Rows each rank brings to one step of the group (the micro-batch). */
  public static final String BATCH_SIZE = "spark.tp.batch-size";
  public static final String BATCH_SIZE_DEFAULT = "1024";

  /**
   * Compute backend of the ranks: {@code auto} (CUDA when the task has a GPU and the CUDA libraries load, else the CPU
   * with the reason logged), {@code cpu} or {@code cuda}.
   */
  public static final String BACKEND = "spark.tp.backend";
  public static final String BACKEND_DEFAULT = "auto";

  /** Older name of {@code spark.tp.cpu.threads} (threads per rank on the CPU backend); that one wins when it is not 1. */
  public static final String CPU_BLAS_THREADS = "spark.tp.cpu.blas-threads";
  public static final String CPU_BLAS_THREADS_DEFAULT = "1";

  // --- issue 9: precision and CPU kernels ---

  /** Storage and GEMM input type of the weights: {@code auto} (bf16 where the CPU has AMX or AVX512-BF16 and the checkpoint is bf16/f16, else f32), {@code f32}, {@code bf16}, {@code f16}, {@code int8} (W8A8: per-output-channel weight scales, activations quantized per row on the fly, s8 x s8 GEMMs; never chosen by auto), {@code int8-wo} (int8 weight-only, per-output-channel scales, float activations). */
  public static final String DTYPE = "spark.tp.dtype";
  public static final String DTYPE_DEFAULT = "auto";

  /** Threads of each rank on the CPU backend: one pool for attention, norms, activations and OpenBLAS GEMMs, and oneDNN's OpenMP team on the calling thread (one per rank keeps the ranks of a JVM from oversubscribing); wins over {@code spark.tp.cpu.blas-threads}. */
  public static final String CPU_THREADS = "spark.tp.cpu.threads";
  public static final String CPU_THREADS_DEFAULT = "1";

  /**
   * GEMM of the CPU backend: {@code auto} (oneDNN for every dtype where its ISA is AVX2 or better, else OpenBLAS for f32 weights
   * and oneDNN for bf16/f16/int8/int8-wo), {@code onednn} (every dtype) or {@code openblas} (f32 only; half weights are widened
   * at load, int8 weights dequantized to f32).
   */
  public static final String CPU_GEMM = "spark.tp.cpu.gemm";
  public static final String CPU_GEMM_DEFAULT = "auto";

  // --- issue 9b: activation dtype ---

  /** Storage type of the activations handed from op to op: {@code auto} (that of the weights, {@code spark.tp.dtype} resolved; bf16 for int8 weights), {@code f32}, {@code bf16}, {@code f16}; ops compute in f32 inside and partial sums are reduced in f32. */
  public static final String ACTIVATION_DTYPE = "spark.tp.activation-dtype";
  public static final String ACTIVATION_DTYPE_DEFAULT = "auto";

  /** Bound on the weights held by the executor-side cache of loaded rank models (LRU eviction beyond it). */
  public static final String CACHE_MAX_BYTES = "spark.tp.cache.max-bytes";
  public static final String CACHE_MAX_BYTES_DEFAULT = "4g";

  /** What a null input value does: {@code error} (fail, naming the column and count), {@code skip} (drop the row) or {@code null} (null output). */
  public static final String NULL_POLICY = "spark.tp.null-policy";
  public static final String NULL_POLICY_DEFAULT = "error";

  /**
   * What a row that cannot run does (null, empty, too long, ids outside the vocabulary, a wrong width, a conversation
   * its chat template cannot render): {@code fail} (the job fails, naming the column and row), {@code null} (null
   * outputs, the other rows run) or {@code column} (null outputs and the cause in a string column {@code error}; null
   * for the rows that ran).
   */
  public static final String ON_ERROR = "spark.tp.on-error";
  public static final String ON_ERROR_DEFAULT = "fail";

  /**
   * Prefix of model names for SQL: {@code spark.tp.models.<name>=<model directory>} lets
   * {@code tp_predict('<name>', ...)} find it and {@code tp_models()} list it.
   */
  public static final String MODELS_PREFIX = "spark.tp.models.";

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

  /**
   * Before a job, check that its ranks fit the off-heap budget of the JVMs they run in (JavaCPP's
   * {@code org.bytedeco.javacpp.maxBytes}; see docs/memory.md); the CPU backend only. {@code false} skips it.
   */
  public static final String MEMORY_CHECK = "spark.tp.memory.check";
  public static final String MEMORY_CHECK_DEFAULT = "true";

  /**
   * Tests only: the rank (partition of the barrier stage) that throws an {@code OutOfMemoryError} (as JavaCPP's) in
   * every attempt; -1 = none.
   */
  public static final String TEST_OOM_RANK = "spark.tp.test.oom-rank";
  public static final String TEST_OOM_RANK_DEFAULT = "-1";

  // --- issue 10: transformers (sequences, tasks) ---

  /**
   * Transformers: token budget of one micro-batch per rank (rows are also bounded by {@code spark.tp.batch-size}; a
   * longer row runs alone).
   */
  public static final String BATCH_TOKENS = "spark.tp.batch-tokens";
  public static final String BATCH_TOKENS_DEFAULT = "8192";

  /**
   * Transformers: a row longer than {@code max_position_embeddings} fails naming the row ({@code false}); {@code true}
   * keeps its first tokens (text: the tokenizer truncates, keeping special tokens; task generate keeps the last tokens
   * that leave room for {@code maxNewTokens}).
   */
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
   * Task generate: a row whose prompt starts like a row already in the group's micro-batch copies that row's keys and
   * values of the common prefix into its KV cache instead of computing them ({@code true}; the same values, so the
   * same tokens), or computes its whole prompt ({@code false}).
   */
  public static final String GENERATE_PREFIX_SHARING = "spark.tp.generate.prefix-sharing";
  public static final String GENERATE_PREFIX_SHARING_DEFAULT = "true";

  // --- issue 13: CUDA backend and NCCL ---

  /** Lets fp32 GEMMs on the GPU use TF32 tensor cores (about 1e-3 relative error instead of 1e-6). */
  public static final String CUDA_TF32 = "spark.tp.cuda.tf32";
  public static final String CUDA_TF32_DEFAULT = "false";

  /** cuBLASLt workspace per CUDA backend (32 MiB suits Hopper). */
  public static final String CUDA_WORKSPACE_BYTES = "spark.tp.cuda.workspace-bytes";
  public static final String CUDA_WORKSPACE_BYTES_DEFAULT = "32m";

  /** Size of each of the CUDA backend's pinned host staging buffers (uploads/downloads go through them). */
  public static final String CUDA_STAGING_BYTES = "spark.tp.cuda.staging-bytes";
  public static final String CUDA_STAGING_BYTES_DEFAULT = "16m";

  // ===== Known keys and their checks (issue 8) ====================================================
  // Every public String constant of this class whose value starts with "spark.tp." is a known key (its
  // default is the constant named <NAME>_DEFAULT); a constant whose value ends in "." declares a prefix
  // family (every key under it is known, e.g. "spark.tp.models."). Any other spark.tp.* key is an error
  // that suggests the nearest known one. To check a key's value on the driver before any job, add one
  // line to CHECKS (a key without a line is accepted as any string).

  /** Checks one value; throws {@link IllegalArgumentException} with a message naming the key. */
  @FunctionalInterface
  public interface Check {
    void check(String key, String value);
  }

  private static final Map<String, Check> CHECKS = Map.ofEntries(
      Map.entry(COMM_TIMEOUT, TpConf::parseDurationMillis),
      Map.entry(COMM_CHUNK_BYTES, TpConf::checkChunkBytes),
      Map.entry(COMM_PORT_RANGE, TpConf::parsePortRange),
      Map.entry(COMM_SHM, oneOf("auto", "off")),
      Map.entry(COMM_TRANSPORT, oneOf("auto", "local", "tcp", "nccl")),
      Map.entry(SLOTS_WAIT, TpConf::parseDurationMillis),
      Map.entry(BATCH_SIZE, (k, v) -> parseInt(k, v, 1)),
      Map.entry(BACKEND, oneOf("auto", "cpu", "cuda")),
      Map.entry(CPU_BLAS_THREADS, (k, v) -> parseInt(k, v, 1)),
      Map.entry(CACHE_MAX_BYTES, TpConf::parseBytes),
      Map.entry(NULL_POLICY, oneOf("error", "skip", "null")),
      Map.entry(ON_ERROR, oneOf("fail", "null", "column")),
      Map.entry(TP_SIZE, (k, v) -> parseInt(k, v, 1)),
      Map.entry(GROUPS, (k, v) -> parseInt(k, v, 0)),
      Map.entry(RETRYABLE, TpConf::parseBoolean),
      Map.entry(TEST_FAIL_RANK, (k, v) -> parseInt(k, v, -1)),
      Map.entry(TEST_OOM_RANK, (k, v) -> parseInt(k, v, -1)),
      Map.entry(MEMORY_CHECK, TpConf::parseBoolean),
      Map.entry(BATCH_TOKENS, (k, v) -> parseInt(k, v, 1)),
      Map.entry(TRUNCATE, TpConf::parseBoolean),
      Map.entry(KV_CACHE_MAX_BYTES, TpConf::parseBytes),
      Map.entry(GENERATE_BATCH_TOKENS, (k, v) -> parseInt(k, v, 1)),
      Map.entry(GENERATE_PREFIX_SHARING, TpConf::parseBoolean),

      Map.entry(DTYPE, (k, v) -> {
        if (!v.trim().equalsIgnoreCase("auto")) {
          org.sparktp.tensor.DType.parseStorage(v, k);
        }
      }),
      Map.entry(CPU_THREADS, (k, v) -> parseInt(k, v, 1)),
      Map.entry(CPU_GEMM, oneOf("auto", "openblas", "onednn")),

      // issue 9b
      Map.entry(ACTIVATION_DTYPE, (k, v) -> org.sparktp.backend.Precision.activation(v, org.sparktp.tensor.DType.F32, k)));

  // ===== end of the known-key block ================================================================

  /** A check that accepts one of {@code values} (case-insensitive, trimmed). */
  public static Check oneOf(String... values) {
    return (key, value) -> {
      String v = value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
      for (String ok : values) {
        if (ok.equals(v)) {
          return;
        }
      }
      throw new IllegalArgumentException("Invalid value for " + key + ": '" + value + "' (use "
          + String.join(", ", java.util.Arrays.asList(values).subList(0, values.length - 1))
          + (values.length > 1 ? " or " : "") + values[values.length - 1] + ")");
    };
  }

  /**
   * The TCP communicator's options with this secret: the {@code spark.tp.comm.*} keys present in {@code settings}
   * (timeout, chunk-bytes, shm; each checked as {@link #check} does), the defaults for the others.
   */
  public static TcpOptions tcpOptions(byte[] secret, Map<String, String> settings) {
    TcpOptions o = TcpOptions.withSecret(secret);
    String timeout = settings.get(COMM_TIMEOUT);
    if (timeout != null) {
      o = o.withTimeoutMillis(parseDurationMillis(COMM_TIMEOUT, timeout));
    }
    String chunk = settings.get(COMM_CHUNK_BYTES);
    if (chunk != null) {
      checkChunkBytes(COMM_CHUNK_BYTES, chunk);
      o = o.withChunkBytes((int) parseBytes(COMM_CHUNK_BYTES, chunk));
    }
    String shm = settings.get(COMM_SHM);
    if (shm != null) {
      check(COMM_SHM, shm);
      o = o.withShm(shm.trim().equalsIgnoreCase("auto"));
    }
    return o;
  }

  private static void checkChunkBytes(String key, String value) {
    long b = parseBytes(key, value);
    if (b < TcpOptions.MIN_CHUNK_BYTES || b > TcpOptions.MAX_CHUNK_BYTES || b % 4 != 0) {
      throw new IllegalArgumentException("Invalid value for " + key + ": '" + value + "' (use a multiple of 4 bytes"
          + " from 4k to 64m, e.g. 1m)");
    }
  }

  private static final class Registry {
    static final Map<String, String> DEFAULTS;
    static final List<String> FAMILIES;

    static {
      Map<String, String> d = new java.util.TreeMap<>();
      List<String> fam = new java.util.ArrayList<>();
      for (java.lang.reflect.Field f : TpConf.class.getFields()) {
        int m = f.getModifiers();
        if (f.getType() != String.class || !java.lang.reflect.Modifier.isStatic(m) || f.getName().endsWith("_DEFAULT")) {
          continue;
        }
        String v;
        try {
          v = (String) f.get(null);
        } catch (IllegalAccessException e) {
          throw new IllegalStateException(e);
        }
        if (v == null || !v.startsWith("spark.tp.")) {
          continue;
        }
        if (v.endsWith(".")) {
          fam.add(v);
          continue;
        }
        String def = null;
        try {
          def = (String) TpConf.class.getField(f.getName() + "_DEFAULT").get(null);
        } catch (NoSuchFieldException | IllegalAccessException e) {
          // a key without a default: unset unless given
        }
        d.put(v, def);
      }
      DEFAULTS = java.util.Collections.unmodifiableMap(d);
      FAMILIES = List.copyOf(fam);
    }
  }

  /** Every known key (not the prefix families), with its default (null where it has none). */
  public static Map<String, String> knownKeys() {
    return Registry.DEFAULTS;
  }

  /** Whether {@code key} is a known {@code spark.tp.*} key or lies in a declared prefix family. */
  public static boolean isKnown(String key) {
    return isKnown(key, Registry.DEFAULTS.keySet(), Registry.FAMILIES);
  }

  static boolean isKnown(String key, java.util.Set<String> keys, List<String> families) {
    if (keys.contains(key)) {
      return true;
    }
    for (String f : families) {
      if (key.startsWith(f) && key.length() > f.length()) {
        return true;
      }
    }
    return false;
  }

  /**
   * Checks one setting: a {@code spark.tp.*} key must be known (else the error suggests the nearest known
   * key) and its value must parse and lie in range. Keys outside {@code spark.tp.} are ignored.
   */
  public static void check(String key, String value) {
    if (key == null || !key.startsWith("spark.tp.")) {
      return;
    }
    if (!isKnown(key)) {
      throw new IllegalArgumentException("Unknown setting " + key + "; did you mean " + nearest(key)
          + "? (the spark.tp.* keys are listed in docs/configuration.md)");
    }
    Check c = CHECKS.get(key);
    if (c != null && value != null) {
      c.check(key, value);
    }
  }

  /** Checks every {@code spark.tp.*} entry of {@code settings} ({@link #check}). */
  public static void checkAll(Map<String, String> settings) {
    for (Map.Entry<String, String> e : settings.entrySet()) {
      check(e.getKey(), e.getValue());
    }
  }

  /** The known key (or prefix family) nearest to {@code key} by edit distance. */
  static String nearest(String key) {
    String best = null;
    int bestD = Integer.MAX_VALUE;
    List<String> candidates = new java.util.ArrayList<>(Registry.DEFAULTS.keySet());
    for (String f : Registry.FAMILIES) {
      candidates.add(f + "<name>");
    }
    for (String k : candidates) {
      int d = editDistance(key, k);
      if (d < bestD) {
        bestD = d;
        best = k;
      }
    }
    return best;
  }

  private static int editDistance(String a, String b) {
    int[] prev = new int[b.length() + 1];
    int[] cur = new int[b.length() + 1];
    for (int j = 0; j <= b.length(); j++) {
      prev[j] = j;
    }
    for (int i = 1; i <= a.length(); i++) {
      cur[0] = i;
      for (int j = 1; j <= b.length(); j++) {
        int sub = prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1);
        cur[j] = Math.min(sub, Math.min(prev[j] + 1, cur[j - 1] + 1));
      }
      int[] t = prev;
      prev = cur;
      cur = t;
    }
    return prev[b.length()];
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
