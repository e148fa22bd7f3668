package org.sparktp.nn;

import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.Tensor;

/** {@code act(X W^T + b)} on one rank, with {@code W} in PyTorch's {@code [out, in]} layout; no weight copy. */
public final class LinearKernel implements AutoCloseable {
  final Tensor weight; // [out, in]
  final Tensor bias; // [1, out] or null
  final Activation epilogue;

  public LinearKernel(Tensor weight, Tensor bias, Activation epilogue) {
    this.weight = weight;
    this.bias = bias;
    this.epilogue = epilogue == null ? Activation.IDENTITY : epilogue;
  }

  /** {@code act(x W^T + bias)}; {@code bias} and the activation are applied in one pass over the output. */
  public Tensor apply(Tensor x, boolean withBias, RunContext ctx, String name) {
    if (x.cols() != weight.cols()) {
      throw new IllegalArgumentException("Layer " + name + " expects input width " + weight.cols() + ", got "
          + x.cols());
    }
    Backend be = ctx.backend();
    long t0 = System.nanoTime();
    Tensor y = be.empty(x.rows(), weight.rows());
    be.gemm(false, true, 1f, x, weight, 0f, y);
    be.biasActivate(y, withBias ? bias : null, epilogue);
    ctx.addCompute(System.nanoTime() - t0);
    return y;
  }

  /** The bias {@code [1, out]} or null. */
  public Tensor bias() {
    return bias;
  }

  public long bytes() {
    return 4 * (weight.numel() + (bias == null ? 0 : bias.numel()));
  }

  @Override
  public void close() {
    weight.close();
    if (bias != null) {
      bias.close();
    }
  }
}
