package org.sparktp.backend.cpu;

import static org.bytedeco.openblas.global.openblas_full.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_full.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_full.CblasTrans;

import java.nio.FloatBuffer;
import org.sparktp.backend.TransformerMath;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_full;

/**
 * The CPU backend's transformer ops (see {@link org.sparktp.backend.Backend#attention} and the others):
 * attention as two strided OpenBLAS GEMMs per sequence and head, reading each head's columns of the
 * fused {@code qkv} activation in place (leading dimension = the activation's width, no copies), with
 * the mask and softmax in between on a scratch {@code [n, n]} block.
 */
final class CpuTransformer {
  private CpuTransformer() {}

  static void attention(CpuTensor qkv, int qCol, int kCol, int vCol, int[] kvOf, int headDim, int[] offsets,
      boolean causal, float scale, CpuTensor out) {
    int cols = qkv.cols();
    int w = out.cols();
    int heads = kvOf.length;
    int tokens = offsets[offsets.length - 1];
    if (qkv.rows() < tokens || out.rows() < tokens || w != heads * headDim) {
      throw new IllegalArgumentException("attention: qkv " + qkv.shape() + ", out " + out.shape() + " for " + tokens
          + " tokens of " + heads + " heads of " + headDim);
    }
    int maxN = 0;
    for (int s = 0; s + 1 < offsets.length; s++) {
      maxN = Math.max(maxN, offsets[s + 1] - offsets[s]);
    }
    if (maxN == 0) {
      return;
    }
    FloatPointer x = qkv.pointer();
    FloatPointer o = out.pointer();
    FloatPointer scores = new FloatPointer((long) maxN * maxN);
    try {
      FloatBuffer sb = scores.asBuffer();
      float[] row = new float[maxN];
      for (int s = 0; s + 1 < offsets.length; s++) {
        int t0 = offsets[s];
        int n = offsets[s + 1] - t0;
        if (n == 0) {
          continue;
        }
        for (int h = 0; h < heads; h++) {
          long q = (long) t0 * cols + qCol + (long) h * headDim;
          long k = (long) t0 * cols + kCol + (long) kvOf[h] * headDim;
          long v = (long) t0 * cols + vCol + (long) kvOf[h] * headDim;
          openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, headDim, scale,
              x.getPointer(q), cols, x.getPointer(k), cols, 0f, scores, n);
          for (int i = 0; i < n; i++) {
            int last = causal ? i : n - 1;
            sb.position(i * n);
            sb.get(row, 0, n);
            float max = Float.NEGATIVE_INFINITY;
            for (int j = 0; j <= last; j++) {
              max = Math.max(max, row[j]);
            }
            double sum = 0;
            for (int j = 0; j <= last; j++) {
              float e = (float) Math.exp(row[j] - max);
              row[j] = e;
              sum += e;
            }
            float inv = (float) (1.0 / sum);
            for (int j = 0; j <= last; j++) {
              row[j] *= inv;
            }
            for (int j = last + 1; j < n; j++) {
              row[j] = 0f;
            }
            sb.position(i * n);
            sb.put(row, 0, n);
          }
          openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, headDim, n, 1f, scores, n,
              x.getPointer(v), cols, 0f, o.getPointer((long) t0 * w + (long) h * headDim), w);
        }
      }
    } finally {
      scores.deallocate();
    }
  }

  static void rmsNorm(CpuTensor x, float[] gamma, float eps) {
    int cols = x.cols();
    FloatBuffer b = x.buffer();
    float[] row = new float[cols];
    for (int r = 0; r < x.rows(); r++) {
      b.position(r * cols);
      b.get(row);
      double ss = 0;
      for (float v : row) {
        ss += (double) v * v;
      }
      float inv = (float) (1.0 / Math.sqrt(ss / cols + eps));
      for (int c = 0; c < cols; c++) {
        row[c] = gamma[c] * (row[c] * inv);
      }
      b.position(r * cols);
      b.put(row);
    }
  }

  /** {@link org.sparktp.backend.Backend#rope} in place, row by row on the tensor's memory. */
  static void rope(CpuTensor x, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    int cols = x.cols();
    TransformerMath.checkRope(x.rows(), cols, col, heads, headDim, positions, invFreq);
    int half = headDim / 2;
    FloatBuffer b = x.buffer();
    float[] row = new float[heads * headDim];
    float[] cos = new float[half];
    float[] sin = new float[half];
    for (int t = 0; t < x.rows(); t++) {
      for (int i = 0; i < half; i++) {
        double a = (double) positions[t] * invFreq[i];
        cos[i] = (float) Math.cos(a);
        sin[i] = (float) Math.sin(a);
      }
      b.position(t * cols + col);
      b.get(row);
      for (int h = 0; h < heads; h++) {
        int o = h * headDim;
        for (int i = 0; i < half; i++) {
          float x1 = row[o + i];
          float x2 = row[o + i + half];
          row[o + i] = x1 * cos[i] - x2 * sin[i];
          row[o + i + half] = x2 * cos[i] + x1 * sin[i];
        }
      }
      b.position(t * cols + col);
      b.put(row);
    }
  }

  static void swiglu(CpuTensor gateUp, CpuTensor out) {
    int half = out.cols();
    if (gateUp.cols() != 2 * half || gateUp.rows() != out.rows()) {
      throw new IllegalArgumentException("swiglu of " + gateUp.shape() + " into " + out.shape());
    }
    FloatBuffer in = gateUp.buffer();
    FloatBuffer ob = out.buffer();
    float[] row = new float[2 * half];
    float[] res = new float[half];
    for (int r = 0; r < out.rows(); r++) {
      in.position(r * 2 * half);
      in.get(row);
      for (int j = 0; j < half; j++) {
        float g = row[j];
        res[j] = g / (1f + (float) Math.exp(-g)) * row[half + j];
      }
      ob.position(r * half);
      ob.put(res);
    }
  }
}
