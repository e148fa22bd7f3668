package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.List;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.nn.LinearKernel;
import org.sparktp.nn.Parallel;
import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * A linear layer {@code Y = act(X W^T + b)}, {@code W} PyTorch's {@code [out, in]} ({@code <name>.weight}),
 * {@code b} {@code [out]} ({@code <name>.bias}) or none, split by its {@link Mode}:
 *
 * <ul>
 *   <li>{@code COLUMN}: {@code W = [W_1; ...; W_p]} by output features (balanced), {@code b} the same way; rank
 *       {@code r} computes {@code Y_r = act(X W_r^T + b_r)}: {@code REPLICATED -> SHARDED}.
 *   <li>{@code ROW}: {@code W = [W_1 ... W_p]} by input features, {@code X = [X_1 ... X_p]} the same way; rank
 *       {@code r} computes the partial sum {@code X_r W_r^T}, and {@code b} is added once, after the reduction:
 *       {@code SHARDED -> PARTIAL}.
 *   <li>{@code REPLICATED}: the whole {@code W} on every rank (a layer too small to split):
 *       {@code REPLICATED -> REPLICATED}.
 * </ul>
 *
 * A model builds it unplanned ({@link #of}: {@code mode} null, {@code parallel} what the model asks); the
 * {@link Planner} picks the mode ({@code auto} alternates column and row so that each pair costs one reduction;
 * replicated when the split dimension is smaller than {@code p}; a forced mode that cannot split is an error) and
 * fuses a following elementwise activation into the {@code epilogue} of a column or replicated linear.
 */
public record LinearOp(String name, int inFeatures, int outFeatures, boolean hasBias, Parallel parallel, Mode mode,
    Split split, Activation epilogue) implements Op {

  /** How a planned linear is split. */
  public enum Mode { COLUMN, ROW, REPLICATED }

  /** An unplanned linear {@code [in -> out]}. */
  public static LinearOp of(String name, int in, int out, boolean hasBias, Parallel parallel) {
    return new LinearOp(name, in, out, hasBias, parallel == null ? Parallel.AUTO : parallel, null, null,
        Activation.IDENTITY);
  }

  @Override
  public Layout in() {
    return mode == Mode.ROW ? Layout.SHARDED : Layout.REPLICATED;
  }

  @Override
  public Layout out() {
    return mode == Mode.COLUMN ? Layout.SHARDED : mode == Mode.ROW ? Layout.PARTIAL : Layout.REPLICATED;
  }

  @Override
  public void place(Planner pl) {
    int p = pl.p();
    Mode m = switch (parallel) {
      case COLUMN -> Mode.COLUMN;
      case ROW -> Mode.ROW;
      case REPLICATED -> Mode.REPLICATED;
      case AUTO -> auto(pl);
    };
    if (p == 1 && m != Mode.REPLICATED) {
      // one rank: the split is the whole weight; run it replicated (same math, no layouts to track)
      Split.balanced(m == Mode.COLUMN ? outFeatures : inFeatures, 1, 1, name);
      m = Mode.REPLICATED;
    }
    Op next = pl.peek();
    Activation fused = next == null || m == Mode.ROW ? null : next.fusible();
    if (fused != null) {
      pl.skip();
    }
    Activation epi = fused == null ? Activation.IDENTITY : fused;
    switch (m) {
      case COLUMN -> {
        Split s = Split.balanced(outFeatures, p, 1, "the output features of '" + name + "'");
        pl.toReplicated();
        pl.add(new LinearOp(name, inFeatures, outFeatures, hasBias, parallel, m, s, epi), s, outFeatures);
      }
      case ROW -> {
        Split s = Split.balanced(inFeatures, p, 1, "the input features of '" + name + "'");
        pl.toSharded(s);
        pl.add(new LinearOp(name, inFeatures, outFeatures, hasBias, parallel, m, s, epi), null, outFeatures);
      }
      default -> {
        pl.toReplicated();
        pl.add(new LinearOp(name, inFeatures, outFeatures, hasBias, parallel, m, null, epi), null, outFeatures);
      }
    }
  }

  private Mode auto(Planner pl) {
    int p = pl.p();
    if (p == 1) {
      return Mode.REPLICATED;
    }
    boolean sharded = pl.layout() == Layout.SHARDED && inFeatures >= p;
    if (sharded && Split.balanced(inFeatures, p).equals(pl.split())) {
      return Mode.ROW;
    }
    if (outFeatures >= p) {
      return Mode.COLUMN;
    }
    return sharded ? Mode.ROW : Mode.REPLICATED;
  }

  private Mode planned() {
    if (mode == null) {
      throw new IllegalStateException("Linear '" + name + "' is not planned yet (see Planner)");
    }
    return mode;
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    String w = name + ".weight";
    String b = name + ".bias";
    List<Slice> s = new ArrayList<>(2);
    switch (planned()) {
      case COLUMN -> {
        s.add(Slice.rows(w, split.offset(rank), split.length(rank), outFeatures, inFeatures));
        if (hasBias) {
          s.add(Slice.elements(b, split.offset(rank), split.length(rank), outFeatures));
        }
      }
      case ROW -> {
        s.add(Slice.columns(w, split.offset(rank), split.length(rank), outFeatures, inFeatures));
        if (hasBias) {
          s.add(Slice.elements(b, 0, outFeatures, outFeatures));
        }
      }
      default -> {
        s.add(Slice.all(w, outFeatures, inFeatures));
        if (hasBias) {
          s.add(Slice.elements(b, 0, outFeatures, outFeatures));
        }
      }
    }
    return s;
  }

  @Override
  public String describe(int p) {
    return planned().name().toLowerCase(java.util.Locale.ROOT) + " linear " + name + " [" + inFeatures + "->"
        + outFeatures + "]" + (epilogue == Activation.IDENTITY ? "" : " +" + epilogue.id());
  }

  @Override
  public String unsplit(int p) {
    return p > 1 && mode == Mode.REPLICATED && parallel != Parallel.REPLICATED
        ? name + " [" + inFeatures + "->" + outFeatures + "]" : null;
  }

  @Override
  public int splitDim() {
    return Math.min(inFeatures, outFeatures);
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    Mode m = planned();
    List<Slice> sl = slices(p, rank);
    LinearKernel k;
    if (!hasBias) {
      k = w.linear(sl.get(0), epilogue); // shares a tied embedding's table where the kernel keeps it as it is
    } else {
      float[] bt = w.floats(sl.get(1));
      Tensor wt = w.take(sl.get(0));
      Tensor bias;
      try {
        bias = backend.upload(bt, 1, bt.length);
      } catch (RuntimeException e) {
        wt.close();
        throw e;
      }
      k = w.linear(wt, bias, epilogue);
    }
    return (x, tokens, ctx) -> {
      try {
        Layout want = in();
        if (x.layout() != want || (m == Mode.ROW && !split.equals(x.split()))) {
          throw new IllegalStateException(describe(p) + " needs a " + want + (m == Mode.ROW ? " " + split : "")
              + " input, got " + x.layout() + (x.split() == null ? "" : " " + x.split()));
        }
        boolean single = ctx.size() == 1;
        Tensor y = k.apply(x.local(), m != Mode.ROW || single, ctx, name);
        x.close();
        return switch (m) {
          case COLUMN -> DistTensor.sharded(y, split);
          case ROW -> single ? DistTensor.replicated(y) : DistTensor.partial(y, k.bias());
          default -> DistTensor.replicated(y);
        };
      } catch (RuntimeException e) {
        AttentionOp.closeQuietly(x, e);
        throw e;
      }
    };
  }
}
