package org.sparktp.nn.ops;

import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.Layout;
import org.sparktp.nn.Mappings;
import org.sparktp.shard.Split;

/**
 * The collective the {@link Planner} inserts where the layout an op takes differs from the one the op before it
 * gives ({@link Mappings}): {@code PARTIAL -> REPLICATED} all-reduce (then the pending bias, once),
 * {@code SHARDED -> REPLICATED} all-gather, {@code REPLICATED -> SHARDED} a local slice (no communication), and to
 * {@code SHARDED} from the others through the replicated tensor.
 *
 * @param width the activation's (global) width
 * @param split the column split of a sharded result, else null
 */
public record LayoutChangeOp(Layout from, Layout to, int width, Split split) implements Op {

  @Override
  public String name() {
    return "layout change";
  }

  @Override
  public Layout in() {
    return from;
  }

  @Override
  public Layout out() {
    return to;
  }

  /** Gathers and slices move elements exactly in any dtype (bf16 moves as bf16); a reduction takes f32 sums. */
  @Override
  public boolean takesStored() {
    return from != Layout.PARTIAL;
  }

  @Override
  public int collectives(int p) {
    return p > 1 && bytesPerRow(Math.max(2, p)) > 0 ? 1 : 0;
  }

  @Override
  public String collective(int p) {
    if (p == 1) {
      return "none (one rank)";
    }
    if (to == Layout.SHARDED) {
      return switch (from) {
        case REPLICATED -> "slice (no communication)";
        case PARTIAL -> "all-reduce + slice";
        case SHARDED -> "all-gather + slice";
      };
    }
    return from == Layout.PARTIAL ? "all-reduce" : "all-gather";
  }

  /** Bytes one rank sends per activation row (f32) with ring algorithms over {@code p} ranks. */
  @Override
  public double bytesPerRow(int p) {
    if (p == 1) {
      return 0;
    }
    double frac = (p - 1) / (double) p;
    double w = 4.0 * width;
    if (to == Layout.SHARDED && from == Layout.REPLICATED) {
      return 0;
    }
    return from == Layout.PARTIAL ? 2 * frac * w : frac * w;
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    return List.of();
  }

  @Override
  public String label(int p) {
    return "(layout change)";
  }

  @Override
  public String describe(int p) {
    return from + " -> " + to + " (" + collective(p) + ")";
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    return (x, tokens, ctx) -> {
      if (x.layout() != from) {
        IllegalStateException e = new IllegalStateException("Plan step " + describe(p) + " got a " + x.layout()
            + " activation");
        AttentionOp.closeQuietly(x, e);
        throw e;
      }
      return to == Layout.REPLICATED ? Mappings.toReplicated(x, ctx) : Mappings.toSharded(x, split, ctx);
    };
  }
}
