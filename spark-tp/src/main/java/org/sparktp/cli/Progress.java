package org.sparktp.cli;

import java.io.PrintStream;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.regex.Pattern;
import org.apache.spark.Success$;
import org.apache.spark.scheduler.AccumulableInfo;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerExecutorMetricsUpdate;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.scheduler.SparkListenerTaskStart;
import org.apache.spark.sql.SparkSession;
import scala.Tuple4;

/**
 * Progress of a running command: rows done of the total, rows/s, elapsed time and ETA. In a terminal it
 * redraws one line; otherwise it prints a plain line every 10 seconds (logs, CI).
 *
 * <p>Rows done are the rows the ranks have emitted, counted per micro-batch ({@code rows emitted}
 * accumulators): running tasks report theirs with the executors' heartbeats, finished tasks at their end.
 * Each value is kept per (stage, partition), so a retried attempt replaces, never adds to, the rows of
 * the one before. The total is the number of rows the tag stage shipped to the ranks ({@code input
 * rows}), known once that stage finished; the ETA is projected from it.
 *
 * <p>{@link #committedRows()} is what a write committed: the records written by the tasks that succeeded
 * (Spark's output metrics), one value per (stage, partition), so a retried stage is not counted twice.
 */
final class Progress extends SparkListener implements AutoCloseable {
  private static final Pattern EMITTED = Pattern.compile("spark-tp .* rows emitted");
  private static final Pattern INPUT = Pattern.compile("spark-tp .* input rows");
  private static final Pattern ERRORS = Pattern.compile("spark-tp .* rows with errors"); // spark.tp.on-error
  private static final Pattern TOKENS = Pattern.compile("spark-tp .* new tokens"); // issue 12: task generate

  private final SparkSession spark;
  private final PrintStream err;
  private final String label;
  private final boolean terminal;
  private final long start = System.nanoTime();
  private final Map<Long, String> taskSlot = new ConcurrentHashMap<>(); // task id -> "stage:partition"
  private final Map<String, Long> done = new ConcurrentHashMap<>();
  private final Map<String, Long> total = new ConcurrentHashMap<>();
  private final Map<String, Long> errors = new ConcurrentHashMap<>(); // rows that could not run, per tag task
  private final Map<String, Long> written = new ConcurrentHashMap<>();
  private final Map<String, Long> tokens = new ConcurrentHashMap<>(); // new tokens per (stage, partition)
  private final Thread ticker;
  private volatile boolean stopped;
  private volatile boolean succeeded;

  Progress(SparkSession spark, PrintStream err, String label) {
    this.spark = spark;
    this.err = err;
    this.label = label;
    this.terminal = System.console() != null && System.getenv("SPARK_TP_PLAIN_PROGRESS") == null;
    ticker = new Thread(this::tick, "spark-tp-progress");
    ticker.setDaemon(true);
    if (spark != null) { // null: fed events by hand (tests), prints only on close
      spark.sparkContext().addSparkListener(this);
      ticker.start();
    }
  }

  private static String slot(int stage, int partition) {
    return stage + ":" + partition;
  }

  @Override
  public void onTaskStart(SparkListenerTaskStart start) {
    taskSlot.put(start.taskInfo().taskId(), slot(start.stageId(), start.taskInfo().index()));
  }

  @Override
  public void onExecutorMetricsUpdate(SparkListenerExecutorMetricsUpdate update) {
    scala.collection.Iterator<Tuple4<Object, Object, Object, scala.collection.immutable.Seq<AccumulableInfo>>> it =
        update.accumUpdates().iterator();
    while (it.hasNext()) {
      Tuple4<Object, Object, Object, scala.collection.immutable.Seq<AccumulableInfo>> t = it.next();
      String s = taskSlot.get((Long) t._1());
      if (s != null) {
        record(s, t._4(), false);
      }
    }
  }

  @Override
  public void onTaskEnd(SparkListenerTaskEnd end) {
    String s = slot(end.stageId(), end.taskInfo().index());
    taskSlot.remove(end.taskInfo().taskId());
    if (end.reason() != Success$.MODULE$) {
      done.remove(s); // a failed task's rows are redone by its retry
      tokens.remove(s);
      return;
    }
    record(s, end.taskInfo().accumulables(), true);
    if (end.taskMetrics() != null) {
      long w = end.taskMetrics().outputMetrics().recordsWritten();
      if (w > 0) {
        written.put(s, w);
      }
    }
  }

