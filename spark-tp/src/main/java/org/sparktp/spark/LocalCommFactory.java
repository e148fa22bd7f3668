package org.sparktp.spark;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.SparkContext;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.LocalCommunicator;

/**
 * Communicators for ranks that are tasks of one JVM ({@code local[N]}): the ranks of a group meet in a
 * static registry of {@link LocalCommunicator.Group}s keyed by (job, stage, stage attempt, group), so a
 * retried attempt gets fresh groups. An entry leaves the registry once all its ranks have taken their
 * communicator, or, when some never come (an attempt killed early), twice the timeout after it was made.
 */
public final class LocalCommFactory implements CommFactory {
  private static final long serialVersionUID = 1L;

  private record Entry(LocalCommunicator.Group group, AtomicInteger taken, long created) {}

  private static final ConcurrentHashMap<String, Entry> GROUPS = new ConcurrentHashMap<>();

  @Override
  public void checkCluster(SparkContext sc, int tpSize) {
    if (tpSize > 1 && !sc.isLocal()) {
      throw new IllegalStateException("The in-JVM communicator needs every rank in one JVM, but master '"
          + sc.master() + "' runs tasks in several executors: set spark.tp.comm.transport to tcp (or auto), or use a"
          + " local[N] master");
    }
  }

  @Override
  public Communicator create(BarrierTaskContext ctx, String jobKey, int group, int tpSize, int rank,
      long timeoutMillis) {
    String key = jobKey + "/" + ctx.stageId() + "." + ctx.stageAttemptNumber() + "/" + group;
    long now = System.nanoTime();
    // a group whose ranks never all came (an attempt killed early) is dropped after twice the timeout
    GROUPS.values().removeIf(e -> now - e.created() > 2_000_000L * timeoutMillis);
    Entry e = GROUPS.computeIfAbsent(key,
        k -> new Entry(new LocalCommunicator.Group(tpSize, timeoutMillis), new AtomicInteger(), now));
    if (e.taken().incrementAndGet() == tpSize) {
      GROUPS.remove(key);
    }
    return e.group().communicator(rank);
  }

  /** Groups waiting for ranks (for tests). */
  static int pending() {
    return GROUPS.size();
  }
}
