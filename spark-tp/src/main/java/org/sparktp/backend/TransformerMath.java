package org.sparktp.backend;

/**
 * The transformer ops of {@link Backend} written plainly over row-major host arrays: the generic
 * implementations every backend inherits (a backend overrides them with a fast path, as the CPU
 * backend does). Float32 storage, double accumulation in reductions.
 */
public final class TransformerMath {
  private TransformerMath() {}

  /** See {@link Backend#attention}; returns {@code [tokens, kvOf.length * headDim]}. */
  public static float[] attention(float[] x, int cols, int qCol, int kCol, int vCol, int[] kvOf, int headDim,
      int[] offsets, boolean causal, float scale) {
    int tokens = offsets[offsets.length - 1];
    int heads = kvOf.length;
    int w = heads * headDim;
    float[] out = new float[tokens * w];
    double[] p = new double[0];
    for (int s = 0; s + 1 < offsets.length; s++) {
      int o = offsets[s];
      int n = offsets[s + 1] - o;
      if (p.length < n) {
        p = new double[n];
      }
      for (int h = 0; h < heads; h++) {
        int qc = qCol + h * headDim;
        int kc = kCol + kvOf[h] * headDim;
        int vc = vCol + kvOf[h] * headDim;
        for (int i = 0; i < n; i++) {
          int last = causal ? i : n - 1;
          double max = Double.NEGATIVE_INFINITY;
          int qi = (o + i) * cols + qc;
          for (int j = 0; j <= last; j++) {
            int kj = (o + j) * cols + kc;
            float dot = 0;
            for (int d = 0; d < headDim; d++) {
              dot += x[qi + d] * x[kj + d];
            }
            p[j] = dot * scale;
            max = Math.max(max, p[j]);
          }
          double sum = 0;
          for (int j = 0; j <= last; j++) {
            p[j] = Math.exp(p[j] - max);
            sum += p[j];
          }
          int oi = (o + i) * w + h * headDim;
          for (int j = 0; j <= last; j++) {
            float pj = (float) (p[j] / sum);
            int vj = (o + j) * cols + vc;
            for (int d = 0; d < headDim; d++) {
              out[oi + d] += pj * x[vj + d];
            }
          }
        }
      }
    }
    return out;
  }

  /** The checks of {@link Backend#rope} for a tensor {@code [rows, cols]}, with the message every backend gives. */
  public static void checkRope(int rows, int cols, int col, int heads, int headDim, int[] positions,
      float[] invFreq) {
    if (headDim <= 0 || headDim % 2 != 0 || heads < 0 || col < 0 || col + (long) heads * headDim > cols
        || invFreq.length < headDim / 2) {
      throw new IllegalArgumentException("RoPE needs an even head size, heads within the columns and headDim / 2"
          + " inverse frequencies, got column " + col + ", heads " + heads + ", headDim " + headDim + ", "
          + invFreq.length + " frequencies for [" + rows + ", " + cols + "]");
    }
    if (positions.length != rows) {
      throw new IllegalArgumentException("RoPE got " + positions.length + " positions for " + rows + " rows");
    }
  }

  /** See {@link Backend#rope}; in place on {@code x} of {@code cols} columns. */
  public static void rope(float[] x, int cols, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    int half = headDim / 2;
    int rows = positions.length;
    float[] cos = new float[half];
    float[] sin = new float[half];
    for (int t = 0; t < rows; t++) {
      for (int i = 0; i < half; i++) {
        double a = (double) positions[t] * invFreq[i];
        cos[i] = (float) Math.cos(a);
        sin[i] = (float) Math.sin(a);
      }
      for (int h = 0; h < heads; h++) {
        int b = t * cols + col + h * headDim;
        for (int i = 0; i < half; i++) {
          float x1 = x[b + i];
          float x2 = x[b + i + half];
          x[b + i] = x1 * cos[i] - x2 * sin[i];
          x[b + i + half] = x2 * cos[i] + x1 * sin[i];
        }
      }
    }
  }

  /** See {@link Backend#rmsNorm}; in place. */
  public static void rmsNorm(float[] x, int cols, float[] gamma, float eps) {
    int rows = cols == 0 ? 0 : x.length / cols;
    for (int r = 0; r < rows; r++) {
      int b = r * cols;
      double ss = 0;
      for (int c = 0; c < cols; c++) {
        ss += (double) x[b + c] * x[b + c];
      }
      float inv = (float) (1.0 / Math.sqrt(ss / cols + eps));
      for (int c = 0; c < cols; c++) {
        x[b + c] = gamma[c] * (x[b + c] * inv);
      }
    }
  }

  /** See {@link Backend#swiglu}; {@code v} is {@code [rows, 2*half]}. */
  public static float[] swiglu(float[] v, int rows, int half) {
    float[] out = new float[rows * half];
    for (int r = 0; r < rows; r++) {
      int b = r * 2 * half;
      for (int j = 0; j < half; j++) {
        float g = v[b + j];
        out[r * half + j] = (float) (g / (1 + Math.exp(-g))) * v[b + half + j];
      }
    }
    return out;
  }
}
