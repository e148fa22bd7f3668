package org.sparktp.comm.tcp;

import java.nio.ByteBuffer;
import org.bytedeco.javacpp.Pointer;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;

/** Byte ranges of off-heap buffers, as the TCP and shared-memory data paths move and reduce them. */
final class Bytes {
  private Bytes() {}

  static ByteBuffer slice(ByteBuffer b, long offset, int length) {
    return b.slice(Math.toIntExact(offset), length);
  }

  /** Copies {@code bytes} bytes; nothing when source and destination are the same memory. */
  static void copy(ByteBuffer src, long srcOff, ByteBuffer dst, long dstOff, long bytes) {
    if (bytes == 0) {
      return;
    }
    ByteBuffer s = slice(src, srcOff, Math.toIntExact(bytes));
    ByteBuffer d = slice(dst, dstOff, Math.toIntExact(bytes));
    if (address(s) != address(d)) {
      d.put(s);
    }
  }

  static long address(ByteBuffer b) {
    return new Pointer(b).address() + b.position();
  }

  static boolean overlap(ByteBuffer a, long aBytes, ByteBuffer b, long bBytes) {
    long x = address(a);
    long y = address(b);
    return aBytes > 0 && bBytes > 0 && x < y + bBytes && y < x + aBytes;
  }

  /**
   * True when {@code small} is exactly the block at {@code offset} of {@code big} (in-place use); throws
   * when the two overlap in any other way, false when they are apart.
   */
  static boolean aliasing(String op, ByteBuffer big, long offset, ByteBuffer small, long smallBytes) {
    if (!overlap(big, big.remaining(), small, smallBytes)) {
      return false;
    }
    if (address(small) == address(big) + offset) {
      return true;
    }
    throw new IllegalArgumentException(op + ": the send and receive buffers overlap other than in place (the "
        + "smaller one must be exactly this rank's block of the larger one, or apart from it)");
  }

  /**
   * {@code dst += src}, both float32 in native order, by the reduction kernel of the reduced tensor's backend
   * ({@link Backend#accumulate}; OpenBLAS {@code saxpy} on the CPU).
   */
  static void add(Backend reducer, ByteBuffer src, ByteBuffer dst) {
    int n = src.remaining() / 4;
    if (n == 0) {
      return;
    }
    reducer.accumulate(dst, src, DType.F32, n);
  }

  /** Balanced element offsets of {@code p} segments of {@code n} elements. */
  static long[] balanced(long n, int p) {
    long[] off = new long[p + 1];
    long base = n / p;
    long rem = n % p;
    for (int r = 0; r < p; r++) {
      off[r + 1] = off[r] + base + (r < rem ? 1 : 0);
    }
    return off;
  }
}
