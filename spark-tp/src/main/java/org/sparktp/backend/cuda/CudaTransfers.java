package org.sparktp.backend.cuda;

/**
 * Host transfers of a {@link CudaBackend} since it was made ({@link CudaBackend#transfers}): host-to-device copies
 * and their bytes, device-to-host copies and their bytes (every upload, write, download and metadata copy;
 * device-to-device copies do not count).
 */
public record CudaTransfers(long toDevice, long toDeviceBytes, long toHost, long toHostBytes) {
  /** This count minus an earlier one. */
  public CudaTransfers since(CudaTransfers before) {
    return new CudaTransfers(toDevice - before.toDevice, toDeviceBytes - before.toDeviceBytes,
        toHost - before.toHost, toHostBytes - before.toHostBytes);
  }
}
