package org.sparktp.nn.ops;

import org.sparktp.comm.Communicator;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.RunContext;
import org.sparktp.tensor.Tensor;

/**
 * Streams sequences through a tensor-parallel group, one micro-batch per {@link #step}, as
 * {@link org.sparktp.nn.run.TpRunner} does for vectors: exchange the row counts (all zero ends the stream),
 * all-gather the ids and the per-row lengths (the offsets of the ragged batch), run the plan on the
 * group's rows, keep this rank's rows of the (replicated) output. No padding anywhere.
 */
public final class TransformerRunner {
  private final TransformerRankModel model;
  private final Communicator comm;
  private final RunContext ctx;
  private long rows;
  private long tokens;
  private long steps;

  public TransformerRunner(TransformerRankModel model, Communicator comm) {
    this.model = model;
    this.comm = comm;
    this.ctx = new RunContext(model.backend(), comm);
    if (comm.size() != model.plan().tpSize() || comm.rank() != model.rank()) {
      throw new IllegalArgumentException("Rank " + model.rank() + " of a tp=" + model.plan().tpSize()
          + " model given the communicator of rank " + comm.rank() + " of " + comm.size());
    }
  }

  /**
   * Stores the activations between ops in {@code dtype} (f32, bf16, f16; {@code spark.tp.activation-dtype}); f32
   * unless set. Returns this.
   */
  public TransformerRunner activationDtype(org.sparktp.tensor.DType dtype) {
    ctx.activationDtype(dtype);
    return this;
  }

  public int outputWidth() {
    return model.plan().outputDim();
  }

  public long rows() {
    return rows;
  }

  public long tokens() {
    return tokens;
  }

  public long steps() {
    return steps;
  }

  public long computeNanos() {
    return ctx.computeNanos();
  }

  /** Nanoseconds in attention cores so far (part of {@link #computeNanos()}). */
  public long attentionNanos() {
    return ctx.attentionNanos();
  }

  /**
   * Runs one step with this rank's sequences ({@code InputBatch.bags(ids, offsets, rows)}: row {@code r} is
   * {@code ids[offsets[r] .. offsets[r+1])}; zero rows once the partition is exhausted). Rows are
   * checked ({@link TransformerPlan#checkRow}) and truncated when the plan says so.
   *
   * @return this rank's outputs {@code [mine.rows(), outputWidth()]} row-major, or null when no rank had rows
   */
  public float[] step(InputBatch mine) {
    if (mine.kind() != InputBatch.Kind.BAGS) {
      throw new IllegalArgumentException("A transformer takes a sequence of token ids per row, got "
          + mine.kind().name().toLowerCase(java.util.Locale.ROOT) + " input");
    }
    int n = mine.rows();
    int[] lens = new int[n];
    int total = 0;
    for (int r = 0; r < n; r++) {
      lens[r] = model.plan().checkRow(mine.ids(), mine.offsets()[r], mine.offsets()[r + 1], "Row " + r
          + " of the batch");
      total += lens[r];
    }
    int[] ids = new int[total];
    int k = 0;
    for (int r = 0; r < n; r++) {
      System.arraycopy(mine.ids(), mine.offsets()[r], ids, k, lens[r]);
      k += lens[r];
    }
    int p = comm.size();
    long[] counts = comm.allGatherLong(((long) n << 32) | total);
    int[] rowCounts = new int[p];
    int[] idCounts = new int[p];
    int allRows = 0;
    int allIds = 0;
    int myRow = 0;
    for (int r = 0; r < p; r++) {
      rowCounts[r] = (int) (counts[r] >>> 32);
      idCounts[r] = (int) (counts[r] & 0xffffffffL);
      if (r < comm.rank()) {
        myRow += rowCounts[r];
      }
      allRows += rowCounts[r];
      allIds += idCounts[r];
    }
    if (allRows == 0) {
      return null;
    }
    steps++;
    rows += n;
    tokens += total;
    int[] gIds = p == 1 ? ids : gatherInts(ids, idCounts, allIds);
    int[] gLens = p == 1 ? lens : gatherInts(lens, rowCounts, allRows);
    int[] off = new int[allRows + 1];
    for (int r = 0; r < allRows; r++) {
      off[r + 1] = off[r] + gLens[r];
    }
    int w = outputWidth();
    float[] out = new float[n * w];
    try (DistTensor y = model.forward(Tokens.of(gIds, off), ctx)) {
      if (n > 0) {
        model.backend().download(y.local().rows(myRow, n), out, 0);
      }
    }
    return out;
  }

  /** All-gathers ints (carried bit for bit in float slots, never summed). */
  private int[] gatherInts(int[] mine, int[] counts, int total) {
    float[] bits = new float[mine.length];
    for (int i = 0; i < mine.length; i++) {
      bits[i] = Float.intBitsToFloat(mine[i]);
    }
    var be = model.backend();
    try (Tensor send = be.upload(bits, 0, 1, bits.length); Tensor recv = be.empty(1, total)) {
      comm.allGather(send, recv, counts);
      float[] got = be.download(recv);
      int[] out = new int[total];
      for (int i = 0; i < total; i++) {
        out[i] = Float.floatToRawIntBits(got[i]);
      }
      return out;
    }
  }
}
