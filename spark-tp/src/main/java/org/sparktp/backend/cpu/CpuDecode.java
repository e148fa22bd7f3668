package org.sparktp.backend.cpu;

import static org.bytedeco.openblas.global.openblas_full.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_full.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_full.CblasTrans;

import java.nio.FloatBuffer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_full;

/**
 * The CPU backend's {@link org.sparktp.backend.Backend#cachedAttention}: the new keys and values are
 * copied into each sequence's cache, then per sequence two strided OpenBLAS GEMMs read the cache in
 * place. A decode step (one new token) runs the query heads that share a KV head as one
 * {@code [heads per KV head, headDim]} block (they are adjacent columns of the token's row), so a GQA
 * cache is read once per KV head.
 */
final class CpuDecode {
  private CpuDecode() {}

  static void cachedAttention(CpuBackend be, CpuTensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf,
      int headDim, int[] offsets, CpuTensor[] cache, int[] past, float scale, CpuTensor out) {
    int cols = qkv.cols();
    int w = out.cols();
    int heads = kvOf.length;
    int kvw = 2 * kvHeads * headDim;
    if (w != heads * headDim || offsets.length != cache.length + 1) {
      throw new IllegalArgumentException("cachedAttention: out " + out.shape() + " for " + heads + " heads of "
          + headDim + ", " + cache.length + " caches for " + (offsets.length - 1) + " sequences");
    }
    int maxL = 0;
    int maxN = 0;
    for (int s = 0; s < cache.length; s++) {
      int n = offsets[s + 1] - offsets[s];
      if (cache[s].cols() != kvw || past[s] + n > cache[s].rows()) {
        throw new IllegalArgumentException("cachedAttention: cache " + cache[s].shape() + " of sequence " + s
            + " cannot hold " + (past[s] + n) + " tokens of width " + kvw);
      }
      maxL = Math.max(maxL, past[s] + n);
      maxN = Math.max(maxN, n);
    }
    if (maxL == 0) {
      return;
    }
    int blockRows = Math.max(maxN, heads);
    FloatPointer x = qkv.pointer();
    FloatPointer o = out.pointer();
    FloatPointer scores = new FloatPointer((long) blockRows * maxL);
    try {
      FloatBuffer sb = scores.asBuffer();
      float[] row = new float[maxL];
      for (int s = 0; s < cache.length; s++) {
        int t0 = offsets[s];
        int n = offsets[s + 1] - t0;
        if (n == 0) {
          continue;
        }
        be.copyBlock(qkv, t0, kvCol, cache[s], past[s], 0, n, kvw);
        FloatPointer c = cache[s].pointer();
        int len = past[s] + n;
        if (n == 1) {
          // query heads h0 .. h1-1 share KV head kvOf[h0]: one [h1-h0, headDim] block of the row
          for (int h0 = 0; h0 < heads; ) {
            int h1 = h0 + 1;
            while (h1 < heads && kvOf[h1] == kvOf[h0]) {
              h1++;
            }
            int m = h1 - h0;
            long q = (long) t0 * cols + qCol + (long) h0 * headDim;
            openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, len, headDim, scale,
                x.getPointer(q), headDim, c.getPointer((long) kvOf[h0] * headDim), kvw, 0f, scores, len);
            for (int i = 0; i < m; i++) {
              softmax(sb, row, i * len, len, len);
            }
            openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, headDim, len, 1f, scores, len,
                c.getPointer((long) (kvHeads + kvOf[h0]) * headDim), kvw, 0f,
                o.getPointer((long) t0 * w + (long) h0 * headDim), headDim);
            h0 = h1;
          }
          continue;
        }
        for (int h = 0; h < heads; h++) {
          long q = (long) t0 * cols + qCol + (long) h * headDim;
          openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, len, headDim, scale,
              x.getPointer(q), cols, c.getPointer((long) kvOf[h] * headDim), kvw, 0f, scores, len);
          for (int i = 0; i < n; i++) {
            softmax(sb, row, i * len, past[s] + i + 1, len);
          }
          openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, headDim, len, 1f, scores, len,
              c.getPointer((long) (kvHeads + kvOf[h]) * headDim), kvw, 0f,
              o.getPointer((long) t0 * w + (long) h * headDim), w);
        }
      }
    } finally {
      scores.deallocate();
    }
  }

  /** Softmax of {@code sb[at .. at+visible)} in place, zeros in {@code [at+visible, at+len)} (the causal mask). */
  private static void softmax(FloatBuffer sb, float[] row, int at, int visible, int len) {
    sb.position(at);
    sb.get(row, 0, len);
    float max = Float.NEGATIVE_INFINITY;
    for (int j = 0; j < visible; j++) {
      max = Math.max(max, row[j]);
    }
    double sum = 0;
    for (int j = 0; j < visible; j++) {
      float e = (float) Math.exp(row[j] - max);
      row[j] = e;
      sum += e;
    }
    float inv = (float) (1.0 / sum);
    for (int j = 0; j < visible; j++) {
      row[j] *= inv;
    }
    for (int j = visible; j < len; j++) {
      row[j] = 0f;
    }
    sb.position(at);
    sb.put(row, 0, len);
  }
}
