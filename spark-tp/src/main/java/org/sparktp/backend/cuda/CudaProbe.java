package org.sparktp.backend.cuda;

import java.nio.file.Path;
import java.util.List;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.cuda.global.cublas;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.global.nvrtc;

/**
 * Whether the CUDA backend and NCCL can run in this JVM, computed once and cached: loads JavaCPP's glue for
 * cudart (which needs the driver {@code libcuda.so.1} and {@code libcudart.so.13}), asks for the device count,
 * then loads cuBLAS(Lt), NVRTC and, separately, NCCL. A failure says which library is missing and where it
 * looked ({@link CudaLibraries}).
 */
public final class CudaProbe {
  private CudaProbe() {}

  /**
   * The result: {@code backendReason} null when the CUDA backend can run (then {@code devices} > 0),
   * {@code ncclReason} null when NCCL loads as well; {@code versions} a one-line description.
   */
  public record Status(String backendReason, String ncclReason, int devices, String versions) {
    public boolean available() {
      return backendReason == null;
    }

    public boolean ncclAvailable() {
      return backendReason == null && ncclReason == null;
    }
  }

  private static volatile Status cached;

  /** The cached status (probed on first call). */
  public static Status status() {
    Status s = cached;
    if (s == null) {
      synchronized (CudaProbe.class) {
        s = cached;
        if (s == null) {
          s = probe();
          cached = s;
        }
      }
    }
    return s;
  }

  private static Status probe() {
    List<Path> dirs = CudaLibraries.searchPath();
    String missing = CudaLibraries.missing(CudaLibraries.BACKEND, dirs);
    try {
      Loader.load(cudart.class);
    } catch (Throwable t) {
      return new Status("cudart does not load (" + rootMessage(t) + ")" + (missing == null ? "" : "; " + missing),
          "needs the CUDA backend", 0, "");
    }
    int[] count = {0};
    int rc = cudart.cudaGetDeviceCount(count);
    if (rc != 0) {
      return new Status("cudaGetDeviceCount failed: " + CudaCheck.errorString(rc) + " (" + rc + ")"
          + (rc == 35 || rc == 100 ? ": no GPU or no/too old NVIDIA driver (CUDA 13 needs driver 580 or newer)" : ""),
          "needs the CUDA backend", 0, "");
    }
    if (count[0] == 0) {
      return new Status("no CUDA device visible (CUDA_VISIBLE_DEVICES=" + System.getenv("CUDA_VISIBLE_DEVICES") + ")",
          "needs the CUDA backend", 0, "");
    }
    int[] driver = {0};
    int[] runtime = {0};
    cudart.cudaDriverGetVersion(driver);
    cudart.cudaRuntimeGetVersion(runtime);
    StringBuilder v = new StringBuilder();
    v.append("driver CUDA ").append(version(driver[0])).append(", runtime ").append(version(runtime[0]));
    String reason = null;
    try {
      Loader.load(cublas.class);
      v.append(", cuBLASLt ").append(cublas.cublasLtGetVersion());
    } catch (Throwable t) {
      reason = "cuBLAS/cuBLASLt do not load (" + rootMessage(t) + ")";
    }
    if (reason == null) {
      try {
        Loader.load(nvrtc.class);
        int[] maj = {0};
        int[] min = {0};
        nvrtc.nvrtcVersion(maj, min);
        v.append(", NVRTC ").append(maj[0]).append('.').append(min[0]);
      } catch (Throwable t) {
        reason = "NVRTC does not load (" + rootMessage(t) + ")";
      }
    }
    if (reason != null && missing != null) {
      reason += "; " + missing;
    }
    String ncclReason = null;
    try {
      Loader.load(nccl.class);
      int[] nv = {0};
      int nrc = nccl.ncclGetVersion(nv);
      if (nrc != 0) {
        ncclReason = "ncclGetVersion failed (" + nrc + ")";
      } else {
        v.append(", NCCL ").append(nv[0]);
      }
    } catch (Throwable t) {
      String m = CudaLibraries.missing(List.of(CudaLibraries.NCCL), dirs);
      ncclReason = "NCCL does not load (" + rootMessage(t) + ")" + (m == null ? "" : "; " + m);
    }
    v.append(", ").append(count[0]).append(" device(s)");
    return new Status(reason, ncclReason, count[0], v.toString());
  }

  /** Prints the status (used by {@code bin/spark-tp gpu-check}); exits 2 when the CUDA backend cannot run. */
  public static void main(String[] args) {
    Status s = status();
    System.out.println("CUDA backend: " + (s.available() ? "loads: " + s.versions() : "unavailable: " + s.backendReason()));
    System.out.println("NCCL: " + (s.ncclAvailable() ? "loads" : "unavailable: " + s.ncclReason()));
    if (!s.available()) {
      System.exit(2);
    }
  }

  static String version(int v) {
    return (v / 1000) + "." + (v % 1000 / 10);
  }

  static String rootMessage(Throwable t) {
    Throwable c = t;
    StringBuilder sb = new StringBuilder(t.toString());
    while (c.getCause() != null && c.getCause() != c) {
      c = c.getCause();
      sb.append(" <- ").append(c);
    }
    return sb.toString();
  }
}
