package org.sparktp.backend;

import org.sparktp.tensor.DType;

/**
 * A dense, row-major matrix of elements of one {@link DType} (float32 unless said otherwise) of {@code rows x cols} whose memory is owned by a {@link Backend}
 * (host memory for the CPU backend, device memory for a GPU backend). Layers never read a tensor's
 * memory directly: they ask its backend to compute on it.
 *
 * <p>A tensor made by {@link Backend#allocate} owns its memory and must be closed exactly once
 * ({@link #close()} is idempotent). A {@linkplain #rows(int, int) row view} shares its parent's memory,
 * owns nothing, and must not be used after the parent is closed.
 */
public abstract class Tensor implements AutoCloseable {
  private final int rows;
  private final int cols;
  private final DType dtype;

  /** A float32 tensor. */
  protected Tensor(int rows, int cols) {
    this(rows, cols, DType.F32);
  }

  protected Tensor(int rows, int cols, DType dtype) {
    if (dtype == null) {
      throw new IllegalArgumentException("Tensor dtype must not be null");
    }
    if (rows < 0 || cols < 0) {
      throw new IllegalArgumentException("Tensor shape must be non-negative, got [" + rows + ", " + cols + "]");
    }
    this.rows = rows;
    this.cols = cols;
    this.dtype = dtype;
  }

  /** The element type. */
  public final DType dtype() {
    return dtype;
  }

  /** Bytes of the elements: {@code numel() * dtype().size()}. */
  public final long bytes() {
    return numel() * dtype.size();
  }

  public final int rows() {
    return rows;
  }

  public final int cols() {
    return cols;
  }

  public final long numel() {
    return (long) rows * cols;
  }

  /** The backend that owns this tensor's memory. */
  public abstract Backend backend();

  /** A view of rows {@code [start, start + count)}; shares memory, owns nothing. */
  public abstract Tensor rows(int start, int count);

  /** The same memory seen as {@code rows x cols} (the element count must match); owns nothing. */
  public abstract Tensor reshape(int rows, int cols);

  /** True once the owning tensor has been closed. */
  public abstract boolean isClosed();

  /** Frees the memory if this tensor owns it; harmless when called again or on a view. */
  @Override
  public abstract void close();

  public String shape() {
    return "[" + rows + ", " + cols + "]";
  }

  @Override
  public String toString() {
    return getClass().getSimpleName() + shape() + (dtype == DType.F32 ? "" : " " + dtype.id());
  }
}
