package org.sparktp.comm;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/** Access to the host memory of tensors, for communicators that move bytes through the CPU. */
public final class HostBuffers {
  private HostBuffers() {}

  /** The elements of an f32 tensor. */
  public static FloatBuffer floats(Tensor t) {
    if (t.dtype() != DType.F32) {
      throw new IllegalArgumentException("Expected an f32 tensor, got " + t.dtype().id() + " " + t.shape());
    }
    return bytes(t).asFloatBuffer();
  }

  /** The tensor's bytes, from its backend ({@link org.sparktp.backend.Backend#hostBuffer}). */
  public static ByteBuffer bytes(Tensor t) {
    try {
      return t.backend().hostBuffer(t);
    } catch (UnsupportedOperationException e) {
      throw new IllegalArgumentException("This communicator moves host memory; got a tensor of backend '"
          + t.backend().name() + "' (use the communicator of that backend)", e);
    }
  }
}
