package org.sparktp.spark;

import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.spark.SparkConf;
import org.apache.spark.SparkContext;
import org.bytedeco.javacpp.Pointer;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.nn.plan.MemoryEstimate;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.tensor.DType;

/**
 * Memory of the ranks: the off-heap budget of the JVMs they run in and the check of a job's estimate against it,
 * before the job ({@link #check}); and what an {@link OutOfMemoryError} in a rank becomes. Spark treats an {@code Error} thrown by a
 * task as fatal to its JVM (in local mode the driver's: the SparkContext goes down and the application exits with
 * 52), also one with an Error among its causes; a rank frees what it allocated and fails its attempt with an
 * {@link IllegalStateException} instead (the Error not chained), naming the setting to raise.
 */
public final class RankMemory {
  private static final org.slf4j.Logger LOG = org.slf4j.LoggerFactory.getLogger(RankMemory.class);
  /** The JavaCPP system property that caps its off-heap allocations (default: the JVM's {@code -Xmx}). */
  static final String MAX_BYTES = "org.bytedeco.javacpp.maxBytes";

  private RankMemory() {}

  /**
   * The task failure for {@code e}, thrown in rank {@code rank} of group {@code group} after the rank freed its
   * communicator, its rank model and its buffers: off-heap (JavaCPP's {@code Cannot allocate new BytePointer}, a
   * native allocation) or the Java heap, with the setting that sizes it.
   */
  static IllegalStateException outOfMemory(OutOfMemoryError e, int rank, int group) {
    String msg = String.valueOf(e.getMessage());
    boolean heap = msg.contains("Java heap space") || msg.contains("GC overhead") || msg.contains("array size");
    String where = "Rank " + rank + " of group " + group + " ran out of ";
    IllegalStateException out;
    if (heap) {
      out = new IllegalStateException(where + "Java heap (" + msg + "; max heap " + mib(Runtime.getRuntime()
          .maxMemory()) + "): raise spark.executor.memory (local masters: the driver's -Xmx, SPARK_TP_JAVA_OPTS for"
          + " bin/spark-tp), or lower spark.tp.batch-tokens / spark.tp.batch-size");
    } else {
      out = new IllegalStateException(where + "off-heap memory (" + msg + "; this JVM's budget " + MAX_BYTES + "="
          + mib(Pointer.maxBytes()) + ", in use " + mib(Pointer.totalBytes()) + "): raise -D" + MAX_BYTES
          + " in spark.executor.extraJavaOptions and spark.executor.memoryOverhead with it (local masters: a driver"
          + " JVM option, SPARK_TP_JAVA_OPTS for bin/spark-tp), or lower spark.tp.batch-tokens /"
          + " spark.tp.kv-cache.max-bytes; 'spark-tp explain' prints what a rank needs");
    }
    // not chained: Spark's executor treats an exception with an Error among its causes as fatal to its JVM
    // (spark.executor.killOnFatalError.depth); the Error's stack goes to the log
    LOG.warn("spark-tp rank {} of group {}: {}", rank, group, e.toString(), e);
    out.setStackTrace(e.getStackTrace());
    return out;
  }

  private static final Pattern MAX_BYTES_OPTION = Pattern.compile("-D" + Pattern.quote(MAX_BYTES) + "=(\\S+)");

  /**
   * The off-heap budget of one JVM that runs ranks: {@code bytes} shared by up to {@code ranks} ranks, {@code where}
   * it comes from and the {@code setting} that raises it.
   */
  record Budget(long bytes, int ranks, String where, String setting) {}

