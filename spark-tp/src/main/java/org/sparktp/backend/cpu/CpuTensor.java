package org.sparktp.backend.cpu;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.sparktp.backend.AllocatedTensor;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;

/**
 * A tensor in off-heap host memory (allocated with {@code malloc} through JavaCPP), freed by
 * {@link #close()}. Its size is {@code numel x dtype.size()} bytes with long offsets (no 2 GiB limit;
 * only the {@link ByteBuffer} views are limited to 2 GiB, as Java's buffers are). Views made by
 * {@link #rows(int, int)} and {@link #reshape(int, int)} share the memory of their root and own nothing.
 */
public final class CpuTensor extends AllocatedTensor<CpuTensor> {
  private final CpuBackend backend;
  private final BytePointer memory; // the root's allocation

  CpuTensor(CpuBackend backend, int rows, int cols, DType dtype) {
    super(rows, cols, dtype);
    this.backend = backend;
    this.memory = new BytePointer(Math.max(1L, (long) rows * cols * dtype.size()));
    if (memory.isNull()) {
      throw new OutOfMemoryError("Cannot allocate " + (long) rows * cols * dtype.size() + " bytes of host memory for a ["
          + rows + ", " + cols + "] " + dtype.id() + " tensor");
    }
  }

  private CpuTensor(CpuTensor root, long offset, int rows, int cols) {
    super(root, offset, rows, cols);
    this.backend = root.backend;
    this.memory = root.memory;
  }

  @Override
  protected CpuTensor view(CpuTensor root, long offset, int rows, int cols) {
    return new CpuTensor(root, offset, rows, cols);
  }

  @Override
  public Backend backend() {
    return backend;
  }

  /** The memory as a float pointer positioned at this tensor's first element; F32 tensors only. */
  public FloatPointer pointer() {
    checkOpen();
    requireF32("pointer()");
    return new FloatPointer(memory).position(offset() / 4).capacity(offset() / 4 + numel());
  }

  /** The memory as a pointer to this tensor's first byte (any dtype). */
  public BytePointer data() {
    checkOpen();
    return new BytePointer(memory).position(offset()).limit(offset() + bytes());
  }

  /** The memory as a native-order direct byte buffer of exactly {@link #bytes()} bytes (at most 2 GiB). */
  public ByteBuffer byteBuffer() {
    return byteBuffer(0, bytes());
  }

  /** Bytes {@code [from, from + length)} of this tensor as a native-order direct buffer. */
  public ByteBuffer byteBuffer(long from, long length) {
    checkOpen();
    if (from < 0 || length < 0 || from + length > bytes()) {
      throw new IndexOutOfBoundsException("Bytes [" + from + ", " + (from + length) + ") outside tensor " + shape()
          + " of " + bytes() + " bytes");
    }
    if (length > Integer.MAX_VALUE) {
      throw new IllegalArgumentException("A buffer view of " + length + " bytes of tensor " + shape()
          + " exceeds 2 GiB; access it in chunks");
    }
    // asByteBuffer() spans [0, limit) of the allocation with its position at the pointer's: slice it
    return new BytePointer(memory).position(offset() + from).limit(offset() + from + length).asByteBuffer().slice()
        .order(ByteOrder.nativeOrder());
  }

  /** The memory as a float buffer of exactly {@code numel()} elements; F32 tensors only. */
  public FloatBuffer buffer() {
    requireF32("buffer()");
    return byteBuffer().asFloatBuffer();
  }

  /** Address of the first element (for native code and tests). */
  public long address() {
    checkOpen();
    return memory.address() + offset();
  }

  private void requireF32(String what) {
    if (dtype() != DType.F32) {
      throw new IllegalArgumentException("Tensor " + shape() + " is " + dtype().id() + "; " + what
          + " needs an f32 tensor");
    }
  }

  @Override
  protected void free() {
    memory.deallocate();
    backend.released(bytes());
  }
}
