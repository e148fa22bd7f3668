package org.sparktp.spark;

import java.util.Collections;
import java.util.Map;
import java.util.WeakHashMap;
import org.apache.spark.ExceptionFailure;
import org.apache.spark.SparkContext;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerTaskEnd;

/**
 * Failures that a retry cannot cure are not retried: a rank of a spark-tp job that fails with an
 * {@link IllegalArgumentException} thrown by spark-tp (bad input or settings, such as a row's id outside the
 * vocabulary or a KV cache budget one row does not fit) fails the same way every time, so its stage is cancelled
 * with that message instead of being run again (Spark retries a failed barrier stage up to
 * {@code spark.stage.maxConsecutiveAttempts} times whatever the cause). Communication failures, lost executors and
 * killed tasks keep Spark's retries.
 */
final class DeterministicFailures extends SparkListener {
  /** What the cancelled job's message starts its reason with. */
  static final String REASON = "spark-tp: a deterministic failure (not retried): ";
  private static final Map<SparkContext, DeterministicFailures> WATCHERS =
      Collections.synchronizedMap(new WeakHashMap<>());
  private final SparkContext sc;

  private DeterministicFailures(SparkContext sc) {
    this.sc = sc;
  }

  /** Watches the tasks of {@code sc} (once per context). */
  static void watch(SparkContext sc) {
    WATCHERS.computeIfAbsent(sc, c -> {
      DeterministicFailures d = new DeterministicFailures(c);
      c.addSparkListener(d);
      return d;
    });
  }

  /** True for an exception spark-tp threw because of its input or settings: one a retry would throw again. */
  static boolean deterministic(String className, StackTraceElement[] stack) {
    return className.equals(IllegalArgumentException.class.getName()) && stack.length > 0
        && stack[0].getClassName().startsWith("org.sparktp.");
  }

  /**
   * True for a deterministic failure of a rank (a barrier task: Spark retries its whole stage whatever the cause);
   * other tasks (the tag stage's row checks) are left to {@code spark.task.maxFailures}, and fail with their cause.
   */
  static boolean deterministicInRank(String className, StackTraceElement[] stack) {
    if (!deterministic(className, stack)) {
      return false;
    }
    for (StackTraceElement e : stack) {
      if (e.getClassName().startsWith(RankTask.class.getName())) {
        return true;
      }
    }
    return false;
  }

  @Override
  public void onTaskEnd(SparkListenerTaskEnd end) {
    if (end.reason() instanceof ExceptionFailure f && deterministicInRank(f.className(), f.stackTrace())) {
      sc.cancelStage(end.stageId(), REASON + f.description());
    }
  }
}
