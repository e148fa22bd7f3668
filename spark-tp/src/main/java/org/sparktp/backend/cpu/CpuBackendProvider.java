package org.sparktp.backend.cpu;

import java.util.Map;
import org.sparktp.TpConf;
import org.sparktp.backend.Backend;
import org.sparktp.backend.BackendProvider;

/** The {@code cpu} backend for {@link org.sparktp.backend.Backends}: always available where OpenBLAS loads. */
public final class CpuBackendProvider implements BackendProvider {
  @Override
  public String name() {
    return "cpu";
  }

  @Override
  public int priority() {
    return 0;
  }

  @Override
  public String unavailableReason() {
    try {
      CpuBackend.load();
      return null;
    } catch (Throwable t) {
      return "OpenBLAS (org.bytedeco:openblas, linux-x86_64 natives) cannot be loaded: " + t;
    }
  }

  /** Settings read: {@code spark.tp.cpu.threads}, {@code spark.tp.cpu.gemm}, {@code spark.tp.batch-size}. */
  @Override
  public Backend create(Map<String, String> settings, int device) {
    int threads = TpConf.parseInt(TpConf.CPU_THREADS, settings.getOrDefault(TpConf.CPU_THREADS,
        settings.getOrDefault(TpConf.CPU_BLAS_THREADS, TpConf.CPU_THREADS_DEFAULT)), 1);
    String gemm = settings.getOrDefault(TpConf.CPU_GEMM, TpConf.CPU_GEMM_DEFAULT);
    int batch = TpConf.parseInt(TpConf.BATCH_SIZE, settings.getOrDefault(TpConf.BATCH_SIZE,
        TpConf.BATCH_SIZE_DEFAULT), 1);
    return new CpuBackend(threads, gemm, batch);
  }
}
