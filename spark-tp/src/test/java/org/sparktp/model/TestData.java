package org.sparktp.model;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Arrays;
import java.util.Random;

/** Random test tensors, plainly cut blocks of them, and an exact comparison for large float arrays. */
final class TestData {
  private TestData() {}

  /** Gaussian values shifted away from zero (never zeros). */
  static float[] random(Random rnd, int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian() + (i % 2 == 0 ? 0.5f : -0.5f);
    }
    return a;
  }

  /** Rows {@code [r0, r0 + n)} of a row-major {@code [rows, cols]} array. */
  static float[] cutRows(float[] a, int cols, int r0, int n) {
    return Arrays.copyOfRange(a, r0 * cols, (r0 + n) * cols);
  }

  /** Columns {@code [c0, c0 + n)} of every row of a row-major {@code [rows, cols]} array. */
  static float[] cutColumns(float[] a, int rows, int cols, int c0, int n) {
    float[] out = new float[rows * n];
    for (int r = 0; r < rows; r++) {
      for (int c = 0; c < n; c++) {
        out[r * n + c] = a[r * cols + c0 + c];
      }
    }
    return out;
  }

  /** Asserts bit-for-bit equal arrays, naming the first difference (linear time, unlike containsExactly). */
  static void assertSameFloats(float[] actual, float[] expected) {
    assertThat(actual).hasSize(expected.length);
    int i = Arrays.mismatch(actual, expected);
    assertThat(i).as("first differing element (%s vs %s)", i < 0 ? "" : actual[i], i < 0 ? "" : expected[i])
        .isEqualTo(-1);
  }
}
