package org.sparktp.spark;

import java.io.Serializable;
import java.util.Locale;
import org.apache.spark.SparkContext;
import org.apache.spark.util.CollectionAccumulator;
import org.apache.spark.util.LongAccumulator;

/**
 * Per-rank counters of a tensor-parallel job, as named Spark accumulators (visible in the Spark UI),
 * summed over the groups: rows, steps, local compute (GEMM and elementwise) time, communication time and
 * bytes sent, and rank models loaded (cache misses). Accumulators of a stage that is retried count every
 * attempt, as Spark's do. Two more count the rows the tag stage ships ({@link #INPUT_ROWS}) and the rows
 * the ranks emit, per micro-batch ({@link #EMITTED_ROWS}), for progress reports.
 */
public final class TpMetrics implements Serializable {
  private static final long serialVersionUID = 1L;

  private final int tpSize;
  private final int groups;
  private final CollectionAccumulator<String> placements;
  private final LongAccumulator[] rows;
  private final LongAccumulator[] steps;
  private final LongAccumulator[] computeNanos;
  private final LongAccumulator[] commNanos;
  private final LongAccumulator[] commBytes;
  private final LongAccumulator[] loads;
  private final LongAccumulator inputRows;
  private final LongAccumulator emittedRows;
  private final LongAccumulator rowErrors;
  private final long[] weightBytes;
  /** Name of the accumulator of rows that could not run (spark.tp.on-error null or column), counted by the tag stage. */
  public static final String ROW_ERRORS = "rows with errors";

  /** Name of the accumulator of rows the tag stage ships to the ranks (the job's total, for progress). */
  public static final String INPUT_ROWS = "input rows";
  /** Name of the accumulator of rows the ranks emitted so far, updated per micro-batch (for progress). */
  public static final String EMITTED_ROWS = "rows emitted";
  // --- issue 12: new tokens of task generate, counted by rank 0 of each group as they are drawn ---
  private final LongAccumulator newTokens;

  /** @param weightBytes per rank, the weight bytes it holds (the plan's count in the job's stored dtype) */
  TpMetrics(SparkContext sc, int tpSize, int groups, String label, long[] weightBytes) {
    this.tpSize = tpSize;
    this.groups = groups;
    this.weightBytes = weightBytes.clone();
    placements = sc.collectionAccumulator("spark-tp " + label + " task placements");
    rows = make(sc, tpSize, label, "rows");
    steps = make(sc, tpSize, label, "steps");
    computeNanos = make(sc, tpSize, label, "compute ns");
    commNanos = make(sc, tpSize, label, "comm ns");
    commBytes = make(sc, tpSize, label, "comm bytes sent");
    loads = make(sc, tpSize, label, "shard loads");
    newTokens = sc.longAccumulator("spark-tp " + label + " new tokens");
    inputRows = sc.longAccumulator("spark-tp " + label + " " + INPUT_ROWS);
    emittedRows = sc.longAccumulator("spark-tp " + label + " " + EMITTED_ROWS);
    rowErrors = sc.longAccumulator("spark-tp " + label + " " + ROW_ERRORS);
  }

  /** A row the tag stage ships to the barrier stage. */
  void inputRow() {
    inputRows.add(1);
  }

  /** A row that cannot run, shipped with null input and its cause ({@code spark.tp.on-error}). */
  void rowError() {
    rowErrors.add(1);
  }

  /** Rows that could not run (every attempt of the tag stage counted), for {@code spark.tp.on-error} null or column. */
  public long rowErrors() {
    return rowErrors.value();
  }

  /** A row a rank emitted (with its output, or null under {@code spark.tp.null-policy=null}). */
  void emittedRow() {
    emittedRows.add(1);
  }

  private static LongAccumulator[] make(SparkContext sc, int p, String label, String what) {
    LongAccumulator[] a = new LongAccumulator[p];
    for (int r = 0; r < p; r++) {
      a[r] = sc.longAccumulator("spark-tp " + label + " rank " + r + " " + what);
    }
    return a;
  }

  void add(int rank, long rowCount, long stepCount, long compute, long comm, long bytes, boolean loaded) {
    rows[rank].add(rowCount);
    steps[rank].add(stepCount);
    computeNanos[rank].add(compute);
    commNanos[rank].add(comm);
    commBytes[rank].add(bytes);
    loads[rank].add(loaded ? 1 : 0);
  }

  /** Task generate: {@code added} new tokens drawn by the group of rank {@code rank} (counted on rank 0 only). */
  void progress(int rank, long added) {
    if (rank == 0) {
      newTokens.add(added);
    }
  }

  /** New tokens generated (task generate), over every group. */
  public long newTokens() {
    return newTokens.value();
  }

  public int tpSize() {
    return tpSize;
  }

  public int groups() {
    return groups;
  }

  /** Records that barrier task {@code task} ran on the executor {@code location} ({@code executor_<host>_<id>}). */
  void placed(int task, String location) {
    placements.add(task + "=" + location);
  }

  /** Where each barrier task last ran (null where unknown), indexed by task. */
  String[] placements() {
    String[] out = new String[groups * tpSize];
    for (String s : placements.value()) {
      int eq = s.indexOf('=');
      int t = Integer.parseInt(s.substring(0, eq));
      if (t < out.length) {
        out[t] = s.substring(eq + 1);
      }
    }
    return out;
  }

  /** Bytes of weights rank {@code rank} holds ({@link org.sparktp.nn.plan.Plan#weightBytes}, the stored dtype). */
  public long weightBytes(int rank) {
    return weightBytes[rank];
  }

  public long rows(int rank) {
    return rows[rank].value();
  }

  public long steps(int rank) {
    return steps[rank].value();
  }

  public long computeNanos(int rank) {
    return computeNanos[rank].value();
  }

  public long commNanos(int rank) {
    return commNanos[rank].value();
  }

  public long commBytesSent(int rank) {
    return commBytes[rank].value();
  }

  /** Rank models loaded for this rank (0 when every task found its model in the executor cache). */
  public long loads(int rank) {
    return loads[rank].value();
  }

  public long totalRows() {
    long n = 0;
    for (int r = 0; r < tpSize; r++) {
      n += rows(r);
    }
    return n;
  }

  public long totalLoads() {
    long n = 0;
    for (int r = 0; r < tpSize; r++) {
      n += loads(r);
    }
    return n;
  }

  @Override
  public String toString() {
    StringBuilder sb = new StringBuilder();
    for (int r = 0; r < tpSize; r++) {
      sb.append(String.format(Locale.ROOT, "rank %d: rows %d, steps %d, compute %.1f ms, comm %.1f ms, %d B sent,"
          + " loads %d%n", r, rows(r), steps(r), computeNanos(r) / 1e6, commNanos(r) / 1e6, commBytesSent(r),
          loads(r)));
    }
    return sb.toString();
  }
}
