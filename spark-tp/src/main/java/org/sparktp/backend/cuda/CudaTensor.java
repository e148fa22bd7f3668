package org.sparktp.backend.cuda;

import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * A tensor in device memory: one stream-ordered allocation ({@code cudaMallocAsync} on the backend's compute
 * stream), freed by {@link #close()} ({@code cudaFreeAsync} on the same stream, so work already enqueued on it
 * finishes first). Its {@link #dtype()} is its storage type ({@link CudaTypes#STORAGE}; the engine's float API makes F32
 * tensors). Views
 * made by {@link #rows(int, int)} and {@link #reshape(int, int)} share the root's memory and own nothing. Device
 * memory is never freed by the garbage collector.
 */
public final class CudaTensor extends Tensor {
  private final CudaBackend backend;
  private final CudaTensor root; // null when this tensor owns its memory
  private final long base; // the root's device allocation
  private final long offsetBytes;
  private boolean closed;

  CudaTensor(CudaBackend backend, int rows, int cols, DType storage, long base) {
    super(rows, cols, CudaTypes.check(storage));
    this.backend = backend;
    this.root = null;
    this.base = base;
    this.offsetBytes = 0;
  }

  private CudaTensor(CudaTensor root, long offsetBytes, int rows, int cols) {
    super(rows, cols, root.dtype());
    this.backend = root.backend;
    this.root = root;
    this.base = root.base;
    this.offsetBytes = offsetBytes;
  }

  @Override
  public Backend backend() {
    return backend;
  }

  /** Device address of the first element. */
  public long address() {
    checkOpen();
    return base + offsetBytes;
  }

  @Override
  public CudaTensor rows(int start, int count) {
    if (start < 0 || count < 0 || start + count > rows()) {
      throw new IndexOutOfBoundsException(
          "Row view [" + start + ", " + (start + count) + ") outside tensor " + shape());
    }
    return new CudaTensor(owner(), offsetBytes + (long) start * cols() * dtype().size(), count, cols());
  }

  @Override
  public CudaTensor reshape(int rows, int cols) {
    if ((long) rows * cols != numel()) {
      throw new IllegalArgumentException(
          "Cannot view tensor " + shape() + " as [" + rows + ", " + cols + "]: element counts differ");
    }
    return new CudaTensor(owner(), offsetBytes, rows, cols);
  }

  private CudaTensor owner() {
    return root == null ? this : root;
  }

  @Override
  public boolean isClosed() {
    return owner().closed;
  }

  void checkOpen() {
    if (isClosed()) {
      throw new IllegalStateException("Tensor " + shape() + " was used after it was closed");
    }
  }

  @Override
  public void close() {
    if (root != null || closed) {
      return;
    }
    closed = true;
    backend.released(base, bytes());
  }

  @Override
  public String shape() {
    return super.shape() + (dtype() == DType.F32 ? "" : " " + dtype());
  }
}
