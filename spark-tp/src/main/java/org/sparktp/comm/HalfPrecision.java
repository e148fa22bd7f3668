package org.sparktp.comm;

import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * Reductions of bf16/f16 tensors on the host communicators: the tensor is widened to float32 on its backend,
 * the float32 reduction runs (counts stay in elements), and the result is rounded back once. A reduction thus
 * accumulates every rank's partial sum in fp32 and rounds once at the end (never at each hop of a ring); its
 * bytes on the wire are those of f32 (the price of rounding once). The collectives that only move elements
 * (all-gather, all-to-all, broadcast) are exact in any dtype and move bf16/f16 in their own 2 bytes.
 */
public final class HalfPrecision {
  private HalfPrecision() {}

  private static Tensor wide(Tensor t) {
    return t.backend().convert(t, DType.F32);
  }

  /** Rounds {@code wide} to {@code into}'s dtype and stores it in {@code into} (same shape). */
  private static void narrowInto(Tensor wide, Tensor into) {
    Backend be = into.backend();
    try (Tensor n = be.convert(wide, into.dtype())) {
      be.hostBuffer(into).put(be.hostBuffer(n));
    }
  }

  public static void allReduce(Communicator c, Tensor buf) {
    try (Tensor w = wide(buf)) {
      c.allReduce(w);
      narrowInto(w, buf);
    }
  }

  public static void reduceScatter(Communicator c, Tensor send, int[] counts, Tensor recv) {
    try (Tensor s = wide(send); Tensor r = wide(recv)) {
      c.reduceScatter(s, counts, r);
      narrowInto(r, recv);
    }
  }

  /** True when a reduction of {@code t} must go through this class (a 16-bit float tensor). */
  public static boolean needed(Tensor t) {
    return t.dtype().isHalf();
  }

  /** Refuses a send/receive pair of different dtypes. */
  public static void checkSame(String op, Tensor a, Tensor b) {
    if (a.dtype() != b.dtype()) {
      throw new IllegalArgumentException(op + ": send and receive tensors differ in dtype (" + a.dtype().id() + " vs "
          + b.dtype().id() + ")");
    }
  }
}
