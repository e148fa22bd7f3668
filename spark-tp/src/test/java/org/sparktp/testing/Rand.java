package org.sparktp.testing;

import java.util.SplittableRandom;

/** Fresh random data for tests: the seed differs per run and is printed with any failure. */
public final class Rand {
  private final long seed;
  private final SplittableRandom rnd;

  public Rand() {
    this(System.nanoTime());
  }

  public Rand(long seed) {
    this.seed = seed;
    this.rnd = new SplittableRandom(seed);
  }

  public long seed() {
    return seed;
  }

  /** Uniform in [-scale, scale), never exactly zero. */
  public float[] floats(int n, double scale) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      double v;
      do {
        v = (rnd.nextDouble() * 2 - 1) * scale;
      } while (v == 0);
      a[i] = (float) v;
    }
    return a;
  }

  public int nextInt(int bound) {
    return rnd.nextInt(bound);
  }

  public double[][] rows(float[] flat, int rows, int cols) {
    double[][] out = new double[rows][cols];
    for (int r = 0; r < rows; r++) {
      for (int c = 0; c < cols; c++) {
        out[r][c] = flat[r * cols + c];
      }
    }
    return out;
  }

  @Override
  public String toString() {
    return "seed=" + seed;
  }
}
