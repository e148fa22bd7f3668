package org.sparktp.cli;

import java.io.PrintStream;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.AccumulableInfo;
import org.apache.spark.scheduler.SparkListenerExecutorMetricsUpdate;
import org.apache.spark.scheduler.SparkListenerStageSubmitted;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.sql.SparkSession;

/**
 * Progress of a running command: rows done, rows/s, elapsed time and ETA. In a terminal it redraws one
 * line; otherwise it prints a plain line every 10 seconds (logs, CI). Rows are those the ranks of finished
 * tasks ran through the model (spark-tp's per-rank row accumulators); the ETA comes from the share of
 * finished tasks among the stages submitted so far.
 */
final class Progress extends SparkListener implements AutoCloseable {
  private final SparkSession spark;
  private final PrintStream err;
  private final String label;
  private final boolean terminal;
  private final long start = System.nanoTime();
  private final AtomicLong rows = new AtomicLong();
  private final AtomicLong tasksDone = new AtomicLong();
  private final AtomicLong tasksTotal = new AtomicLong();
  // issue 12: new tokens of task generate, of finished tasks and (from executor heartbeats) of running ones
  private final AtomicLong tokensDone = new AtomicLong();
  private final java.util.Map<Long, Long> tokensRunning = new java.util.concurrent.ConcurrentHashMap<>();
  private final Thread ticker;
  private volatile boolean stopped;
  private volatile boolean succeeded;

  Progress(SparkSession spark, PrintStream err, String label) {
    this.spark = spark;
    this.err = err;
    this.label = label;
    this.terminal = System.console() != null && System.getenv("SPARK_TP_PLAIN_PROGRESS") == null;
    spark.sparkContext().addSparkListener(this);
    ticker = new Thread(this::tick, "spark-tp-progress");
    ticker.setDaemon(true);
    ticker.start();
  }

  @Override
  public void onStageSubmitted(SparkListenerStageSubmitted stage) {
    tasksTotal.addAndGet(stage.stageInfo().numTasks());
  }

  @Override
  public void onExecutorMetricsUpdate(SparkListenerExecutorMetricsUpdate u) {
    scala.collection.Iterator<scala.Tuple4<Object, Object, Object, scala.collection.immutable.Seq<AccumulableInfo>>> it =
        u.accumUpdates().iterator();
    while (it.hasNext()) {
      scala.Tuple4<Object, Object, Object, scala.collection.immutable.Seq<AccumulableInfo>> t = it.next();
      scala.collection.Iterator<AccumulableInfo> as = t._4().iterator();
      while (as.hasNext()) {
        AccumulableInfo a = as.next();
        if (a.name().isDefined() && TOKENS.matcher(a.name().get()).matches() && a.update().isDefined()
            && a.update().get() instanceof Long n) {
          tokensRunning.put((Long) t._1(), n);
        }
      }
    }
  }

  @Override
  public void onTaskEnd(SparkListenerTaskEnd end) {
    tasksDone.incrementAndGet();
    tokensRunning.remove(end.taskInfo().taskId());
    scala.collection.Iterator<AccumulableInfo> it = end.taskInfo().accumulables().iterator();
    while (it.hasNext()) {
      AccumulableInfo a = it.next();
      if (a.name().isDefined() && a.update().isDefined() && TOKENS.matcher(a.name().get()).matches()
          && a.update().get() instanceof Long n) {
        tokensDone.addAndGet(n);
      }
      if (a.name().isDefined() && a.update().isDefined() && ROWS.matcher(a.name().get()).matches()
          && a.update().get() instanceof Long n) {
        rows.addAndGet(n);
      }
    }
  }

  private static final java.util.regex.Pattern ROWS = java.util.regex.Pattern.compile("spark-tp .* rank \\d+ rows");
  private static final java.util.regex.Pattern TOKENS = java.util.regex.Pattern.compile("spark-tp .* new tokens");

  private void tick() {
    long period = terminal ? 500 : 10_000;
    while (!stopped) {
      try {
        Thread.sleep(period);
      } catch (InterruptedException e) {
        return;
      }
      if (!stopped) {
        print(false);
      }
    }
  }

  private void print(boolean last) {
    double secs = (System.nanoTime() - start) / 1e9;
    long r = rows.get();
    long total = tasksTotal.get();
    long done = Math.min(tasksDone.get(), total);
    String eta = last ? "done" : done == 0 || total == 0 ? "ETA ?" : String.format(Locale.ROOT, "ETA %s",
        time(secs * (total - done) / done));
    long tok = tokensDone.get();
    for (long v : tokensRunning.values()) {
      tok += v;
    }
    String tokens = tok == 0 ? "" : String.format(Locale.ROOT, ", %,d new tokens, %,.0f tokens/s", tok,
        secs > 0 ? tok / secs : 0);
    String line = String.format(Locale.ROOT, "%s: %,d rows%s, %,.0f rows/s, %s elapsed, %s (%d/%d tasks)", label, r,
        tokens, secs > 0 ? r / secs : 0, time(secs), eta, done, total);
    if (terminal) {
      err.print("\r" + line + "   " + (last ? "\n" : ""));
    } else {
      err.println(line);
    }
    err.flush();
  }

  private static String time(double s) {
    long t = Math.round(s);
    return t >= 3600 ? String.format(Locale.ROOT, "%dh%02dm", t / 3600, t / 60 % 60)
        : String.format(Locale.ROOT, "%dm%02ds", t / 60, t % 60);
  }

  long rows() {
    return rows.get();
  }

  /** Marks the work as done: {@link #close()} then prints the final line. */
  void succeeded() {
    succeeded = true;
  }

  @Override
  public void close() {
    stopped = true;
    ticker.interrupt();
    spark.sparkContext().removeSparkListener(this);
    if (succeeded) {
      print(true);
    } else if (terminal) {
      err.println();
    }
  }
}
