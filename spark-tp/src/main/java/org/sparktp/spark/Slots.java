package org.sparktp.spark;

import org.apache.spark.SparkContext;

/**
 * Task slots of the cluster, and the checks a barrier stage of {@code groups x tpSize} tasks needs before
 * it starts (Spark would otherwise wait for slots, or fail later with a less specific message).
 *
 * <p>Slots are what Spark's own barrier check counts: {@code SparkContext.maxNumConcurrentTasks} for the
 * default resource profile, i.e. {@code N} on {@code local[N]} and the sum over registered executors of
 * {@code cores / spark.task.cpus} on a cluster; where that is unavailable, {@code
 * sc.defaultParallelism()}. Slots taken by other running jobs are not subtracted, and executors that have
 * not registered yet are not counted.
 */
final class Slots {
  private Slots() {}

  static int of(SparkContext sc) {
    try {
      return sc.maxNumConcurrentTasks(sc.resourceProfileManager().defaultResourceProfile());
    } catch (RuntimeException | LinkageError e) {
      return sc.defaultParallelism();
    }
  }

  static boolean dynamicAllocation(SparkContext sc) {
    return sc.getConf().getBoolean("spark.dynamicAllocation.enabled", false);
  }

  /**
   * The slots of {@code sc}; off local mode, waits up to {@code waitMillis} for executors to register
   * until there are at least {@code need} (executors that are still starting count no slots).
   */
  static int await(SparkContext sc, int need, long waitMillis) {
    int slots = of(sc);
    long deadline = System.nanoTime() + waitMillis * 1_000_000L;
    while (slots < need && !sc.isLocal() && System.nanoTime() < deadline) {
      try {
        Thread.sleep(200);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        break;
      }
      slots = of(sc);
    }
    return slots;
  }

  /** Groups when none are asked for: as many groups of {@code tpSize} as the slots allow. */
  static int defaultGroups(int slots, int tpSize) {
    int g = slots / tpSize;
    if (g < 1) {
      throw new IllegalStateException("A tensor-parallel group of tpSize " + tpSize + " needs " + tpSize
          + " task slots at once, but the cluster has " + slots + "; lower tpSize or add executors/cores");
    }
    return g;
  }

  /** Throws, saying what to change, when a barrier stage of {@code groups x tpSize} tasks cannot start. */
  static void check(boolean dynamicAllocation, int slots, int groups, int tpSize) {
    if (dynamicAllocation) {
      throw new IllegalStateException("Tensor-parallel inference runs in a barrier stage, which Spark does not"
          + " allow with dynamic allocation: set spark.dynamicAllocation.enabled=false (and a fixed"
          + " spark.executor.instances) for this application");
    }
    long need = (long) groups * tpSize;
    if (need > slots) {
      throw new IllegalStateException("Tensor-parallel inference needs " + groups + " group(s) x tpSize " + tpSize
          + " = " + need + " task slots at once, but the cluster has " + slots + " (executor cores /"
          + " spark.task.cpus; local[N] has N): lower groups (or leave it unset for as many as fit) or tpSize, or"
          + " add executors/cores");
    }
  }
}
