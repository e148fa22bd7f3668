package org.sparktp.nn;

import org.sparktp.shard.Split;

/** A plan step that only changes the layout, through {@link Mappings}. */
final class LayoutChange implements Layer {
  private final Step.Convert step;

  LayoutChange(Step.Convert step) {
    this.step = step;
  }

  @Override
  public String describe() {
    return step.in() + " -> " + step.out() + " (" + step.collective() + ")";
  }

  /** Gathers and slices move elements exactly in any dtype; a reduction takes f32 partial sums. */
  @Override
  public boolean takesStored() {
    return step.in() != Layout.PARTIAL;
  }

  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    if (x.layout() != step.in()) {
      throw new IllegalStateException("Plan step " + describe() + " got a " + x.layout() + " activation");
    }
    if (step.out() == Layout.REPLICATED) {
      return Mappings.toReplicated(x, ctx);
    }
    Split s = step.split();
    return Mappings.toSharded(x, s, ctx);
  }

  @Override
  public long weightBytes() {
    return 0;
  }

  @Override
  public void close() {}
}
