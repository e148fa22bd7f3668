package org.sparktp.nn;

import org.sparktp.backend.Activation;
import org.sparktp.tensor.Tensor;

/**
 * Replicated linear layer: {@code Y = act(X W^T + b)} with the whole {@code [out, in]} weight on every
 * rank. Input and output {@link Layout#REPLICATED}; no communication. For layers too small to split.
 */
public final class ReplicatedLinear implements Layer {
  private final String name;
  private final LinearKernel kernel;

  public ReplicatedLinear(String name, Tensor weight, Tensor bias, Activation epilogue) {
    this(name, weight, bias, epilogue, null);
  }

  /** As above, the weight stored as {@code storage} ({@link LinearKernel#create}; null: as it is). */
  public ReplicatedLinear(String name, Tensor weight, Tensor bias, Activation epilogue,
      org.sparktp.tensor.DType storage) {
    this.name = name;
    if (bias != null) {
      Shapes.check(name + ".bias", bias, 1, weight.rows());
    }
    this.kernel = LinearKernel.create(weight, bias, epilogue, storage);
  }

  @Override
  public String describe() {
    return "replicated linear " + name;
  }

  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    if (x.layout() != Layout.REPLICATED) {
      throw new IllegalStateException(describe() + " needs a replicated input, got " + x.layout());
    }
    Tensor y = kernel.apply(x.local(), true, ctx, name);
    x.close();
    return DistTensor.replicated(y);
  }

  @Override
  public long weightBytes() {
    return kernel.bytes();
  }

  @Override
  public void close() {
    kernel.close();
  }
}
