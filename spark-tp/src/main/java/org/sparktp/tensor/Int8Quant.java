package org.sparktp.tensor;

/**
 * Symmetric per-output-channel int8 quantization of a linear's weight {@code W [out, in]} (PyTorch's
 * layout, one row per output feature): for each row {@code r}, {@code scale[r] = max_j |W[r, j]| / 127}
 * (float32) and {@code q[r, j] = rint(W[r, j] / scale[r])} (round to nearest, ties to even) in
 * {@code [-127, 127]}; the weight is then {@code q[r, j] * scale[r]}. A row of zeros gets scale 0 and
 * {@code q = 0}. There is no zero point: weights are centred, and symmetric scales keep the GEMM
 * {@code x (q s)^T = (x q^T) s} exact up to float32 rounding, with the scale applied once per output.
 *
 * <p>Deterministic: the same row always gives the same bytes and scale. Under tensor parallelism a shard
 * quantizes its own block: a column-parallel shard holds whole rows (its scales are those of the whole
 * model); a row-parallel shard holds a slice of every row and takes the scale of its slice, so its partial
 * sum is exact to its own scale (a finer grain than whole rows, never coarser) but the rounding depends on
 * the tp size.
 */
public final class Int8Quant {
  /** The largest magnitude of a quantized value (symmetric range, -128 is not used). */
  public static final int QMAX = 127;

  private static final float ROUND = 12582912f; // 1.5 * 2^23

  private Int8Quant() {}

  /**
   * Quantizes {@code row[0..n)} into {@code q[qOff..qOff + n)}; returns the row's scale. Throws when the row
   * holds a NaN or an infinity ({@code what} names the weight and row for the message).
   */
  public static float quantizeRow(float[] row, int n, byte[] q, int qOff, String what) {
    return quantizeRow(row, n, q, qOff, what, QMAX);
  }

  /**
   * As {@link #quantizeRow(float[], int, byte[], int, String)} with values in {@code [-qmax, qmax]}: 63 keeps
   * u8 x s8 pair sums inside s16 where an int8 GEMM without VNNI multiplies with {@code vpmaddubsw} (it saturates).
   */
  public static float quantizeRow(float[] row, int n, byte[] q, int qOff, String what, int qmax) {
    float amax = 0f;
    for (int j = 0; j < n; j++) {
      amax = Math.max(amax, Math.abs(row[j])); // NaN and infinity propagate
    }
    if (!(amax <= Float.MAX_VALUE)) {
      for (int j = 0; j < n; j++) {
        if (!(Math.abs(row[j]) <= Float.MAX_VALUE)) {
          throw new IllegalArgumentException(what + " holds " + row[j] + " at column " + j + ": int8 quantization "
              + "needs finite weights; use spark.tp.dtype=f32 or bf16 for this model");
        }
      }
    }
    float scale = amax / qmax;
    if (scale == 0f) {
      java.util.Arrays.fill(q, qOff, qOff + n, (byte) 0);
      return 0f;
    }
    for (int j = 0; j < n; j++) {
      int v = (int) Math.rint(row[j] / scale); // |row[j] / scale| <= qmax up to rounding
      q[qOff + j] = (byte) Math.max(-qmax, Math.min(qmax, v));
    }
    return scale;
  }

  /**
   * Quantizes and dequantizes {@code w [rows, cols]} (row-major float32) in place: each element becomes
   * {@code q * scale} of its row. The generic path of backends without an int8 kernel.
   */
  public static void roundTrip(float[] w, int rows, int cols, String what) {
    float[] row = new float[cols];
    byte[] q = new byte[cols];
    for (int r = 0; r < rows; r++) {
      System.arraycopy(w, r * cols, row, 0, cols);
      float s = quantizeRow(row, cols, q, 0, what + " row " + r);
      for (int j = 0; j < cols; j++) {
        w[r * cols + j] = q[j] * s;
      }
    }
  }

  /**
   * Dynamic (W8A8) quantization of activations, one scale per row (token): row {@code r} of {@code x [rows, cols]}
   * (float32, read from {@code x} at index {@code r * cols}) becomes {@code q[r, j] = rint(x[r, j] * (127 / a))} in
   * {@code [-127, 127]} with {@code a = max_j |x[r, j]|} and scale {@code s[r] = a / 127} (float32 math), written to
   * {@code q} (row-major, at byte {@code r * cols}) and {@code scales[r]}. The weights' rule ({@link #quantizeRow})
   * with a multiplication by the inverse scale instead of a division; a row of zeros
   * gets scale 0, a row holding a NaN or an infinity gets scale NaN (so that its outputs are NaN, as in float
   * math, instead of an error in the middle of a forward pass).
   */
  public static void quantizeActivations(java.nio.FloatBuffer x, int rows, int cols, java.nio.ByteBuffer q,
      java.nio.FloatBuffer scales) {
    float[] row = new float[cols];
    byte[] qr = new byte[cols];
    for (int r = 0; r < rows; r++) {
      x.get(r * cols, row, 0, cols);
      scales.put(r, quantizeActivationRow(row, cols, qr));
      q.put(r * cols, qr, 0, cols);
    }
  }

  /** One row of {@link #quantizeActivations}: returns the scale (0 for zeros, NaN for a non-finite row). */
  public static float quantizeActivationRow(float[] row, int n, byte[] q) {
    float amax = 0f;
    for (int j = 0; j < n; j++) {
      amax = Math.max(amax, Math.abs(row[j]));
    }
    if (!(amax <= Float.MAX_VALUE)) {
      java.util.Arrays.fill(q, 0, n, (byte) 0);
      return Float.NaN;
    }
    float scale = amax / QMAX;
    if (scale == 0f) {
      java.util.Arrays.fill(q, 0, n, (byte) 0);
      return 0f;
    }
    // rint(v * 127 / amax) by adding and subtracting 1.5 * 2^23 (round to nearest even for |v| < 2^22, here
    // <= 127): plain float adds, which the JIT vectorizes, where Math.rint and a division per element did not
    // (they cost about half of a W8A8 GEMM's time at K 2048)
    float inv = QMAX / amax;
    for (int j = 0; j < n; j++) {
      int v = (int) ((row[j] * inv + ROUND) - ROUND);
      q[j] = (byte) Math.max(-QMAX, Math.min(QMAX, v));
    }
    return scale;
  }

  /**
   * Quantizes and dequantizes the activations {@code x [rows, cols]} in place, per row, by
   * {@link #quantizeActivationRow}: the generic W8A8 path of backends without an int8 kernel.
   */
  public static void roundTripActivations(float[] x, int rows, int cols) {
    float[] row = new float[cols];
    byte[] q = new byte[cols];
    for (int r = 0; r < rows; r++) {
      System.arraycopy(x, r * cols, row, 0, cols);
      float s = quantizeActivationRow(row, cols, q);
      for (int j = 0; j < cols; j++) {
        x[r * cols + j] = q[j] * s;
      }
    }
  }

  /** Bytes of an int8 weight {@code [rows, cols]} with its scales (one float32 per row). */
  public static long bytes(long rows, long cols) {
    return rows * cols + 4 * rows;
  }
}
