package org.sparktp.spark;

import java.util.Iterator;
import java.util.NoSuchElementException;
import org.apache.spark.Partitioner;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaPairRDD;
import org.apache.spark.api.java.JavaRDD;
import org.apache.spark.api.java.function.Function2;
import org.apache.spark.rdd.RDD;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeProjection;
import org.apache.spark.sql.catalyst.expressions.UnsafeRow;
import org.apache.spark.sql.classic.Dataset;
import org.apache.spark.sql.classic.SparkSession;
import org.apache.spark.sql.types.StructType;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import scala.Tuple2;
import scala.reflect.ClassTag;
import scala.reflect.ClassTag$;

/**
 * The data flow of a tensor-parallel job on a DataFrame ({@code g} groups of {@code p} ranks):
 *
 * <ol>
 *   <li><b>tag</b> (the input's own stage): each row gets the key {@code (input partition << 33) | row
 *       index}; its input value is checked (null policy, width, id range) here, before any barrier task
 *       starts;
 *   <li><b>spread</b> (shuffle): row {@code i} of input partition {@code q} goes to barrier partition
 *       {@code (q + i) mod gp}, so every rank gets an equal share;
 *   <li><b>barrier stage</b> of {@code gp} tasks: task {@code t} is rank {@code t mod p} of group
 *       {@code t / p} and streams its own partition through the group in micro-batches ({@link RankTask});
 *   <li><b>restore</b> (shuffle, unless {@code spark.tp.retryable=false}): rows go back to their input
 *       partition, sorted by key, so each output partition holds exactly the rows of the input partition
 *       of the same index, in their input order. Because the barrier stage then ends in a shuffle, it is
 *       a shuffle-map stage, which Spark retries whole when a task fails (a failed barrier result stage
 *       would abort the job). Without the restore, the output has {@code gp} partitions, each sorted by
 *       (input partition, row index).
 * </ol>
 *
 * Rows travel as Spark's internal {@link UnsafeRow}s; the output column is {@code array<float>}.
 */
final class BarrierRunner {
  private static final Logger LOG = LoggerFactory.getLogger(BarrierRunner.class);
  static final int INDEX_BITS = 33;
  private static final long INDEX_MASK = (1L << INDEX_BITS) - 1;

  private BarrierRunner() {}

  /**
   * The output of {@code job} on {@code df}; {@code placements} (by barrier task, may hold nulls, or be
   * null) are the executors where the tasks ran last time, preferred again off local mode.
   */
  static Dataset<Row> run(SparkSession spark, Dataset<Row> df, TpJob job, String[] placements) {
    SparkContext sc = spark.sparkContext();
    DeterministicFailures.watch(sc); // a row or settings error fails the job once, not once per retry
    int p = job.tpSize();
    int m = job.groups() * p;
    RDD<InternalRow> input = df.queryExecution().toRdd();
    int n = input.getNumPartitions();
    if (n == 0) {
      return spark.internalCreateDataFrame(sc.emptyRDD(tag(InternalRow.class)), job.outSchema(), false);
    }
    if ((long) n >= (1L << (63 - INDEX_BITS))) {
      throw new IllegalArgumentException("The input has " + n + " partitions; at most " + (1L << (63 - INDEX_BITS))
          + " are supported");
    }
    LOG.info("spark-tp job {}: {} input partitions -> barrier stage of {} groups x tp {} = {} tasks{}; plan:\n{}",
        job.jobKey(), n, job.groups(), p, m, job.retryable() ? " -> restore shuffle" : " (not retryable)",
        job.explain());
    StructType inSchema = df.schema();
    JavaRDD<Tuple2<Long, InternalRow>> tagged = input.toJavaRDD().mapPartitionsWithIndex(
        new Tagger(inSchema, job.inputCol(), job.inputOrdinal(), job.kind(), job.checkWidth(), job.nullPolicy(),
            job.metrics(), job.plan().sequences(), job.maxTokens(), job.tokenLimit(), job.onError(),
            job.errorOrdinal()),
        true);
    JavaPairRDD<Long, InternalRow> pairs = JavaPairRDD.fromJavaRDD(tagged);
    JavaPairRDD<Long, InternalRow> spread = job.retryable()
        ? pairs.partitionBy(new SpreadPartitioner(m))
        : pairs.repartitionAndSortWithinPartitions(new SpreadPartitioner(m));
    ClassTag<Tuple2<Long, InternalRow>> pairTag = tag(Tuple2.class);
    RDD<Tuple2<Long, InternalRow>> toRanks = spread.rdd();
    if (placements != null && !sc.isLocal()) {
      toRanks = new PlacedRDD<>(toRanks, placements, pairTag);
    }
    RDD<Tuple2<Long, InternalRow>> ranked = toRanks.barrier().mapPartitions(new RankTask(job), false, pairTag);
    RDD<InternalRow> out;
    if (job.retryable()) {
      out = JavaPairRDD.fromRDD(ranked, tag(Long.class), tag(InternalRow.class))
          .repartitionAndSortWithinPartitions(new OwnerPartitioner(n)).values().rdd();
    } else {
      out = JavaPairRDD.fromRDD(ranked, tag(Long.class), tag(InternalRow.class)).values().rdd();
    }
    return spark.internalCreateDataFrame(out, job.outSchema(), false);
  }

