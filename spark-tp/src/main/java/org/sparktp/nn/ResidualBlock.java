package org.sparktp.nn;

import java.util.List;
import org.sparktp.tensor.Tensor;

/**
 * Residual block {@code y = x + f(x)}, where {@code f} is a list of layers run with their own plan
 * (collectives included). The input is {@link Layout#REPLICATED}; {@code f(x)} is brought back to
 * {@link Layout#REPLICATED} (an all-reduce when it ends partial) before the addition.
 */
public final class ResidualBlock implements Layer {
  private final List<Layer> body;

  public ResidualBlock(List<Layer> body) {
    this.body = List.copyOf(body);
  }

  @Override
  public String describe() {
    return "residual(" + body.size() + " ops)";
  }

  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    if (x.layout() != Layout.REPLICATED) {
      throw new IllegalStateException("A residual block needs a replicated input, got " + x.layout());
    }
    Tensor skip = ctx.backend().empty(x.rows(), x.width());
    try {
      ctx.backend().copyBlock(x.local(), 0, 0, skip, 0, 0, x.rows(), x.width());
      // the body's ops hand activations on in the activation dtype; the sum is taken in f32
      DistTensor h = ctx.widen(Mappings.toReplicated(Layer.runAll(body, x, ctx, true), ctx));
      long t0 = System.nanoTime();
      ctx.backend().add(h.local(), skip);
      ctx.addCompute(System.nanoTime() - t0);
      return h;
    } finally {
      skip.close();
    }
  }

  @Override
  public long weightBytes() {
    long b = 0;
    for (Layer l : body) {
      b += l.weightBytes();
    }
    return b;
  }

  @Override
  public void close() {
    for (Layer l : body) {
      l.close();
    }
  }
}
