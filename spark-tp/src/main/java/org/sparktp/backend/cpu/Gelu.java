package org.sparktp.backend.cpu;

/**
 * {@code gelu(x) = x * 0.5 * (1 + erf(x / sqrt 2))} (PyTorch's exact GeLU) over a float array, written
 * so that HotSpot's auto-vectorizer turns every pass into SIMD code.
 *
 * <p>The math: {@code gelu(x) = 0.5 x erfc(z)} for {@code x < 0} and {@code 0.5 x (2 - erfc(z))} for
 * {@code x >= 0}, with {@code z = |x| / sqrt 2} and erfc from the Chebyshev fit of Numerical Recipes
 * ({@code erfcc}, fractional error below 1.2e-7): {@code erfc(z) = t exp(-z^2 + P(t))},
 * {@code t = 1 / (1 + z/2)}. The exponential is computed as {@code 2^k e^r}, {@code k = round(a log2 e)},
 * {@code |r| <= ln2 / 2}, with a degree-7 Taylor polynomial for {@code e^r} and {@code 2^k} built from its
 * exponent bits. Arguments below -86.9 (erfc under 1e-38) give exactly 0. Measured against a float64
 * reference: absolute error below 5e-7 on [-5, 5], relative error of the negative tail about 1e-6.
 *
 * <p>Each pass is a plain loop over arrays with no calls and no branches (branches are written with
 * min/max), so C2 vectorizes it; one scalar loop calling {@code Math.exp} runs about 10x slower.
 */
final class Gelu {
  private static final float INV_SQRT2 = 0.70710678f;
  private static final float LOG2E = 1.44269504f;
  private static final float LN2 = 0.69314718f;
  private static final float ROUND = 12582912f; // 1.5 * 2^23: (y + ROUND) - ROUND rounds y to an integer
  private static final float MIN_ARG = -87f;

  private static final class Scratch {
    final float[] t;
    final float[] a;
    final float[] kf;
    final float[] s;
    final int[] k;

    Scratch(int n) {
      t = new float[n];
      a = new float[n];
      kf = new float[n];
      s = new float[n];
      k = new int[n];
    }
  }

  private static final ThreadLocal<Scratch> SCRATCH = new ThreadLocal<>();

  private Gelu() {}

  /** {@code v[i] = gelu(v[i])} for {@code i < len}. */
  static void apply(float[] v, int len) {
    Scratch sc = SCRATCH.get();
    if (sc == null || sc.t.length < len) {
      sc = new Scratch(Math.max(len, 1024));
      SCRATCH.set(sc);
    }
    argument(v, sc.t, sc.a, len);
    round(sc.a, sc.kf, len);
    toInt(sc.kf, sc.k, len);
    expTimesT(sc.a, sc.kf, sc.t, len);
    powerOfTwo(sc.k, sc.s, len);
    combine(v, sc.t, sc.s, sc.a, len);
  }

  /** t = 1 / (1 + z/2) and the exponent a = -z^2 + P(t), clamped below. */
  private static void argument(float[] x, float[] t, float[] a, int n) {
    for (int i = 0; i < n; i++) {
      float z = Math.abs(x[i]) * INV_SQRT2;
      float tt = 1f / (1f + 0.5f * z);
      t[i] = tt;
      a[i] = Math.max(-z * z - 1.26551223f + tt * (1.00002368f + tt * (0.37409196f + tt * (0.09678418f
          + tt * (-0.18628806f + tt * (0.27886807f + tt * (-1.13520398f + tt * (1.48851587f
          + tt * (-0.82215223f + tt * 0.17087277f)))))))), MIN_ARG);
    }
  }

  /** kf = round(a log2 e). */
  private static void round(float[] a, float[] kf, int n) {
    for (int i = 0; i < n; i++) {
      kf[i] = (a[i] * LOG2E + ROUND) - ROUND;
    }
  }

  private static void toInt(float[] kf, int[] k, int n) {
    for (int i = 0; i < n; i++) {
      k[i] = (int) kf[i];
    }
  }

  /** t *= e^r with r = a - k ln2. */
  private static void expTimesT(float[] a, float[] kf, float[] t, int n) {
    for (int i = 0; i < n; i++) {
      float r = a[i] - kf[i] * LN2;
      float p = 1f + r * (1f + r * (0.5f + r * (0.16666667f + r * (0.041666668f + r * (0.008333334f
          + r * (0.0013888889f + r * 0.00019841270f))))));
      t[i] = t[i] * p;
    }
  }

  /** s = 2^k from the exponent bits (k is in [-126, 0] here). */
  private static void powerOfTwo(int[] k, float[] s, int n) {
    for (int i = 0; i < n; i++) {
      s[i] = Float.intBitsToFloat((k[i] + 127) << 23);
    }
  }

  /** x = 0.5 x erfc for x < 0, 0.5 x (2 - erfc) for x >= 0; erfc = 0 where the exponent was clamped. */
  private static void combine(float[] x, float[] t, float[] s, float[] a, int n) {
    for (int i = 0; i < n; i++) {
      float live = Math.min(Math.max((a[i] + 86.9f) * 1e30f, 0f), 1f);
      float e = t[i] * s[i] * live;
      float xv = x[i];
      float positive = Math.min(Math.max(xv * 1e30f, 0f), 1f);
      x[i] = 0.5f * xv * (e + positive * (2f - 2f * e));
    }
  }
}
