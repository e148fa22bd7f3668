package org.sparktp.backend.cpu;

import java.util.Map;
import org.sparktp.TpConf;
import org.sparktp.backend.Backend;
import org.sparktp.backend.BackendProvider;

/** Registers the CPU backend ({@code spark.tp.backend=cpu}); always available where OpenBLAS loads. */
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
      return "OpenBLAS does not load: " + t;
    }
  }

  @Override
  public Backend create(Map<String, String> settings, int device) {
    String threads = settings.getOrDefault(TpConf.CPU_BLAS_THREADS, TpConf.CPU_BLAS_THREADS_DEFAULT);
    return new CpuBackend(Integer.parseInt(threads.trim()));
  }
}
