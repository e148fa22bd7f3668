package org.sparktp.nn.run;

import java.util.Locale;
import org.sparktp.backend.Backend;
import org.sparktp.comm.Communicator;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.Mappings;
import org.sparktp.nn.RunContext;
import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * Streams rows through a tensor-parallel group, one micro-batch per {@link #step}, for every model: dense vectors,
 * one id or a bag of ids per row, and sequences of token ids (a ragged batch: no padding anywhere). Every rank
 * brings the rows it owns (its own partition), the group runs the model on all of them, and each rank gets back the
 * outputs of exactly its rows. Per step:
 *
 * <ol>
 *   <li>exchange the row (and id) counts; when every rank has none, the stream is over ({@code step} returns
 *       null on every rank);
 *   <li>all-gather the inputs (vectors; or ids and each row's length), so every rank holds the group's rows in rank
 *       order;
 *   <li>run the model with the local shards;
 *   <li>return each row's output to its owner: reduce-scatter over rows for a {@code PARTIAL} result,
 *       all-to-all for a {@code SHARDED} one (an LM head's logits, sharded by vocabulary), a local slice for a
 *       {@code REPLICATED} one.
 * </ol>
 *
 * Work per rank is that of data parallelism on the group's rows; memory per rank is 1/p of the weights. With one
 * rank nothing is communicated.
 */
public final class TpRunner {
  private final RowModel model;
  private final Communicator comm;
  private final Backend backend;
  private final RunContext ctx;
  private long rows;
  private long tokens;
  private long steps;

  public TpRunner(RowModel model, Communicator comm) {
    this.model = model;
    this.comm = comm;
    this.backend = model.backend();
    this.ctx = new RunContext(backend, comm);
    if (comm.size() != model.tpSize() || comm.rank() != model.rank()) {
      throw new IllegalArgumentException("Rank " + model.rank() + " of a tp=" + model.tpSize()
          + " model given the communicator of rank " + comm.rank() + " of " + comm.size());
    }
  }

  /**
   * Stores the activations between ops in {@code dtype} (f32, bf16, f16; {@code spark.tp.activation-dtype}); f32
   * unless set. Returns this.
   */
  public TpRunner activationDtype(org.sparktp.tensor.DType dtype) {
    ctx.activationDtype(dtype);
    return this;
  }

  /** Output width of every row. */
  public int outputWidth() {
    return model.outputWidth();
  }

  /** Rows this rank has brought so far. */
  public long rows() {
    return rows;
  }

  /** Ids (tokens) this rank has brought so far (0 for dense rows). */
  public long tokens() {
    return tokens;
  }

  /** Steps run so far (including ones where this rank brought no rows). */
  public long steps() {
    return steps;
  }

  /** Nanoseconds of local compute (GEMMs, elementwise) so far. */
  public long computeNanos() {
    return ctx.computeNanos();
  }

  /** Nanoseconds in attention cores so far (part of {@link #computeNanos()}). */
  public long attentionNanos() {
    return ctx.attentionNanos();
  }

  /**
   * Runs one step with this rank's rows ({@code mine.rows()} may be 0 once the partition is exhausted).
   *
   * @return the outputs of this rank's rows, row-major {@code [mine.rows(), outputWidth()]}, or null when
   *     no rank had rows (the stream is over)
   */
  public float[] step(InputBatch mine) {
    InputBatch.Kind kind = model.inputKind();
    if (mine.kind() != kind) {
      throw new IllegalArgumentException("The model takes " + model.describeInput() + ", got "
          + mine.kind().name().toLowerCase(Locale.ROOT) + " input");
    }
    if (kind == InputBatch.Kind.DENSE && mine.width() != model.inputWidth()) {
      throw new IllegalArgumentException("Input rows have width " + mine.width() + ", the model expects "
          + model.inputWidth());
    }
    mine = model.admit(mine);
    int p = comm.size();
    int myIds = kind == InputBatch.Kind.BAGS ? mine.offsets()[mine.rows()] : kind == InputBatch.Kind.IDS
        ? mine.rows() : 0;
    long[] counts = comm.allGatherLong(((long) mine.rows() << 32) | myIds);
    int[] rowCounts = new int[p];
    int[] idCounts = new int[p];
    int[] rowOff = new int[p + 1];
    int totalIds = 0;
    for (int r = 0; r < p; r++) {
      rowCounts[r] = (int) (counts[r] >>> 32);
      idCounts[r] = (int) (counts[r] & 0xffffffffL);
      rowOff[r + 1] = rowOff[r] + rowCounts[r];
      totalIds += idCounts[r];
    }
    int n = rowOff[p];
    if (n == 0) {
      return null;
    }
    steps++;
    rows += mine.rows();
    tokens += myIds;
    DistTensor out;
    if (p == 1) {
      out = model.forward(mine, ctx);
    } else if (kind == InputBatch.Kind.DENSE) {
      int width = model.inputWidth();
      Tensor all = backend.empty(n, width);
      try (Tensor send = backend.upload(mine.dense(), 0, mine.rows(), width)) {
        comm.allGather(send, all, scale(rowCounts, width));
      } catch (RuntimeException e) {
        all.close();
        throw e;
      }
      out = model.forward(DistTensor.replicated(all), ctx);
    } else if (kind == InputBatch.Kind.IDS) {
      out = model.forward(InputBatch.ids(gatherInts(mine.ids(), myIds, idCounts, totalIds), n), ctx);
    } else {
      int[] ids = gatherInts(mine.ids(), myIds, idCounts, totalIds);
      int[] lens = new int[mine.rows()];
      for (int i = 0; i < lens.length; i++) {
        lens[i] = mine.offsets()[i + 1] - mine.offsets()[i];
      }
      int[] allLens = gatherInts(lens, lens.length, rowCounts, n);
      int[] offsets = new int[n + 1];
      for (int i = 0; i < n; i++) {
        offsets[i + 1] = offsets[i] + allLens[i];
      }
      out = model.forward(InputBatch.bags(ids, offsets, n), ctx);
    }
    try (DistTensor result = out) {
      return ownRows(result, rowCounts, rowOff, comm.rank(), model.outputWidth());
    }
  }

  private static int[] scale(int[] counts, int by) {
    int[] out = new int[counts.length];
    for (int i = 0; i < counts.length; i++) {
      out[i] = Math.multiplyExact(counts[i], by);
    }
    return out;
  }

  /** All-gathers ints (carried bit for bit in float slots, never summed). */
  private int[] gatherInts(int[] mine, int count, int[] counts, int total) {
    float[] bits = new float[count];
    for (int i = 0; i < count; i++) {
      bits[i] = Float.intBitsToFloat(mine[i]);
    }
    try (Tensor send = backend.upload(bits, 0, 1, count); Tensor recv = backend.empty(1, total)) {
      comm.allGather(send, recv, counts);
      float[] got = backend.download(recv);
      int[] out = new int[total];
      for (int i = 0; i < total; i++) {
        out[i] = Float.floatToRawIntBits(got[i]);
      }
      return out;
    }
  }

  /** The row return: this rank's rows of the group's output, whatever its layout. */
  private float[] ownRows(DistTensor out, int[] rowCounts, int[] rowOff, int me, int w) {
    int p = rowCounts.length;
    int mine = rowCounts[me];
    float[] result = new float[Math.multiplyExact(mine, w)];
    if (p == 1) {
      DistTensor whole = Mappings.toReplicated(out, ctx); // one rank: nothing is communicated
      backend.download(whole.local(), result, 0);
      return result;
    }
    switch (out.layout()) {
      case REPLICATED -> {
        if (mine > 0) {
          backend.download(out.local().rows(rowOff[me], mine), result, 0);
        }
      }
      case PARTIAL -> {
        try (Tensor recv = backend.empty(mine, w)) {
          comm.reduceScatter(out.local(), scale(rowCounts, w), recv);
          if (out.pendingBias() != null && mine > 0) {
            backend.addBias(recv, out.pendingBias());
          }
          backend.download(recv, result, 0);
        }
      }
      case SHARDED -> {
        Split split = out.split();
        int[] send = new int[p];
        int[] recvCounts = new int[p];
        for (int q = 0; q < p; q++) {
          send[q] = rowCounts[q] * split.length(me);
          recvCounts[q] = mine * split.length(q);
        }
        try (Tensor recv = backend.empty(1, Math.max(0, mine * w)); Tensor full = backend.empty(mine, w)) {
          comm.allToAll(out.local(), send, recv, recvCounts);
          int off = 0;
          for (int q = 0; q < p; q++) {
            backend.copyBlock(Mappings.sub(recv, off, mine, split.length(q)), 0, 0, full, 0, split.offset(q), mine,
                split.length(q));
            off += recvCounts[q];
          }
          backend.download(full, result, 0);
        }
      }
      default -> throw new IllegalStateException();
    }
    return result;
  }
}
