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

  /** Also unavailable for a task without a GPU ({@code device < 0}): the GPU comes from the task's resources. */
  @Override
  public String unavailableReason(int device) {
    String r = unavailableReason();
    return r != null || device >= 0 ? r : DeviceOrdinal.NO_GPU;
  }

  @Override
  public Backend create(Map<String, String> settings, int device) {
    if (device < 0) {
      throw new IllegalArgumentException(DeviceOrdinal.NO_GPU);
    }
    return new CudaBackend(settings, device);
  }
}
