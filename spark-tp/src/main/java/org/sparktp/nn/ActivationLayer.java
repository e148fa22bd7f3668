package org.sparktp.nn;

import org.sparktp.backend.Activation;

/**
 * {@code y = act(x)}. Elementwise activations work on any non-partial layout and keep it (a sharded
 * input stays sharded, with no communication); softmax needs whole rows, so a replicated input.
 */
public final class ActivationLayer implements Layer {
  private final Activation activation;

  public ActivationLayer(Activation activation) {
    this.activation = activation;
  }

  public Activation activation() {
    return activation;
  }

  @Override
  public String describe() {
    return activation.id();
  }

  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    if (x.layout() == Layout.PARTIAL || (!activation.isElementwise() && x.layout() != Layout.REPLICATED)) {
      throw new IllegalStateException(activation.id() + " cannot run on a " + x.layout() + " activation");
    }
    long t0 = System.nanoTime();
    ctx.backend().activate(x.local(), activation);
    ctx.addCompute(System.nanoTime() - t0);
    return x;
  }

  @Override
  public long weightBytes() {
    return 0;
  }

  @Override
  public void close() {}
}
