package org.sparktp.nn.ops;

import java.util.List;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.nn.Layout;
import org.sparktp.shard.Split;

/**
 * {@code y = act(x)}, no weights. An elementwise activation runs on any layout but a partial sum and keeps it (a
 * sharded input stays sharded, with no communication; after a column or replicated linear the planner fuses it
 * into that linear's epilogue); softmax needs whole rows, so a replicated input.
 *
 * @param layout the layout it runs on (set by the planner; null before)
 * @param split the column split of a sharded input, else null
 */
public record ActivationOp(Activation activation, int width, Split split, Layout layout) implements Op {

  /** An unplanned activation of a {@code width}-wide input. */
  public static ActivationOp of(Activation activation, int width) {
    return new ActivationOp(activation, width, null, null);
  }

  @Override
  public String name() {
    return activation.id();
  }

  @Override
  public Layout in() {
    return layout == null ? Layout.REPLICATED : layout;
  }

  @Override
  public Layout out() {
    return in();
  }

  @Override
  public Activation fusible() {
    return activation.isElementwise() ? activation : null;
  }

  @Override
  public void place(Planner pl) {
    if (pl.layout() == Layout.PARTIAL || (!activation.isElementwise() && pl.layout() != Layout.REPLICATED)) {
      pl.toReplicated();
    }
    pl.add(new ActivationOp(activation, width, pl.split(), pl.layout()), pl.split(), width);
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    return List.of();
  }

  @Override
  public String describe(int p) {
    return activation.id();
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    return (x, tokens, ctx) -> {
      try {
        if (x.layout() == Layout.PARTIAL || (!activation.isElementwise() && x.layout() != Layout.REPLICATED)) {
          throw new IllegalStateException(activation.id() + " cannot run on a " + x.layout() + " activation");
        }
        long t0 = System.nanoTime();
        ctx.backend().activate(x.local(), activation);
        ctx.addCompute(System.nanoTime() - t0);
        return x;
      } catch (RuntimeException e) {
        AttentionOp.closeQuietly(x, e);
        throw e;
      }
    };
  }
}