  /**
   * The budget of the JVMs that run the {@code tasks} ranks of a job on {@code sc}: with a local master the driver's
   * own JavaCPP cap ({@link Pointer#maxBytes()}: ranks run in the driver, as many at once as there are slots); on a
   * cluster, the {@code -D}{@value #MAX_BYTES} option of {@code spark.executor.extraJavaOptions}, else JavaCPP's
   * default, the executor's heap ({@code spark.executor.memory}), shared by the ranks one executor runs at once.
   */
  static Budget budget(SparkContext sc, int tasks) {
    if (sc.isLocal()) {
      return new Budget(Pointer.maxBytes(), Math.max(1, Math.min(tasks, Slots.of(sc))), "the driver's " + MAX_BYTES
          + ", where a local master runs the ranks", "-D" + MAX_BYTES + " (a JVM option of the driver:"
          + " SPARK_TP_JAVA_OPTS for bin/spark-tp, which sizes it from the machine, or spark.driver.extraJavaOptions)");
    }
    SparkConf conf = sc.getConf();
    int perExecutor;
    if (conf.contains("spark.executor.cores")) {
      perExecutor = Math.max(1, conf.getInt("spark.executor.cores", 1) / Math.max(1, conf.getInt("spark.task.cpus",
          1)));
    } else {
      int executors = Math.max(1, sc.statusTracker().getExecutorInfos().length - 1);
      perExecutor = (tasks + executors - 1) / executors;
    }
    int ranks = Math.max(1, Math.min(tasks, perExecutor));
    Matcher m = MAX_BYTES_OPTION.matcher(conf.get("spark.executor.extraJavaOptions", ""));
    if (m.find()) {
      return new Budget(TpConf.parseBytes("-D" + MAX_BYTES, m.group(1)), ranks, "-D" + MAX_BYTES
          + " in spark.executor.extraJavaOptions", "-D" + MAX_BYTES + " in spark.executor.extraJavaOptions (and"
          + " spark.executor.memoryOverhead with it)");
    }
    return new Budget(conf.getSizeAsBytes("spark.executor.memory", "1g"), ranks, "spark.executor.memory (JavaCPP's"
        + " off-heap cap follows the executor heap)", "-D" + MAX_BYTES + " in spark.executor.extraJavaOptions (and"
        + " spark.executor.memoryOverhead with it), or spark.executor.memory");
  }

  /**
   * The workload of a job with {@code settings} for the estimate: the batch settings, {@code maxNewTokens} (0: not
   * generating) and the KV cache budget; prompt lengths unknown (bounded by the token budget).
   */
  static MemoryEstimate.Workload workload(TpSettings settings, int maxNewTokens) {
    return new MemoryEstimate.Workload(settings.getInt(TpConf.BATCH_SIZE, 1), settings.getInt(TpConf.BATCH_TOKENS, 1),
        settings.getInt(TpConf.GENERATE_BATCH_TOKENS, 1), 0, maxNewTokens, settings.bytes(TpConf.KV_CACHE_MAX_BYTES));
  }

  /**
   * Fails before the job, in one line naming the setting to raise and by how much, when the ranks of a job of
   * {@code groups x tp} tasks cannot fit the off-heap budget of the JVMs they run in: the largest rank's
   * {@link MemoryEstimate} times the ranks one JVM runs. Only for the CPU backend (a GPU's memory is not JavaCPP's);
   * {@code spark.tp.memory.check=false} skips it.
   */
  static void check(SparkContext sc, ModelPlan plan, DType storage, DType activations, TpSettings settings,
      int groups, int maxNewTokens) {
    String backend = settings.get(TpConf.BACKEND).trim().toLowerCase(java.util.Locale.ROOT);
    boolean gpu = backend.equals("cuda") || backend.equals("auto")
        && sc.getConf().contains("spark.task.resource.gpu.amount");
    if (gpu || !settings.bool(TpConf.MEMORY_CHECK)) {
      return;
    }
    MemoryEstimate e = MemoryEstimate.largest(plan, storage, activations, workload(settings, maxNewTokens));
    Budget b = budget(sc, groups * plan.tpSize());
    String problem = problem(e, b);
    if (problem != null) {
      throw new IllegalArgumentException(problem);
    }
  }

  /** The one-line error when {@code b.ranks} ranks of estimate {@code e} exceed {@code b}, else null. */
  static String problem(MemoryEstimate e, Budget b) {
    long need = b.ranks() * e.offHeap();
    if (need <= b.bytes()) {
      return null;
    }
    return "Not enough off-heap memory for the ranks: each needs about " + MemoryEstimate.size(e.offHeap())
        + " (weights " + MemoryEstimate.size(e.weights()) + " in " + e.storage().id() + ", KV cache "
        + MemoryEstimate.size(e.kvCache()) + ", activations " + MemoryEstimate.size(e.activations()) + ", logits "
        + MemoryEstimate.size(e.logits()) + "; 'spark-tp explain' itemizes it) and one JVM runs " + b.ranks()
        + " of them: " + MemoryEstimate.size(need) + ", more than " + MemoryEstimate.size(b.bytes()) + " (" + b.where()
        + "); raise " + b.setting() + " by at least " + mib(need - b.bytes()) + " (to " + mib(need) + " or more),"
        + " or lower spark.tp.batch-tokens / spark.tp.kv-cache.max-bytes, or raise tp (spark.tp.memory.check=false"
        + " skips this check)";
  }

