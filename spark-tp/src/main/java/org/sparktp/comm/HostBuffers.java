package org.sparktp.comm;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import org.sparktp.backend.cpu.CpuTensor;
import org.sparktp.tensor.Tensor;

/** Access to the host memory of tensors, for communicators that move bytes through the CPU. */
public final class HostBuffers {
  private HostBuffers() {}

  public static FloatBuffer floats(Tensor t) {
    return host(t).buffer();
  }

  public static ByteBuffer bytes(Tensor t) {
    return host(t).byteBuffer();
  }

  private static CpuTensor host(Tensor t) {
    if (t instanceof CpuTensor c) {
      return c;
    }
    throw new IllegalArgumentException("This communicator moves host memory; got a tensor of backend '"
        + t.backend().name() + "' (use the communicator of that backend)");
  }
}
