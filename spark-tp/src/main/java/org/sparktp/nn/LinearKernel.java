package org.sparktp.nn;

import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * {@code act(X W^T + b)} on one rank, with {@code W} in PyTorch's {@code [out, in]} layout: the one place
 * where a linear's weight shard lives and its GEMM runs. The weight is handed to its backend's
 * {@link Backend#prepareLinear} once, at shard load: the CPU backend prepacks it for oneDNN (bf16/f16
 * weights, or f32 with {@code spark.tp.cpu.gemm=onednn}) or keeps it for OpenBLAS {@code sgemm}.
 */
public final class LinearKernel implements AutoCloseable {
  final Tensor weight; // [out, in]; after prepacking only its shape is used (its memory may be freed)
  final Tensor bias; // [1, out] f32 or null
  final Activation epilogue;
  private final Backend.PreparedLinear prepared;

  public LinearKernel(Tensor weight, Tensor bias, Activation epilogue) {
    this.weight = weight;
    this.bias = bias;
    this.epilogue = epilogue == null ? Activation.IDENTITY : epilogue;
    this.prepared = weight.backend().prepareLinear(weight, bias, this.epilogue);
  }

  /**
   * A linear whose weight is stored as {@code storage}, prepared by
   * {@link Backend#prepareLinear(Tensor, Tensor, Activation, DType)}: {@code F32}, {@code BF16}, {@code F16} (a
   * weight in another type is converted once, on its backend, and the source closed) or {@code I8} (int8
   * weight-only: the weight, in any float type, is quantized per output channel, symmetric, one f32 scale per
   * row, see {@link org.sparktp.tensor.Int8Quant}); null keeps the weight's type. Takes ownership of
   * {@code weight} and {@code bias} as the constructor does; on a failure the backend closes both.
   */
  public static LinearKernel create(Tensor weight, Tensor bias, Activation epilogue, DType storage) {
    return new LinearKernel(weight, bias, epilogue, storage == null ? weight.dtype() : storage);
  }

  private LinearKernel(Tensor weight, Tensor bias, Activation epilogue, DType storage) {
    this.weight = weight; // after a conversion or quantization only its shape is used (the backend closed it)
    this.bias = bias;
    this.epilogue = epilogue == null ? Activation.IDENTITY : epilogue;
    this.prepared = weight.backend().prepareLinear(weight, bias, this.epilogue, storage);
  }

  /** {@code act(x W^T + bias)}; {@code bias} and the activation are applied in the GEMM's epilogue. */
  public Tensor apply(Tensor x, boolean withBias, RunContext ctx, String name) {
    if (x.cols() != weight.cols()) {
      throw new IllegalArgumentException("Layer " + name + " expects input width " + weight.cols() + ", got "
          + x.cols());
    }
    long t0 = System.nanoTime();
    Tensor y = prepared.apply(x, withBias);
    ctx.addCompute(System.nanoTime() - t0);
    return y;
  }

  /** The bias {@code [1, out]} or null. */
  public Tensor bias() {
    return bias;
  }

  /** Bytes of the weight (as stored: packed bf16 is half of f32, int8 a quarter plus its scales) and bias. */
  public long bytes() {
    return prepared.bytes();
  }

  /** The kernel that runs the GEMM ({@code openblas}, {@code onednn brg_matmul:avx512_core_amx}, ...). */
  public String kernel() {
    return prepared.kernel();
  }

  @Override
  public void close() {
    prepared.close();
    weight.close();
    if (bias != null) {
      bias.close();
    }
  }
}
