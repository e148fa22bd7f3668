package org.sparktp.backend.cuda;

import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.backend.Tensor;
import org.sparktp.tensor.DType;

/**
 * The engine's linear on the CUDA backend, {@code y = act(x W^T + b)} with {@code W [out, in]} stored as f32, bf16
 * or f16 and fp32 accumulation: one cuBLASLt matmul whose epilogue adds the bias and applies ReLU or tanh-GeLU
 * ({@code CUBLASLT_EPILOGUE_BIAS}, {@code _RELU_BIAS}, {@code _GELU_BIAS}); other activations (erf GeLU, SiLU,
 * ...) run as one kernel after the bias epilogue ({@link CudaBackend#linear}). With 16-bit weights the f32
 * activations are rounded to the weights' type on the device first (cuBLASLt multiplies operands of one type, as
 * vLLM and TensorRT-LLM run bf16 activations into bf16 GEMMs) and the output stays f32, so a row-parallel partial
 * sum is reduced in f32. Owns the weight and the bias.
 */
final class CudaLinear implements Backend.PreparedLinear {
  private final CudaBackend backend;
  private final CudaTensor weight;
  private final CudaTensor bias;
  private final Activation act;
  private boolean closed;

  CudaLinear(CudaBackend backend, Tensor weight, Tensor bias, Activation epilogue) {
    this.backend = backend;
    this.weight = CudaBackend.cuda(weight);
    CudaTensor b = bias == null ? null : CudaBackend.cuda(bias);
    if (b != null && b.numel() != this.weight.rows()) {
      throw new IllegalArgumentException("A linear's bias has " + b.numel() + " elements, its weight "
          + this.weight.shape() + " has " + this.weight.rows() + " output features");
    }
    this.bias = b;
    this.act = epilogue == null ? Activation.IDENTITY : epilogue;
  }

  /** The kernel name explain and doctor show: cuBLASLt with the storage and the fused epilogue. */
  static String kernel(DType storage) {
    return "cublasLt " + storage.id() + " (f32 accumulate, bias/relu/gelu-tanh epilogue)";
  }

  @Override
  public Tensor apply(Tensor x, boolean withBias) {
    CudaTensor in = CudaBackend.f32(x, "linear");
    if (in.cols() != weight.cols()) {
      throw new IllegalArgumentException("A linear of " + weight.shape() + " got input " + in.shape()
          + ": in-features differ");
    }
    CudaTensor y = backend.empty(in.rows(), weight.rows(), DType.F32);
    try {
      if (weight.dtype() == DType.F32) {
        backend.linear(in, weight, withBias ? bias : null, act, y);
      } else {
        try (CudaTensor narrow = backend.cast(in, weight.dtype())) {
          backend.linear(narrow, weight, withBias ? bias : null, act, y);
        }
      }
      return y;
    } catch (RuntimeException | Error e) {
      y.close();
      throw e;
    }
  }

  @Override
  public long bytes() {
    return weight.bytes() + (bias == null ? 0 : bias.bytes());
  }

  @Override
  public String kernel() {
    return kernel(weight.dtype());
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    weight.close();
    if (bias != null) {
      bias.close();
    }
  }

  /** {@link CudaBackend#linear}: fused where cuBLASLt has the epilogue, else GEMM then kernels. */
  static void linear(CudaBackend be, CudaGemm matmuls, Tensor x, Tensor w, Tensor bias, Activation act,
      Tensor out) {
    CudaTensor o = CudaBackend.cuda(out);
    boolean fused = act == Activation.IDENTITY || (bias != null
        && (act == Activation.GELU_TANH || act == Activation.RELU));
    try {
      if (fused) {
        matmuls.matmul(false, true, 1f, x, w, 0f, o, bias, act);
        return;
      }
      if (o.dtype() == DType.F32) {
        matmuls.matmul(false, true, 1f, x, w, 0f, o, bias, Activation.IDENTITY);
        be.activate(o, act);
        return;
      }
      try (CudaTensor tmp = be.empty(o.rows(), o.cols(), DType.F32)) {
        matmuls.matmul(false, true, 1f, x, w, 0f, tmp, bias, Activation.IDENTITY);
        be.activate(tmp, act);
        try (CudaTensor cast = be.cast(tmp, o.dtype())) {
          be.copyBlock(cast, 0, 0, o, 0, 0, o.rows(), o.cols());
        }
      }
    } catch (CudaException e) {
      if (bias == null || !e.call().startsWith("cublasLtMatmulAlgoGetHeuristic")) {
        throw e;
      }
      // cuBLASLt has no algorithm with this epilogue for these types: plain GEMM, then bias + activation kernels
      unfused(be, matmuls, x, w, bias, act, o);
    }
  }

  private static void unfused(CudaBackend be, CudaGemm matmuls, Tensor x, Tensor w, Tensor bias, Activation act,
      CudaTensor o) {
    CudaTensor tmp = o.dtype() == DType.F32 ? o : be.empty(o.rows(), o.cols(), DType.F32);
    CudaTensor b32 = CudaBackend.cuda(bias).dtype() == DType.F32 ? null : be.cast(bias, DType.F32);
    try {
      matmuls.matmul(false, true, 1f, x, w, 0f, tmp, null, Activation.IDENTITY);
      be.biasActivate(tmp, b32 == null ? bias : b32, act);
      if (tmp != o) {
        try (CudaTensor cast = be.cast(tmp, o.dtype())) {
          be.copyBlock(cast, 0, 0, o, 0, 0, o.rows(), o.cols());
        }
      }
    } finally {
      if (b32 != null) {
        b32.close();
      }
      if (tmp != o) {
        tmp.close();
      }
    }
  }
}
