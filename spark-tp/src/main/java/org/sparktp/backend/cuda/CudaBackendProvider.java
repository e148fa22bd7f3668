package org.sparktp.backend.cuda;

import java.util.Map;
import org.sparktp.backend.Backend;
import org.sparktp.backend.BackendProvider;

/**
 * Registers the CUDA backend ({@code spark.tp.backend=cuda}); preferred by {@code auto} where it can run
 * ({@link CudaProbe}). Spark tasks pass the device ordinal of their GPU ({@link DeviceOrdinal}).
 */
public final class CudaBackendProvider implements BackendProvider {
  @Override
  public String name() {
    return "cuda";
  }

  @Override
  public int priority() {
    return 100;
  }

  @Override
  public String unavailableReason() {
    return CudaProbe.status().backendReason();
  }

  @Override
  public Backend create(Map<String, String> settings, int device) {
    if (device < 0) {
      throw new IllegalArgumentException("The CUDA backend needs a device ordinal (the task's GPU), got " + device);
    }
    return new CudaBackend(settings, device);
  }
}
