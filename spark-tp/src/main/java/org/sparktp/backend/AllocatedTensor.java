package org.sparktp.backend;

import org.sparktp.tensor.DType;

/**
 * A backend's tensor: either the owner of one allocation, or a view ({@link #rows(int, int)},
 * {@link #reshape(int, int)}) of its root's memory at a byte offset, owning nothing. What {@link Tensor} promises
 * about views and closing is kept here, once for every backend: bounds and element counts are checked, a view is
 * closed when its root is, and the allocation is freed exactly once. A backend's tensor says where its memory is,
 * how a view of it is made ({@link #view}) and how it is freed ({@link #free}).
 *
 * @param <T> the backend's tensor type (views are of the same type)
 */
public abstract class AllocatedTensor<T extends AllocatedTensor<T>> extends Tensor {
  private final T root; // null when this tensor owns its memory
  private final long offset; // in bytes, from the start of the root's allocation
  private boolean closed;

  /** An owner of a new allocation of {@code rows x cols} elements of {@code dtype}. */
  protected AllocatedTensor(int rows, int cols, DType dtype) {
    super(rows, cols, dtype);
    this.root = null;
    this.offset = 0;
  }

  /** A view of {@code root}'s memory from byte {@code offset}. */
  protected AllocatedTensor(T root, long offset, int rows, int cols) {
    super(rows, cols, root.dtype());
    this.root = root;
    this.offset = offset;
  }

  /** A new view of {@code root}'s memory from byte {@code offset}, {@code rows x cols}. */
  protected abstract T view(T root, long offset, int rows, int cols);

  /** Frees the allocation; called once, on the owner. */
  protected abstract void free();

  /** This tensor's first byte, counted from the start of its root's allocation. */
  protected final long offset() {
    return offset;
  }

  @Override
  public final T rows(int start, int count) {
    if (start < 0 || count < 0 || start + count > rows()) {
      throw new IndexOutOfBoundsException(
          "Row view [" + start + ", " + (start + count) + ") outside tensor " + shape());
    }
    return view(owner(), offset + (long) start * cols() * dtype().size(), count, cols());
  }

  @Override
  public final T reshape(int rows, int cols) {
    if ((long) rows * cols != numel()) {
      throw new IllegalArgumentException(
          "Cannot view tensor " + shape() + " as [" + rows + ", " + cols + "]: element counts differ");
    }
    return view(owner(), offset, rows, cols);
  }

  @SuppressWarnings("unchecked")
  private T owner() {
    return root == null ? (T) this : root;
  }

  @Override
  public final boolean isClosed() {
    return ((AllocatedTensor<?>) owner()).closed;
  }

  /** Throws when the memory has been freed. */
  public final void checkOpen() {
    if (isClosed()) {
      throw new IllegalStateException("Tensor " + shape() + " was used after it was closed");
    }
  }

  @Override
  public final void close() {
    if (root != null || closed) {
      return;
    }
    closed = true;
    free();
  }
}
