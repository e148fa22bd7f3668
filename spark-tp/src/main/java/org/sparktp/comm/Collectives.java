package org.sparktp.comm;

import org.sparktp.backend.Tensor;

/** Argument checks shared by every communicator, so that each gives the same errors. */
public final class Collectives {
  private Collectives() {}

  public static long sum(int[] counts) {
    long s = 0;
    for (int c : counts) {
      if (c < 0) {
        throw new IllegalArgumentException("Element counts must be non-negative, got " + c);
      }
      s += c;
    }
    return s;
  }

  public static void checkCounts(String op, int[] counts, int size) {
    if (counts == null || counts.length != size) {
      throw new IllegalArgumentException(op + ": expected " + size + " counts (one per rank), got "
          + (counts == null ? "null" : counts.length));
    }
  }

  public static void checkFits(String op, String what, Tensor t, long needed) {
    if (t.numel() < needed) {
      throw new IllegalArgumentException(op + ": " + what + " buffer " + t.shape() + " holds " + t.numel()
          + " elements, needs " + needed);
    }
  }

  public static void checkRoot(String op, int root, int size) {
    if (root < 0 || root >= size) {
      throw new IllegalArgumentException(op + ": root " + root + " outside [0, " + size + ")");
    }
  }

  /** Start offsets of each rank's block for the given counts. */
  public static long[] offsets(int[] counts) {
    long[] off = new long[counts.length + 1];
    for (int i = 0; i < counts.length; i++) {
      off[i + 1] = off[i] + counts[i];
    }
    return off;
  }
}
