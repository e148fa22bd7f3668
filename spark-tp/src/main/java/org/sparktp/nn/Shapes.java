package org.sparktp.nn;

import org.sparktp.backend.Tensor;

final class Shapes {
  private Shapes() {}

  /** Checks a shard's shape; -1 accepts any size in that dimension. */
  static void check(String what, Tensor t, int rows, int cols) {
    if ((rows >= 0 && t.rows() != rows) || (cols >= 0 && t.cols() != cols)) {
      throw new IllegalArgumentException("Shard of '" + what + "' has shape " + t.shape() + ", expected ["
          + (rows < 0 ? "*" : rows) + ", " + (cols < 0 ? "*" : cols) + "]");
    }
  }
}
