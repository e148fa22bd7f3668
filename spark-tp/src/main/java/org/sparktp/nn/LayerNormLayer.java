package org.sparktp.nn;

import org.sparktp.tensor.Tensor;

/**
 * Layer normalisation over each row: {@code y = (x - mean(x)) / sqrt(var(x) + eps) * gamma + beta},
 * with the biased variance, as {@code torch.nn.LayerNorm}. Needs whole rows: input and output
 * {@link Layout#REPLICATED}; {@code gamma} and {@code beta} ({@code [1, width]}, either may be null)
 * are replicated.
 */
public final class LayerNormLayer implements Layer {
  private final String name;
  private final Tensor gamma;
  private final Tensor beta;
  private final float eps;

  public LayerNormLayer(String name, Tensor gamma, Tensor beta, float eps) {
    this.name = name;
    this.gamma = gamma;
    this.beta = beta;
    this.eps = eps;
  }

  @Override
  public String describe() {
    return "layer_norm " + name;
  }

  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    if (x.layout() != Layout.REPLICATED) {
      throw new IllegalStateException(describe() + " needs a replicated input, got " + x.layout());
    }
    long t0 = System.nanoTime();
    ctx.backend().layerNorm(x.local(), gamma, beta, eps);
    ctx.addCompute(System.nanoTime() - t0);
    return x;
  }

  @Override
  public long weightBytes() {
    return (gamma == null ? 0 : gamma.bytes()) + (beta == null ? 0 : beta.bytes());
  }

  @Override
  public void close() {
    if (gamma != null) {
      gamma.close();
    }
    if (beta != null) {
      beta.close();
    }
  }
}
