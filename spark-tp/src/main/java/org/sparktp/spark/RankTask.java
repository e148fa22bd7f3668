package org.sparktp.spark;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.TaskContext;
import org.apache.spark.BarrierTaskInfo;
import org.apache.spark.SparkEnv;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.expressions.JoinedRow;
import org.apache.spark.sql.catalyst.expressions.UnsafeArrayData;
import org.apache.spark.sql.catalyst.expressions.UnsafeProjection;
import org.apache.spark.unsafe.Platform;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.backend.Backend;
import org.sparktp.TpConf;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Backends;
import org.sparktp.comm.CommStats;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.run.TpRunner;
import scala.Tuple2;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction1;

/**
 * The body of one barrier task: rank {@code i % p} of group {@code i / p}, where {@code i} is the task's
 * partition. It takes its communicator from the job's {@link CommFactory}, checks its rank model out of
 * the {@link ShardCache} (loading it from its own broadcast shard on a miss), and streams its partition
 * through a {@link TpRunner} in micro-batches of {@code batchSize} rows: read up to a batch of rows,
 * convert their features, {@code step}, emit the batch's rows with their outputs. Rows are never
 * gathered beyond one batch.
 */
final class RankTask
    extends AbstractFunction1<scala.collection.Iterator<Tuple2<Long, InternalRow>>,
        scala.collection.Iterator<Tuple2<Long, InternalRow>>>
    implements Serializable {
  private static final long serialVersionUID = 1L;
  private static final Logger LOG = LoggerFactory.getLogger(RankTask.class);
  private static final ScheduledExecutorService WATCHDOG = Executors.newSingleThreadScheduledExecutor(r -> {
    Thread t = new Thread(r, "spark-tp-watchdog");
    t.setDaemon(true);
    return t;
  });

  private final TpJob job;

  RankTask(TpJob job) {
    this.job = job;
  }

  @Override
  public scala.collection.Iterator<Tuple2<Long, InternalRow>> apply(
      scala.collection.Iterator<Tuple2<Long, InternalRow>> input) {
    BarrierTaskContext ctx = BarrierTaskContext.get();
    Stream s = new Stream(job, ctx, CollectionConverters.asJava(input));
    return CollectionConverters.asScala(s);
  }

  /** Checks a backend name ({@code spark.tp.backend}); returns it normalized. */
  static String checkBackend(String name) {
    return Backends.check(name);
  }

  /**
   * Whether executor addresses ({@code host:port} as Spark reports them) are all on one host: two
   * executors of one machine differ only in their port.
   */
  static boolean oneHost(String[] addresses) {
    String first = SparkRendezvous.hostOf(addresses[0]);
    for (String a : addresses) {
      if (!SparkRendezvous.hostOf(a).equals(first)) {
        return false;
      }
    }
    return true;
  }

  private static final class Stream implements Iterator<Tuple2<Long, InternalRow>> {
    private final TpJob job;
    private final BarrierTaskContext ctx;
    private final Iterator<Tuple2<Long, InternalRow>> in;
    private final int group;
    private final int rank;
    private final int batch;
    private final int width;
    private final long start = System.nanoTime();
    private final Communicator comm;
    private final ScheduledFuture<?> watchdog;
    private final ShardCache.Lease lease;
    private final TpRunner runner; // every model, but generation
    // --- issue 12: task generate ---
    private final org.sparktp.nn.gen.Generator gen;
    // issue 21: one KV cache and batch for the whole partition; a micro-batch is submitted before the one before it
    // is finished, so its rows take the places that one's finished rows leave
    private org.sparktp.nn.gen.Generator.Session session;
    private final java.util.ArrayDeque<GenBatch> inFlight = new java.util.ArrayDeque<>();
    private final GenerateJob.TextStop textStop;
    private final GenericInternalRow genExtra = new GenericInternalRow(2);
    private long genRows;
    private final UnsafeProjection project;
    private final JoinedRow joined = new JoinedRow();
    private final GenericInternalRow extra = new GenericInternalRow(1);
    private final String host;

    // the batch being built
    private final List<Tuple2<Long, InternalRow>> pending = new ArrayList<>();
    private final List<Boolean> hasValue = new ArrayList<>();
    private float[] dense;
    private int[] ids;
    private int[] offsets;
    private Tuple2<Long, InternalRow> carry; // a row read but left for the next batch (token budget)

    /** A micro-batch of task generate submitted to the session ({@code ticket} -1: no rank had a row). */
    private record GenBatch(int ticket, List<Tuple2<Long, InternalRow>> rows, List<Boolean> hasValue) {}
    // rows ready to emit
    private final List<Tuple2<Long, InternalRow>> out = new ArrayList<>();
    private int pos;
    private boolean finished;
    private boolean closed;
    // where the task's time goes, for the log line
    private long readNanos;
    private long stepNanos;
    private long emitNanos;

    Stream(TpJob job, BarrierTaskContext ctx, Iterator<Tuple2<Long, InternalRow>> in) {
      this.job = job;
      this.ctx = ctx;
      this.in = in;
      int p = job.tpSize();
      int part = ctx.partitionId();
      this.group = part / p;
      this.rank = part % p;
      this.batch = job.batchSize();
      this.width = job.plan().inputKind() == InputBatch.Kind.DENSE ? job.plan().inputDim() : 0;
      BarrierTaskInfo[] infos = ctx.getTaskInfos();
      if (infos.length != ctx.numPartitions()) {
        // When a task of a barrier attempt fails, Spark reruns the stage, but keeps the output of tasks of
        // the failed attempt that succeeded in the meantime and reruns only the others: ranks of one group
        // would then wait for peers that never come. Fail such a partial attempt at once; the next
        // attempt reruns every task.
        throw new IllegalStateException("Spark reran " + infos.length + " of the " + ctx.numPartitions()
            + " tasks of the barrier stage (stage " + ctx.stageId() + " attempt " + ctx.stageAttemptNumber()
            + "); a tensor-parallel group needs all its ranks, so this attempt fails and the next one reruns"
            + " them all");
      }
      this.host = infos[part].address();
      if (rank == 0) {
        logHosts(infos, p);
      }
      Communicator c = job.comm().create(ctx, job.jobKey(), group, p, rank, job.commTimeoutMillis());
      this.comm = c;
      this.watchdog = WATCHDOG.scheduleAtFixedRate(() -> {
        if (ctx.isInterrupted()) {
          c.abort(new CommunicatorException("task of rank " + rank + " in group " + group + " was killed: "
              + (ctx.getKillReason().isDefined() ? ctx.getKillReason().get() : "no reason given")));
        }
      }, 100, 100, TimeUnit.MILLISECONDS);
      ShardCache.Lease l = null;
      TpRunner r = null;
      org.sparktp.nn.gen.Generator gn = null;
      GenerateJob.TextStop ts = null;
      UnsafeProjection proj;
      try {
        ShardCache.Key key = new ShardCache.Key(job.modelId(), job.fingerprint(), p, rank, cacheBackend());
        l = ShardCache.get().checkOut(key, job.weightBytes(rank), job.cacheMaxBytes(), this::load);
        if (job.generate() != null) {
          ts = job.generate().stopCheck();
          gn = new org.sparktp.nn.gen.Generator((RankModel) l.model(), c, job.generate().params(), ts)
              .activationDtype(job.activationDtype());
          final int gRank = rank;
          long[] seen = {0};
          gn.progress((done, total, tokens, nanos) -> {
            job.metrics().progress(gRank, tokens - seen[0]);
            seen[0] = tokens;
          });
        } else {
          r = new TpRunner(l.model(), c).activationDtype(job.activationDtype());
        }
        proj = UnsafeProjection.create(job.outSchema());
      } catch (OutOfMemoryError e) {
        IllegalStateException x = RankMemory.outOfMemory(e, rank, group);
        fail(l, x); // frees the rank model and the communicator first
        throw x;
      } catch (RuntimeException | Error e) {
        fail(l, e);
        throw e;
      }
      this.lease = l;
      this.runner = r;
      this.gen = gn;
      this.textStop = ts;
      this.project = proj;
      switch (kind()) {
        case FLOAT_ARRAY, DOUBLE_ARRAY, VECTOR -> dense = new float[Math.multiplyExact(batch, width)];
        case INT, LONG -> ids = new int[batch];
        default -> {
          ids = new int[batch];
          offsets = new int[batch + 1];
        }
      }
      ctx.addTaskCompletionListener((org.apache.spark.util.TaskCompletionListener) tc -> {
        if (!closed) {
          // the iterator was not drained: a failure downstream or a kill
          fail(lease, new IllegalStateException("task ended before the stream did"));
        }
      });
    }

    /** The backend part of the cache key: the backend, dtype and GEMM (a model loaded in bf16 is not reused for f32). */
    private String cacheBackend() {
      return job.backend() + "/" + job.dtype().id() + "/" + job.backendSettings().get(TpConf.CPU_GEMM);
    }

    private InputKind kind() {
      return job.kind();
    }

    private ShardCache.Entry load() {
      Backend b = GpuTask.backend(job.backend(), job.backendSettings(), ctx);
      try {
        ShardCache.Key key = new ShardCache.Key(job.modelId(), job.fingerprint(), job.tpSize(), rank, cacheBackend());
        DType dt = job.dtype();
        if (!b.supports(dt)) {
          LOG.warn("spark-tp job {} rank {}: the {} backend holds no {} tensors; its weights stay f32", job.jobKey(),
              rank, b.name(), dt.id());
          dt = DType.F32;
        }
        // the rank reads its slices in the checkpoint's dtype straight into its tensors (a backend with
        // half-precision tensors: the CPU's), stored in dt; another backend gets f32 host blocks
        try (RankWeights w = b.supports(DType.BF16) ? job.shards().load(rank, b, dt) : job.shards().load(rank)) {
          return new ShardCache.Entry(key, new RankModel(job.plan(), rank, b, w, dt), b,
              job.plan().weightBytes(rank, dt));
        }
      } catch (RuntimeException | Error e) {
        try {
          b.close();
        } catch (RuntimeException suppressed) {
          e.addSuppressed(suppressed);
        }
        throw e;
      }
    }

    private void logHosts(BarrierTaskInfo[] infos, int p) {
      String[] hosts = new String[p];
      for (int r = 0; r < p; r++) {
        int i = group * p + r;
        hosts[r] = i < infos.length ? infos[i].address() : "?";
      }
      if (oneHost(hosts)) {
        LOG.info("spark-tp job {} group {}: ranks on hosts {}", job.jobKey(), group, Arrays.toString(hosts));
      } else {
        LOG.warn("spark-tp job {} group {}: ranks on different hosts {}; their collectives cross the network",
            job.jobKey(), group, Arrays.toString(hosts));
      }
    }

    @Override
    public boolean hasNext() {
      try {
        while (pos >= out.size()) {
          if (finished) {
            return false;
          }
          out.clear();
          pos = 0;
          step();
        }
        return true;
      } catch (OutOfMemoryError e) {
        // an Error would end the executor's JVM (in local mode the driver's); the rank's memory is freed first
        IllegalStateException x = RankMemory.outOfMemory(e, rank, group);
        fail(lease, x);
        throw x;
      } catch (RuntimeException | Error e) {
        fail(lease, e);
        throw e;
      }
    }

    @Override
    public Tuple2<Long, InternalRow> next() {
      if (!hasNext()) {
        throw new NoSuchElementException();
      }
      job.metrics().emittedRow();
      return out.get(pos++);
    }

    /** Reads up to a batch, runs one step (unless only null rows were read), fills {@code out}. */
    private void step() {
      ctx.killTaskIfInterrupted();
      long t0 = System.nanoTime();
      int n = 0;
      int nIds = 0;
      int ord = job.inputOrdinal();
      InputKind k = kind();
      // with a micro-batch in flight (generate), null rows wait in pending behind it: rows leave in input order
      boolean behind = !inFlight.isEmpty();
      read:
      while (n < batch && (pending.size() < batch || behind) && out.size() < batch && (carry != null || in.hasNext())) {
        Tuple2<Long, InternalRow> t = carry != null ? carry : in.next();
        carry = null;
        InternalRow row = t._2();
        if (row.isNullAt(ord)) {
          // null policy "null" (the others never ship null rows to this stage)
          if (n == 0 && !behind) {
            out.add(emit(t, null, 0));
          } else {
            pending.add(t);
            hasValue.add(false);
          }
          continue;
        }
        switch (k) {
          case FLOAT_ARRAY, DOUBLE_ARRAY, VECTOR -> k.readDense(row, ord, dense, n * width, width);
          case INT, LONG -> ids[n] = k.readId(row, ord);
          default -> {
            int len = k.bagLength(row, ord);
            if (job.plan().sequences() && n > 0 && nIds + len > job.batchTokens()) {
              // the token budget (spark.tp.batch-tokens) is full: this row starts the next batch
              carry = t;
              break read;
            }
            if (nIds + len > ids.length) {
              ids = Arrays.copyOf(ids, Math.max(ids.length * 2, nIds + len));
            }
            k.readBag(row, ord, ids, nIds);
            nIds += len;
            offsets[n + 1] = nIds;
          }
        }
        pending.add(t);
        hasValue.add(true);
        n++;
      }
      long t1 = System.nanoTime();
      readNanos += t1 - t0;
      if (n == 0 && (carry != null || in.hasNext() || !out.isEmpty())) {
        return; // only null rows so far: emit them, read on later
      }
      if (gen != null) {
        generateStep(n, t1);
        return;
      }
      InputBatch b = switch (k) {
        case FLOAT_ARRAY, DOUBLE_ARRAY, VECTOR -> InputBatch.dense(dense, n, width);
        case INT, LONG -> InputBatch.ids(ids, n);
        default -> InputBatch.bags(ids, offsets, n);
      };
      float[] y = runner.step(b);
      long t2 = System.nanoTime();
      stepNanos += t2 - t1;
      injectedFailures();
      if (y == null) {
        finish();
        return;
      }
      int w = job.outputDim();
      int r = 0;
      for (int i = 0; i < pending.size(); i++) {
        if (hasValue.get(i)) {
          out.add(emit(pending.get(i), y, r++ * w));
        } else {
          out.add(emit(pending.get(i), null, 0));
        }
      }
      pending.clear();
      hasValue.clear();
      emitNanos += System.nanoTime() - t2;
    }

    /**
     * Task generate: submits the batch's rows to the group's session (zero rows only once this rank's input is done),
     * then finishes and emits the micro-batch submitted before (continuous batching across micro-batches, issue 21);
     * when no rank had a row, every micro-batch still in flight, then the task.
     */
    private void generateStep(int n, long t1) {
      List<int[]> prompts = new ArrayList<>(n);
      for (int i = 0; i < n; i++) {
        prompts.add(Arrays.copyOfRange(ids, offsets[i], offsets[i + 1]));
      }
      long[] seeds = new long[n];
      for (int i = 0, r = 0; i < pending.size(); i++) {
        if (hasValue.get(i)) {
          seeds[r++] = job.generate().seedOf(pending.get(i)._2());
        }
      }
      if (session == null) {
        session = gen.open();
      }
      int ticket = session.submit(prompts, seeds, genRows);
      genRows += n;
      injectedFailures();
      inFlight.add(new GenBatch(ticket, new ArrayList<>(pending), new ArrayList<>(hasValue)));
      pending.clear();
      hasValue.clear();
      while (inFlight.size() > (ticket < 0 ? 0 : 1)) {
        GenBatch b = inFlight.poll();
        List<org.sparktp.nn.gen.Completion> res = b.ticket() < 0 ? List.of() : session.finish(b.ticket());
        long t2 = System.nanoTime();
        int r = 0;
        for (int i = 0; i < b.rows().size(); i++) {
          org.sparktp.nn.gen.Completion c = b.hasValue().get(i) ? res.get(r++) : null;
          genExtra.update(0, c == null ? null : UnsafeArrayData.fromPrimitiveArray(c.ids()));
          genExtra.update(1, c == null ? null : org.apache.spark.unsafe.types.UTF8String.fromString(c.finish().id()));
          Tuple2<Long, InternalRow> t = b.rows().get(i);
          out.add(new Tuple2<>(t._1(), project.apply(joined.apply(t._2(), genExtra)).copy()));
        }
        emitNanos += System.nanoTime() - t2;
      }
      stepNanos += System.nanoTime() - t1;
      if (ticket < 0) {
        finish();
      }
    }

    /** Tests only: {@code spark.tp.test.fail-rank} (first attempt) and {@code spark.tp.test.oom-rank} (every one). */
    private void injectedFailures() {
      if (job.failRank() == ctx.partitionId() && ctx.stageAttemptNumber() == 0) {
        throw new IllegalStateException("Injected failure of rank " + rank + " in group " + group
            + " in the first attempt of the stage (" + "spark.tp.test.fail-rank" + ")");
      }
      if (job.settings().getInt(TpConf.TEST_OOM_RANK, -1) == ctx.partitionId()) {
        throw new OutOfMemoryError("Cannot allocate new BytePointer(33554432) (injected: " + TpConf.TEST_OOM_RANK
            + ")");
      }
    }

    private Tuple2<Long, InternalRow> emit(Tuple2<Long, InternalRow> t, float[] y, int off) {
      if (gen != null) {
        genExtra.setNullAt(0);
        genExtra.setNullAt(1);
        return new Tuple2<>(t._1(), project.apply(joined.apply(t._2(), genExtra)).copy());
      }
      int w = job.outputDim();
      // y holds the batch's outputs row-major; its byte offsets fit an int (a batch is < 2^31 bytes)
      extra.update(0, y == null ? null : job.scalarOutput() ? (Object) (double) y[off]
          : UnsafeArrayData.fromPrimitiveArray(y, Platform.FLOAT_ARRAY_OFFSET + 4 * off, w, 4));
      return new Tuple2<>(t._1(), project.apply(joined.apply(t._2(), extra)).copy());
    }

    private void finish() {
      finished = true;
      closed = true;
      CommStats st = comm.stats();
      long wall = System.nanoTime() - start;
      long rowsDone = gen != null ? genRows : runner.rows();
      long stepsDone = gen != null ? gen.steps() : runner.steps();
      long compute = gen != null ? gen.computeNanos() : runner.computeNanos();
      if (textStop != null) {
        textStop.close();
      }
      job.metrics().add(rank, rowsDone, stepsDone, compute, st.nanos(), st.bytesSent(), lease.loaded());
      SparkEnv env = SparkEnv.get();
      job.metrics().placed(ctx.partitionId(), "executor_" + env.blockManager().blockManagerId().host() + "_"
          + env.executorId());
      LOG.info(String.format(java.util.Locale.ROOT,
          "spark-tp job %s group %d rank %d/%d on %s: %d rows in %d steps, compute %.1f ms, comm %.1f ms"
              + " (%d calls, %d B sent), model %s, task %.1f ms (read %.1f, step %.1f, emit %.1f)",
          job.jobKey(), group, rank, job.tpSize(), host, rowsDone, stepsDone, compute / 1e6,
          st.nanos() / 1e6, st.calls(), st.bytesSent(), lease.loaded() ? "loaded" : "from cache", wall / 1e6,
          readNanos / 1e6, stepNanos / 1e6, emitNanos / 1e6));
      watchdog.cancel(false);
      try {
        if (session != null) {
          session.close(); // the KV cache, before the backend goes back to the cache
        }
        comm.close();
      } finally {
        lease.close();
      }
    }

    /** Aborts the group, closes the communicator and the rank model (never returned to the cache). */
    private void fail(ShardCache.Lease l, Throwable cause) {
      if (closed) {
        return;
      }
      closed = true;
      finished = true;
      if (DeterministicFailures.deterministic(cause.getClass().getName(), cause.getStackTrace())) {
        // the job fails with this message, once (DeterministicFailures): no warning per rank
        LOG.info("spark-tp job {} group {} rank {}/{} failed: {}", job.jobKey(), group, rank, job.tpSize(),
            cause.toString());
      } else {
        LOG.warn("spark-tp job {} group {} rank {}/{} failed: {}", job.jobKey(), group, rank, job.tpSize(),
            cause.toString());
      }
      watchdog.cancel(false);
      if (textStop != null) {
        textStop.close();
      }
      if (session != null) {
        try {
          session.close(); // the KV cache, before the backend is discarded
        } catch (RuntimeException e) {
          cause.addSuppressed(e);
        }
      }
      try {
        comm.abort(cause);
        comm.close();
      } catch (RuntimeException e) {
        cause.addSuppressed(e);
      } finally {
        if (l != null) {
          try {
            l.discard();
          } catch (RuntimeException | Error e) {
            cause.addSuppressed(e); // a later error (a leak report) must not hide the first cause
          }
        }
      }
    }
  }
}
