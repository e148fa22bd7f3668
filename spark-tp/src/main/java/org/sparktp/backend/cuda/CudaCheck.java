package org.sparktp.backend.cuda;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.cuda.global.cublas;
import org.bytedeco.cuda.global.cudart;

/** Turns a status code of the runtime, the driver or cuBLASLt into a {@link CudaException}. */
final class CudaCheck {
  private CudaCheck() {}

  /** A runtime API status ({@code cudaError_t}). */
  static void cuda(int rc, String call) {
    if (rc != 0) {
      throw new CudaException(call, rc, errorString(rc));
    }
  }

  /** A driver API status ({@code CUresult}). */
  static void cu(int rc, String call) {
    if (rc != 0) {
      String text = "CUresult " + rc;
      try (PointerPointer<BytePointer> p = new PointerPointer<>(1)) {
        if (cudart.cuGetErrorString(rc, p) == 0 && p.get(0) != null) {
          text = p.getString(0);
        }
      } catch (Throwable t) {
        // keep the numeric text
      }
      throw new CudaException(call, rc, text);
    }
  }

  /** A cuBLAS/cuBLASLt status ({@code cublasStatus_t}). */
  static void lt(int rc, String call) {
    if (rc != 0) {
      String text;
      try {
        text = cublas.cublasLtGetStatusString(rc).getString();
      } catch (Throwable t) {
        text = "cublasStatus " + rc;
      }
      throw new CudaException(call, rc, text);
    }
  }

  static String errorString(int rc) {
    try {
      return cudart.cudaGetErrorString(rc).getString();
    } catch (Throwable t) {
      return "cudaError " + rc;
    }
  }
}
