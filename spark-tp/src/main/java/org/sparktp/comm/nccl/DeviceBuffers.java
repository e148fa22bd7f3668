package org.sparktp.comm.nccl;

import org.sparktp.backend.Tensor;

/**
 * What {@link NcclCommunicator} needs from the device side: the device address and NCCL type of a tensor, the
 * stream collectives are enqueued on (ordered with the backend's compute work), and a small device scratch for
 * {@code allGatherLong}. The real one is {@link CudaDeviceBuffers}.
 */
public interface DeviceBuffers {
  /** Device address of the tensor's first element; throws when the tensor is not in device memory. */
  long address(Tensor t);

  /** The tensor's {@code ncclDataType_t}. */
  int ncclType(Tensor t);

  /** Bytes per element of the tensor. */
  int elementSize(Tensor t);

  /** Makes the collective stream wait for the work already enqueued on {@code t} (its backend's compute stream). */
  void order(Tensor t);

  /** The stream collectives run on. */
  long stream();

  /** Device scratch of {@code longs} 64-bit values (kept by the buffers, freed by {@link #close()}). */
  long scratch(int longs);

  /** Writes {@code values} to device memory at {@code dst} (ordered on {@link #stream()}). */
  void copyIn(long dst, long[] values);

  /** Reads {@code out.length} values from {@code src} once {@link #stream()} has done its work. */
  void copyOut(long src, long[] out);

  /** Frees the scratch. */
  void close();
}
