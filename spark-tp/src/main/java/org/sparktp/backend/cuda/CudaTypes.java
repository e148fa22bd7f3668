package org.sparktp.backend.cuda;

import java.util.List;
import org.sparktp.tensor.DType;

/**
 * The {@link DType}s the CUDA backend stores ({@code F32}, {@code BF16}, {@code F16}; arithmetic is always fp32,
 * bf16/f16 are storage for GEMM operands and outputs) and their CUDA and NCCL type codes.
 */
public final class CudaTypes {
  /** The storage types of CUDA tensors. */
  public static final List<DType> STORAGE = List.of(DType.F32, DType.BF16, DType.F16);

  private CudaTypes() {}

  /** The {@code cudaDataType_t} value cuBLASLt takes: CUDA_R_32F, CUDA_R_16BF, CUDA_R_16F. */
  public static int cudaType(DType dtype) {
    return switch (dtype) {
      case F32 -> 0;
      case BF16 -> 14;
      case F16 -> 2;
      default -> throw unsupported(dtype);
    };
  }

  /** The {@code ncclDataType_t} value NCCL takes: ncclFloat32, ncclBfloat16, ncclFloat16. */
  public static int ncclType(DType dtype) {
    return switch (dtype) {
      case F32 -> 7;
      case BF16 -> 9;
      case F16 -> 6;
      default -> throw unsupported(dtype);
    };
  }

  /** Refuses a dtype the CUDA backend does not store, naming the ones it does. */
  static DType check(DType dtype) {
    if (!STORAGE.contains(dtype)) {
      throw unsupported(dtype);
    }
    return dtype;
  }

  private static IllegalArgumentException unsupported(DType dtype) {
    return new IllegalArgumentException("The CUDA backend stores f32, bf16 and f16 tensors, not " + dtype.id());
  }
}