  /** The share of the machine's memory the launcher's off-heap default leaves to the JVMs (heap included). */
  static final double MACHINE_SHARE = 0.85;

  /** The machine's physical memory (the container's limit where there is one), or 0 when unknown. */
  static long machineBytes() {
    try {
      return java.lang.management.ManagementFactory.getPlatformMXBean(com.sun.management.OperatingSystemMXBean.class)
          .getTotalMemorySize();
    } catch (IllegalArgumentException | NullPointerException e) { // a JVM without it
      return 0;
    }
  }

  /**
   * The off-heap budget of {@code jvms} JVMs of {@code heap} bytes each sharing a machine of {@code machine} bytes
   * with {@code otherHeap} more bytes of heap: {@value #MACHINE_SHARE} of the machine less the heaps, split evenly,
   * at least 1 GiB.
   */
  static long machineShare(long machine, long otherHeap, long heap, int jvms) {
    long rest = (long) (MACHINE_SHARE * machine) - otherHeap - (long) jvms * heap;
    return Math.max(1L << 30, rest / Math.max(1, jvms));
  }

  /**
   * Sizes this JVM's JavaCPP off-heap budget from the machine (the CLI's launcher, before any JavaCPP class loads:
   * a local master runs the ranks in the driver): {@value #MAX_BYTES} = {@value #MACHINE_SHARE} of the machine's
   * memory less the heap, unless already set. Returns the value set, or -1 when it was set already or the machine's
   * memory is unknown.
   */
  public static long sizeFromMachine() {
    long machine = machineBytes();
    if (System.getProperty(MAX_BYTES) != null || machine <= 0) {
      return -1;
    }
    long b = machineShare(machine, 0, Runtime.getRuntime().maxMemory(), 1);
    System.setProperty(MAX_BYTES, Long.toString(b));
    return b;
  }

  /**
   * The {@code -D}{@value #MAX_BYTES} option executors get when the CLI starts the session (null: none, JavaCPP's
   * default, the executor heap): {@code spark.executor.memoryOverhead} plus {@code spark.memory.offHeap.size} (when
   * {@code spark.memory.offHeap.enabled}) where either is set; for {@code local-cluster[N, C, MB]} without them, the
   * machine's share ({@link #machineShare}) of each of the N executors of MB of heap next to the driver's heap.
   */
  public static String executorOption(java.util.Map<String, String> conf, int localClusterExecutors,
      long executorHeap) {
    long overhead = conf.containsKey("spark.executor.memoryOverhead")
        ? org.apache.spark.network.util.JavaUtils.byteStringAsBytes(withUnit(conf.get("spark.executor.memoryOverhead")))
        : 0;
    long offHeap = Boolean.parseBoolean(conf.getOrDefault("spark.memory.offHeap.enabled", "false"))
        ? org.apache.spark.network.util.JavaUtils.byteStringAsBytes(conf.getOrDefault("spark.memory.offHeap.size", "0"))
        : 0;
    long b;
    if (overhead + offHeap > 0) {
      b = overhead + offHeap;
    } else if (localClusterExecutors > 0 && machineBytes() > 0) {
      b = machineShare(machineBytes(), Runtime.getRuntime().maxMemory(), executorHeap, localClusterExecutors);
    } else {
      return null;
    }
    return "-D" + MAX_BYTES + "=" + b;
  }

  /** Spark reads a bare number of spark.executor.memoryOverhead as MiB. */
  private static String withUnit(String v) {
    String t = v.trim();
    return t.chars().allMatch(Character::isDigit) ? t + "m" : t;
  }

  static String mib(long bytes) {
    return (bytes + (1 << 19)) / (1 << 20) + "m";
  }
}
