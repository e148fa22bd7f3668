package org.sparktp.comm;

import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.tensor.Tensor;

/**
 * Collectives of bf16/f16 tensors on the host communicators: the tensor is widened to float32 on its backend,
 * the float32 collective runs (counts stay in elements), and the result is rounded back once. A reduction
 * thus accumulates every rank's partial sum in fp32 and rounds once at the end (never at each hop of a ring);
 * the other collectives only move elements, and bf16/f16 survive the round trip through f32 exactly. The
 * bytes on the wire are those of f32 (the price of rounding once).
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

  public static void allGather(Communicator c, Tensor send, Tensor recv, int[] counts) {
    try (Tensor s = wide(send); Tensor r = wide(recv)) {
      c.allGather(s, r, counts);
      narrowInto(r, recv);
    }
  }

  public static void reduceScatter(Communicator c, Tensor send, int[] counts, Tensor recv) {
    try (Tensor s = wide(send); Tensor r = wide(recv)) {
      c.reduceScatter(s, counts, r);
      narrowInto(r, recv);
    }
  }

  public static void allToAll(Communicator c, Tensor send, int[] sendCounts, Tensor recv, int[] recvCounts) {
    try (Tensor s = wide(send); Tensor r = wide(recv)) {
      c.allToAll(s, sendCounts, r, recvCounts);
      narrowInto(r, recv);
    }
  }

  public static void broadcast(Communicator c, Tensor buf, int root) {
    try (Tensor w = wide(buf)) {
      c.broadcast(w, root);
      narrowInto(w, buf);
    }
  }

  /** True when {@code t} must go through this class (a 16-bit float tensor). */
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
