package org.sparktp.testing;

import static org.assertj.core.api.Assertions.assertThat;

/**
 * Comparison with a float64 reference. The error measure is {@code max |y - ref| / max |ref|} over the
 * whole output (relative to the output's scale, so elements near zero do not dominate).
 */
public final class Compare {
  private Compare() {}

  public static final double TOLERANCE = 1e-5;

  /** The stated tolerance of half-precision weights (bf16 has 8 mantissa bits; GEMMs accumulate in f32). */
  public static final double HALF_TOLERANCE = 2e-2;

  /**
   * The stated tolerance of int8 models (W8A8 and weight-only) against the float64 reference of the unquantized
   * weights (symmetric per-output-channel scales, W8A8 activations per row; one linear with K = 512 measures 9e-3
   * weight-only, one with K = 4096 about 1.1e-2 in W8A8, the engine tests' models up to 6e-3).
   */
  public static final double INT8_TOLERANCE = 3e-2;

  /** {@link #TOLERANCE} for f32 weights, {@link #HALF_TOLERANCE} for bf16/f16, {@link #INT8_TOLERANCE} for int8. */
  public static double tolerance(org.sparktp.tensor.DType weights) {
    return weights == org.sparktp.tensor.DType.F32 ? TOLERANCE
        : weights.isInt8() ? INT8_TOLERANCE : HALF_TOLERANCE;
  }

  public static double relError(float[] got, double[][] ref) {
    int cols = ref.length == 0 ? 0 : ref[0].length;
    assertThat(got).as("output size").hasSize(ref.length * cols);
    double maxErr = 0;
    double maxRef = 0;
    for (int r = 0; r < ref.length; r++) {
      for (int c = 0; c < cols; c++) {
        double g = got[r * cols + c];
        if (!Double.isFinite(g)) {
          return Double.POSITIVE_INFINITY;
        }
        maxErr = Math.max(maxErr, Math.abs(g - ref[r][c]));
        maxRef = Math.max(maxRef, Math.abs(ref[r][c]));
      }
    }
    return maxRef == 0 ? maxErr : maxErr / maxRef;
  }

  public static void assertClose(float[] got, double[][] ref, Object context) {
    assertClose(got, ref, context, TOLERANCE);
  }

  public static void assertClose(float[] got, double[][] ref, Object context, double tolerance) {
    double e = relError(got, ref);
    assertThat(e).as("relative error vs float64 reference (%s)", context).isLessThanOrEqualTo(tolerance);
  }
}