  @SuppressWarnings("unchecked")
  private static <T> ClassTag<T> tag(Class<?> c) {
    return (ClassTag<T>) ClassTag$.MODULE$.apply(c);
  }

  /** Row {@code i} of input partition {@code q} to barrier partition {@code (q + i) mod tasks}. */
  static final class SpreadPartitioner extends Partitioner {
    private static final long serialVersionUID = 1L;
    private final int tasks;

    SpreadPartitioner(int tasks) {
      this.tasks = tasks;
    }

    @Override
    public int numPartitions() {
      return tasks;
    }

    @Override
    public int getPartition(Object key) {
      long k = (Long) key;
      return (int) (((k >>> INDEX_BITS) + (k & INDEX_MASK)) % tasks);
    }

    @Override
    public boolean equals(Object o) {
      return o instanceof SpreadPartitioner s && s.tasks == tasks;
    }

    @Override
    public int hashCode() {
      return tasks;
    }
  }

  /** A row back to its input partition. */
  static final class OwnerPartitioner extends Partitioner {
    private static final long serialVersionUID = 1L;
    private final int partitions;

    OwnerPartitioner(int partitions) {
      this.partitions = partitions;
    }

    @Override
    public int numPartitions() {
      return partitions;
    }

    @Override
    public int getPartition(Object key) {
      return (int) ((Long) key >>> INDEX_BITS);
    }

    @Override
    public boolean equals(Object o) {
      return o instanceof OwnerPartitioner s && s.partitions == partitions;
    }

    @Override
    public int hashCode() {
      return 31 + partitions;
    }
  }

