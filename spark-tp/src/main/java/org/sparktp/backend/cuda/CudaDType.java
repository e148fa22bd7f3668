package org.sparktp.backend.cuda;

/**
 * Storage types of the CUDA backend's tensors. Private to this package until the engine's own
 * {@code org.sparktp.tensor.DType} (issue 9) lands; then {@code CudaTensor} maps onto it. Arithmetic is
 * always fp32: bf16/f16 are storage for GEMM operands and outputs.
 */
public enum CudaDType {
  F32(4, 0, 7, "F32"),
  BF16(2, 14, 9, "BF16"),
  F16(2, 2, 6, "F16");

  private final int size;
  private final int cudaType; // cudaDataType_t: CUDA_R_32F, CUDA_R_16BF, CUDA_R_16F
  private final int ncclType; // ncclFloat32, ncclBfloat16, ncclFloat16
  private final String safetensorsName;

  CudaDType(int size, int cudaType, int ncclType, String safetensorsName) {
    this.size = size;
    this.cudaType = cudaType;
    this.ncclType = ncclType;
    this.safetensorsName = safetensorsName;
  }

  /** Bytes per element. */
  public int size() {
    return size;
  }

  /** The {@code cudaDataType_t} value cuBLASLt takes. */
  public int cudaType() {
    return cudaType;
  }

  /** The {@code ncclDataType_t} value NCCL takes. */
  public int ncclType() {
    return ncclType;
  }

  /** The safetensors dtype name. */
  public String safetensorsName() {
    return safetensorsName;
  }
}
