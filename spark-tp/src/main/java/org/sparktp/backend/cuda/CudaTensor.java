package org.sparktp.backend.cuda;

import org.sparktp.backend.AllocatedTensor;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;

/**
 * A tensor in device memory: one stream-ordered allocation ({@code cudaMallocAsync} on the backend's compute
 * stream), freed by {@link #close()} ({@code cudaFreeAsync} on the same stream, so work already enqueued on it
 * finishes first). Its {@link #dtype()} is its storage type ({@link CudaTypes#STORAGE}; the engine's float API makes F32
 * tensors). Views
 * made by {@link #rows(int, int)} and {@link #reshape(int, int)} share the root's memory and own nothing. Device
 * memory is never freed by the garbage collector.
 */
public final class CudaTensor extends AllocatedTensor<CudaTensor> {
  private final CudaBackend backend;
  private final long base; // the root's device allocation

  CudaTensor(CudaBackend backend, int rows, int cols, DType storage, long base) {
    super(rows, cols, CudaTypes.check(storage));
    this.backend = backend;
    this.base = base;
  }

  private CudaTensor(CudaTensor root, long offsetBytes, int rows, int cols) {
    super(root, offsetBytes, rows, cols);
    this.backend = root.backend;
    this.base = root.base;
  }

  @Override
  protected CudaTensor view(CudaTensor root, long offsetBytes, int rows, int cols) {
    return new CudaTensor(root, offsetBytes, rows, cols);
  }

  @Override
  public Backend backend() {
    return backend;
  }

  /** Device address of the first element. */
  public long address() {
    checkOpen();
    return base + offset();
  }

  @Override
  protected void free() {
    backend.released(base, bytes());
  }

  @Override
  public String shape() {
    return super.shape() + (dtype() == DType.F32 ? "" : " " + dtype());
  }
}
