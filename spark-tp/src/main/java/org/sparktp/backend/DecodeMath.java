package org.sparktp.backend;

/**
 * {@link Backend#cachedAttention} written plainly over row-major host arrays (the generic implementation
 * every backend inherits). Float32 storage, double accumulation of the softmax.
 */
public final class DecodeMath {
  private DecodeMath() {}

  /**
   * {@code q} holds the {@code n} new tokens' rows ({@code qCols} wide, query heads at {@code qCol}),
   * {@code kv} the cache rows {@code [0, past + n)} ({@code kvCols} wide: K heads then V heads). Returns
   * {@code [n, kvOf.length * headDim]}.
   */
  public static float[] cachedAttention(float[] q, int qCols, int qCol, float[] kv, int kvCols, int kvHeads,
      int[] kvOf, int headDim, int n, int past, float scale) {
    int heads = kvOf.length;
    int w = heads * headDim;
    float[] out = new float[n * w];
    double[] p = new double[past + n];
    for (int h = 0; h < heads; h++) {
      int kc = kvOf[h] * headDim;
      int vc = (kvHeads + kvOf[h]) * headDim;
      for (int i = 0; i < n; i++) {
        int last = past + i;
        int qi = i * qCols + qCol + h * headDim;
        double max = Double.NEGATIVE_INFINITY;
        for (int j = 0; j <= last; j++) {
          float dot = 0;
          for (int d = 0; d < headDim; d++) {
            dot += q[qi + d] * kv[j * kvCols + kc + d];
          }
          p[j] = dot * scale;
          max = Math.max(max, p[j]);
        }
        double sum = 0;
        for (int j = 0; j <= last; j++) {
          p[j] = Math.exp(p[j] - max);
          sum += p[j];
        }
        int oi = i * w + h * headDim;
        for (int j = 0; j <= last; j++) {
          float pj = (float) (p[j] / sum);
          for (int d = 0; d < headDim; d++) {
            out[oi + d] += pj * kv[j * kvCols + vc + d];
          }
        }
      }
    }
    return out;
  }
}
