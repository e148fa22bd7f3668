package org.sparktp.comm.nccl;

import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.backend.cuda.CudaException;
import org.sparktp.backend.cuda.CudaTensor;
import org.sparktp.backend.cuda.CudaTypes;
import org.sparktp.backend.cuda.Ptr;
import org.sparktp.backend.Tensor;

/**
 * {@link DeviceBuffers} for {@link CudaTensor}s: collectives run on a stream of their own on the rank's device,
 * made to wait (by an event) for the work already enqueued on each tensor's compute stream; the communicator waits
 * for each collective to finish before returning, so later compute work sees its result.
 */
public final class CudaDeviceBuffers implements DeviceBuffers {
  private final int device;
  private final CUstream_st stream = new CUstream_st();
  private final CUevent_st mark = new CUevent_st();
  private long scratch;
  private int scratchLongs;
  private boolean closed;

  public CudaDeviceBuffers(int device) {
    this.device = device;
    check(cudart.cudaSetDevice(device), "cudaSetDevice(" + device + ")");
    check(cudart.cudaStreamCreateWithFlags(stream, cudart.cudaStreamNonBlocking), "cudaStreamCreateWithFlags(nccl)");
    check(cudart.cudaEventCreateWithFlags(mark, cudart.cudaEventDisableTiming), "cudaEventCreateWithFlags");
  }

  private static void check(int rc, String call) {
    if (rc != 0) {
      throw new CudaException(call, rc, cudart.cudaGetErrorString(rc).getString());
    }
  }

  private CudaTensor cuda(Tensor t) {
    if (!(t instanceof CudaTensor c)) {
      throw new IllegalArgumentException("NCCL collectives need tensors of the CUDA backend, got a tensor of backend '"
          + (t == null ? "null" : t.backend().name()) + "': use spark.tp.backend=cuda with spark.tp.comm.transport=nccl,"
          + " or another transport (tcp, local) for the CPU backend");
    }
    CudaBackend b = (CudaBackend) c.backend();
    if (b.device() != device) {
      throw new IllegalArgumentException("The tensor lives on device " + b.device() + " but this rank's NCCL"
          + " communicator is on device " + device);
    }
    return c;
  }

  @Override
  public long address(Tensor t) {
    return cuda(t).address();
  }

  @Override
  public int ncclType(Tensor t) {
    return CudaTypes.ncclType(cuda(t).dtype());
  }

  @Override
  public int elementSize(Tensor t) {
    return cuda(t).dtype().size();
  }

  @Override
  public void order(Tensor t) {
    CudaBackend b = (CudaBackend) cuda(t).backend();
    b.makeCurrent();
    check(cudart.cudaEventRecord(mark, b.computeStream()), "cudaEventRecord(compute)");
    check(cudart.cudaStreamWaitEvent(stream, mark, 0), "cudaStreamWaitEvent(nccl)");
  }

  @Override
  public long stream() {
    return stream.address();
  }

  @Override
  public long scratch(int longs) {
    if (longs > scratchLongs) {
      if (scratch != 0) {
        check(cudart.cudaFree(new Ptr(scratch)), "cudaFree");
        scratch = 0;
      }
      try (LongPointer out = new LongPointer(1)) {
        check(cudart.cudaMalloc(new PointerPointer<>(out), 8L * longs), "cudaMalloc(" + 8L * longs + " bytes)");
        scratch = out.get();
      }
      scratchLongs = longs;
    }
    return scratch;
  }

  @Override
  public void copyIn(long dst, long[] values) {
    try (LongPointer h = new LongPointer(values)) {
      check(cudart.cudaMemcpy(new Ptr(dst), h, 8L * values.length, cudart.cudaMemcpyHostToDevice),
          "cudaMemcpy(host to device)");
    }
  }

  @Override
  public void copyOut(long src, long[] out) {
    try (LongPointer h = new LongPointer(out.length)) {
      check(cudart.cudaMemcpy(h, new Ptr(src), 8L * out.length, cudart.cudaMemcpyDeviceToHost),
          "cudaMemcpy(device to host)");
      h.get(out);
    }
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    cudart.cudaSetDevice(device);
    if (scratch != 0) {
      cudart.cudaFree(new Ptr(scratch));
    }
    cudart.cudaEventDestroy(mark);
    cudart.cudaStreamDestroy(stream);
  }
}
