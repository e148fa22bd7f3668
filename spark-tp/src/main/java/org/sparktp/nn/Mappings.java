package org.sparktp.nn;

import org.sparktp.backend.Backend;
import org.sparktp.comm.Communicator;
import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * The collectives that change an activation's layout, in one place (Megatron's {@code mappings.py}).
 * Each is named by the change it makes; each skips communication when the group has one rank. Every
 * method consumes its input (closes it when it returns a new tensor, and when its collective fails).
 * Gathers and slices keep the activation's dtype (bf16 moves as bf16); reductions take f32 partial sums.
 */
public final class Mappings {
  private Mappings() {}

  /**
   * {@code PARTIAL -> REPLICATED}: all-reduce the summands, then add the pending bias once.
   * {@code SHARDED -> REPLICATED}: all-gather the column blocks and concatenate them.
   */
  public static DistTensor toReplicated(DistTensor x, RunContext ctx) {
    return switch (x.layout()) {
      case REPLICATED -> x;
      case PARTIAL -> reduceFromPartial(x, ctx);
      case SHARDED -> gatherFromSharded(x, ctx);
    };
  }

  /** {@code * -> SHARDED by split}: a local column slice of the replicated tensor (no communication). */
  public static DistTensor toSharded(DistTensor x, Split split, RunContext ctx) {
    if (x.layout() == Layout.SHARDED && x.split().equals(split)) {
      return x;
    }
    DistTensor full = toReplicated(x, ctx);
    return scatterToSharded(full, split, ctx);
  }

  static DistTensor reduceFromPartial(DistTensor x, RunContext ctx) {
    try {
      ctx.comm().allReduce(x.local());
    } catch (RuntimeException e) {
      x.close(); // consumed on failure too: a failed collective leaks nothing
      throw e;
    }
    if (x.pendingBias() != null) {
      long t0 = System.nanoTime();
      ctx.backend().addBias(x.local(), x.pendingBias());
      ctx.addCompute(System.nanoTime() - t0);
    }
    return DistTensor.replicated(x.local());
  }

  static DistTensor gatherFromSharded(DistTensor x, RunContext ctx) {
    Communicator comm = ctx.comm();
    Backend be = ctx.backend();
    Split split = x.split();
    int rows = x.rows();
    if (comm.size() == 1) {
      return DistTensor.replicated(x.local());
    }
    int[] counts = new int[comm.size()];
    for (int r = 0; r < counts.length; r++) {
      counts[r] = Math.multiplyExact(rows, split.length(r));
    }
    // an all-gather is exact: a bf16/f16 activation moves in its own dtype (half the bytes of f32)
    org.sparktp.tensor.DType dt = x.local().dtype();
    try (Tensor gathered = be.allocate(1, (int) org.sparktp.comm.Collectives.sum(counts), dt)) {
      try {
        comm.allGather(x.local(), gathered, counts);
      } catch (RuntimeException e) {
        x.close();
        throw e;
      }
      Tensor out = be.allocate(rows, split.size(), dt);
      int off = 0;
      for (int r = 0; r < counts.length; r++) {
        // block r is rank r's [rows, split.length(r)], starting at element off
        be.copyBlock(sub(gathered, off, rows, split.length(r)), 0, 0, out, 0, split.offset(r), rows, split.length(r));
        off += counts[r];
      }
      x.close();
      return DistTensor.replicated(out);
    }
  }

  /** The elements {@code [offset, offset + rows*cols)} of a flat {@code [1, n]} tensor seen as a matrix. */
  public static Tensor sub(Tensor flat, int offset, int rows, int cols) {
    int n = rows * cols;
    Tensor row = flat.reshape(flat.cols(), 1).rows(offset, n);
    return row.reshape(rows, cols);
  }

  static DistTensor scatterToSharded(DistTensor full, Split split, RunContext ctx) {
    if (split.parts() != ctx.size()) {
      throw new IllegalStateException("Split into " + split.parts() + " parts used in a group of " + ctx.size());
    }
    int r = ctx.rank();
    Tensor out = ctx.backend().allocate(full.rows(), split.length(r), full.local().dtype());
    ctx.backend().copyBlock(full.local(), 0, split.offset(r), out, 0, 0, full.rows(), split.length(r));
    full.close();
    return DistTensor.sharded(out, split);
  }
}
