package org.sparktp.spark;

import org.bytedeco.javacpp.Pointer;

/**
 * Memory of the ranks: what an {@link OutOfMemoryError} in a rank becomes. Spark treats an {@code Error} thrown by a
 * task as fatal to its JVM (in local mode the driver's: the SparkContext goes down and the application exits with
 * 52), also one with an Error among its causes; a rank frees what it allocated and fails its attempt with an
 * {@link IllegalStateException} instead (the Error not chained), naming the setting to raise.
 */
final class RankMemory {
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

  static String mib(long bytes) {
    return (bytes + (1 << 19)) / (1 << 20) + "m";
  }
}