  /**
   * Keys the rows of one input partition and checks their input values: a null is counted (policy
   * {@code error}: the partition fails once read, naming the column and the count), dropped
   * ({@code skip}) or kept ({@code null}); a wrong width, a null element or an id outside the vocabulary
   * fails at once.
   */
  static final class Tagger
      implements Function2<Integer, Iterator<InternalRow>, Iterator<Tuple2<Long, InternalRow>>> {
    private static final long serialVersionUID = 1L;
    private final StructType schema;
    private final String col;
    private final int ord;
    private final InputKind kind;
    private final int width;
    private final NullPolicy policy;
    private final TpMetrics metrics;
    private final boolean sequences;
    private final int maxTokens;
    private final String limit;
    private final OnError onError;
    private final int errOrd;

    /**
     * With {@code sequences}, a row is a token sequence: empty is an error, so is one over {@code maxTokens} (if > 0).
     * Unless {@code onError} is {@link OnError#FAIL}, a row in error is shipped with a null input and its cause in
     * column {@code errOrd}.
     */
    Tagger(StructType schema, String col, int ord, InputKind kind, int width, NullPolicy policy, TpMetrics metrics,
        boolean sequences, int maxTokens, String limit, OnError onError, int errOrd) {
      this.onError = onError;
      this.errOrd = errOrd;
      this.sequences = sequences;
      this.maxTokens = maxTokens;
      this.limit = limit;
      this.schema = schema;
      this.col = col;
      this.ord = ord;
      this.kind = kind;
      this.width = width;
      this.policy = policy;
      this.metrics = metrics;
    }

    @Override
    public Iterator<Tuple2<Long, InternalRow>> call(Integer part, Iterator<InternalRow> rows) {
      UnsafeProjection toUnsafe = UnsafeProjection.create(schema);
      long base = (long) part << INDEX_BITS;
      return new Iterator<>() {
        private long index;
        private long nulls;
        private long firstNull = -1;
        private Tuple2<Long, InternalRow> next;

        @Override
        public boolean hasNext() {
          while (next == null && rows.hasNext()) {
            InternalRow r = rows.next();
            long i = index++;
            String bad = null;
            if (errOrd >= 0 && !r.isNullAt(errOrd)) {
              // failed before this stage (its chat template did not render): shipped with its cause, input null
              if (metrics != null) {
                metrics.rowError();
              }
            } else if (r.isNullAt(ord)) {
              if (policy == NullPolicy.ERROR && onError != OnError.FAIL) {
                bad = "is null";
              } else if (policy == NullPolicy.ERROR) {
                if (nulls++ == 0) {
                  firstNull = i;
                }
                continue;
              }
              if (policy == NullPolicy.SKIP) {
                continue;
              }
            } else {
              bad = kind.check(r, ord, width);
              if (bad == null && sequences) {
                int len = r.getArray(ord).numElements();
                bad = len == 0 ? "is an empty sequence: every row needs at least one token"
                    : maxTokens > 0 && len > maxTokens ? "has " + len + " tokens, more than " + limit
                        + "; shorten it or set spark.tp.truncate=true"
                    : null;
              }
            }
            if (bad != null && onError == OnError.FAIL) {
              throw new IllegalArgumentException("Column '" + col + "': row " + i + " of input partition " + part
                  + " " + bad);
            }
            if (i > INDEX_MASK) {
              throw new IllegalArgumentException("Input partition " + part + " has more than " + INDEX_MASK
                  + " rows; repartition the input");
            }
            UnsafeRow u = bad != null ? failed(r, "column '" + col + "' " + bad)
                : r instanceof UnsafeRow x ? x.copy() : toUnsafe.apply(r).copy();
            next = new Tuple2<>(base | i, u);
            if (metrics != null) {
              metrics.inputRow();
            }
          }
          if (next == null && nulls > 0) {
            long n = nulls;
            nulls = 0;
            throw new IllegalArgumentException("Column '" + col + "' has " + n + " null value(s) in input partition "
                + part + ", the first at row " + firstNull + " (spark.tp.null-policy=error); drop or fill them, or set spark.tp.null-policy to skip"
                + " (drop those rows) or null (null output), or spark.tp.on-error=column (null output and the cause in a column)");
          }
          return next != null;
        }

        @Override
        public Tuple2<Long, InternalRow> next() {
          if (!hasNext()) {
            throw new NoSuchElementException();
          }
          Tuple2<Long, InternalRow> t = next;
          next = null;
          return t;
        }

        /** Row {@code r} with a null input and {@code cause} in the error column ({@code spark.tp.on-error}). */
        private UnsafeRow failed(InternalRow r, String cause) {
          Object[] v = new Object[schema.size()];
          for (int c = 0; c < v.length; c++) {
            v[c] = r.isNullAt(c) ? null : r.get(c, schema.fields()[c].dataType());
          }
          v[ord] = null;
          if (errOrd >= 0) {
            v[errOrd] = org.apache.spark.unsafe.types.UTF8String.fromString(cause);
          }
          if (metrics != null) {
            metrics.rowError();
          }
          return toUnsafe.apply(new org.apache.spark.sql.catalyst.expressions.GenericInternalRow(v)).copy();
        }
      };
    }
  }

}