  private void record(String s, scala.collection.Iterable<AccumulableInfo> accums, boolean finished) {
    scala.collection.Iterator<AccumulableInfo> it = accums.iterator();
    while (it.hasNext()) {
      AccumulableInfo a = it.next();
      if (a.name().isEmpty() || a.update().isEmpty() || !(a.update().get() instanceof Long n)) {
        continue;
      }
      String name = a.name().get();
      if (EMITTED.matcher(name).matches()) {
        done.put(s, n);
      } else if (TOKENS.matcher(name).matches()) {
        tokens.put(s, n);
      } else if (finished && INPUT.matcher(name).matches()) {
        total.put(s, n);
      } else if (finished && ERRORS.matcher(name).matches()) {
        errors.put(s, n);
      }
    }
  }

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

  private static long sum(Map<String, Long> m) {
    long n = 0;
    for (long v : m.values()) {
      n += v;
    }
    return n;
  }

  /** Rows emitted by the ranks so far (at most the total, once known). */
  long rows() {
    long r = sum(done);
    long t = sum(total);
    return t > 0 ? Math.min(r, t) : r;
  }

  void print(boolean last) {
    double secs = (System.nanoTime() - start) / 1e9;
    long r = rows();
    long t = sum(total);
    String of = t > 0 ? String.format(Locale.ROOT, "%,d of %,d rows", r, t) : String.format(Locale.ROOT, "%,d rows", r);
    String eta = last ? "done" : r == 0 || t == 0 ? "ETA ?" : "ETA " + time(secs * (t - r) / r);
    long tok = sum(tokens);
    String gen = tok == 0 ? "" : String.format(Locale.ROOT, ", %,d new tokens, %s tokens/s", tok, rate(tok, secs));
    String line = String.format(Locale.ROOT, "%s: %s%s, %s rows/s, %s elapsed, %s", label, of, gen,
        rate(r, secs), time(secs), eta);
    if (terminal) {
      err.print("\r" + line + "   " + (last ? "\n" : ""));
    } else {
      err.println(line);
    }
    err.flush();
  }

  /** {@code n / secs} with the digits a rate needs: 2,900 rows/s, 12.5 rows/s, 0.44 rows/s (never 0 for work done). */
  static String rate(double n, double secs) {
    double r = secs > 0 ? n / secs : 0;
    return r >= 100 || r == 0 ? String.format(Locale.ROOT, "%,.0f", r)
        : r >= 10 ? String.format(Locale.ROOT, "%.1f", r)
        : r >= 0.01 ? String.format(Locale.ROOT, "%.2f", r) : String.format(Locale.ROOT, "%.2g", r);
  }

  /** Rows the tag stages found unable to run ({@code spark.tp.on-error} null or column), each task counted once. */
  long errorRows() {
    return sum(errors);
  }

  private static String time(double s) {
    long t = Math.round(s);
    return t >= 3600 ? String.format(Locale.ROOT, "%dh%02dm", t / 3600, t / 60 % 60)
        : String.format(Locale.ROOT, "%dm%02ds", t / 60, t % 60);
  }

  /** Waits until the listener has seen every event posted so far (the job's last task ends). */
  void drain() {
    if (spark == null) {
      return;
    }
    try {
      spark.sparkContext().listenerBus().waitUntilEmpty(30_000);
    } catch (java.util.concurrent.TimeoutException e) {
      // counts may then be short; nothing else is affected
    }
  }

  /** Records the successful tasks wrote ({@link #drain()} first). */
  long committedRows() {
    return sum(written);
  }

  /** Marks the work as done: {@link #close()} then prints the final line. */
  void succeeded() {
    succeeded = true;
  }

  @Override
  public void close() {
    stopped = true;
    ticker.interrupt();
    if (spark != null) {
      spark.sparkContext().removeSparkListener(this);
    }
    if (succeeded) {
      print(true);
    } else if (terminal) {
      err.println();
    }
  }
}
