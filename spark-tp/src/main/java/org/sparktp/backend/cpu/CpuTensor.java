package org.sparktp.backend.cpu;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import org.bytedeco.javacpp.FloatPointer;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.Tensor;

/**
 * A tensor in off-heap host memory (allocated with {@code malloc} through JavaCPP), freed by
 * {@link #close()}. Views made by {@link #rows(int, int)} and {@link #reshape(int, int)} share the
 * memory of their root and own nothing.
 */
public final class CpuTensor extends Tensor {
  private final CpuBackend backend;
  private final CpuTensor root; // null when this tensor owns its memory
  private final FloatPointer memory; // the root's allocation
  private final long offset; // in floats, from the start of memory
  private boolean closed;

  CpuTensor(CpuBackend backend, int rows, int cols) {
    super(rows, cols);
    this.backend = backend;
    this.root = null;
    this.memory = new FloatPointer(Math.max(1L, (long) rows * cols));
    this.offset = 0;
  }

  private CpuTensor(CpuTensor root, long offset, int rows, int cols) {
    super(rows, cols);
    this.backend = root.backend;
    this.root = root;
    this.memory = root.memory;
    this.offset = offset;
  }

  @Override
  public Backend backend() {
    return backend;
  }

  @Override
  public CpuTensor rows(int start, int count) {
    if (start < 0 || count < 0 || start + count > rows()) {
      throw new IndexOutOfBoundsException(
          "Row view [" + start + ", " + (start + count) + ") outside tensor " + shape());
    }
    return new CpuTensor(owner(), offset + (long) start * cols(), count, cols());
  }

  @Override
  public CpuTensor reshape(int rows, int cols) {
    if ((long) rows * cols != numel()) {
      throw new IllegalArgumentException(
          "Cannot view tensor " + shape() + " as [" + rows + ", " + cols + "]: element counts differ");
    }
    return new CpuTensor(owner(), offset, rows, cols);
  }

  private CpuTensor owner() {
    return root == null ? this : root;
  }

  @Override
  public boolean isClosed() {
    return owner().closed;
  }

  /** The memory as a pointer positioned at this tensor's first element. */
  public FloatPointer pointer() {
    checkOpen();
    return new FloatPointer(memory).position(offset).capacity(offset + numel());
  }

  /** The memory as a native-order direct byte buffer of exactly {@code 4 * numel()} bytes. */
  public ByteBuffer bytes() {
    checkOpen();
    ByteBuffer all = memory.asByteBuffer();
    // asByteBuffer() covers [position, limit) of the pointer: the whole allocation here.
    return all.position(Math.toIntExact(offset * 4))
        .limit(Math.toIntExact((offset + numel()) * 4))
        .slice()
        .order(ByteOrder.nativeOrder());
  }

  /** The memory as a float buffer of exactly {@code numel()} elements. */
  public FloatBuffer buffer() {
    return bytes().asFloatBuffer();
  }

  /** Address of the first element (for native code and tests). */
  public long address() {
    checkOpen();
    return memory.address() + offset * 4;
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
    memory.deallocate();
    backend.released(numel());
  }
}
