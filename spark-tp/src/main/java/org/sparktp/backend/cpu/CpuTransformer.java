package org.sparktp.backend.cpu;

import static org.bytedeco.openblas.global.openblas_full.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_full.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_full.CblasTrans;

import java.nio.FloatBuffer;
import org.sparktp.backend.TransformerMath;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_full;

/**
 * The CPU backend's transformer ops (see {@link org.sparktp.backend.Backend#attention} and the others), on the
 * backend's {@link CpuPool}: attention as two strided OpenBLAS GEMMs per sequence and head, the heads spread over
 * the threads, reading each head's columns of the fused {@code qkv} activation in place (leading dimension = the
 * activation's width, no copies), with the mask and softmax in between: on oneDNN over every head's block at once
 * where it loads ({@link DnnlRows}), else in Java on a scratch {@code [n, n]} block per thread; RMSNorm, RoPE and
 * SwiGLU split by rows. Every output element is computed by one thread, the
 * same way for every thread count.
 */
final class CpuTransformer {
  private CpuTransformer() {}

  static void attention(CpuPool pool, DnnlRows softmax, CpuTensor qkv, int qCol, int kCol, int vCol, int[] kvOf,
      int headDim, int[] offsets, boolean causal, float scale, CpuTensor out) {
    int cols = qkv.cols();
    int w = out.cols();
    int heads = kvOf.length;
    int seqs = offsets.length - 1;
    int tokens = offsets[seqs];
    if (qkv.rows() < tokens || out.rows() < tokens || w != heads * headDim) {
      throw new IllegalArgumentException("attention: qkv " + qkv.shape() + ", out " + out.shape() + " for " + tokens
          + " tokens of " + heads + " heads of " + headDim);
    }
    int maxN = 0;
    for (int s = 0; s < seqs; s++) {
      maxN = Math.max(maxN, offsets[s + 1] - offsets[s]);
    }
    if (maxN == 0 || heads == 0) {
      return;
    }
    if (softmax != null && (long) maxN * maxN < Integer.MAX_VALUE / 2) {
      attentionBlocks(pool, softmax, qkv, qCol, kCol, vCol, kvOf, headDim, offsets, causal, scale, out, maxN,
          BLOCK_BUDGET);
      return;
    }
    FloatPointer x = qkv.pointer();
    FloatPointer o = out.pointer();
    int n2 = maxN;
    // one task per (sequence, head): a [n, n] block of scores on the thread that runs it
    pool.parallelFor(seqs * heads, 1, (from, to) -> {
      FloatPointer scores = new FloatPointer((long) n2 * n2);
      try {
        FloatBuffer sb = scores.asBuffer();
        float[] row = new float[n2];
        for (int task = from; task < to; task++) {
          int s = task / heads;
          int h = task % heads;
          int t0 = offsets[s];
          int n = offsets[s + 1] - t0;
          if (n == 0) {
            continue;
          }
          long q = (long) t0 * cols + qCol + (long) h * headDim;
          long k = (long) t0 * cols + kCol + (long) kvOf[h] * headDim;
          long v = (long) t0 * cols + vCol + (long) kvOf[h] * headDim;
          openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, headDim, scale,
              x.getPointer(q), cols, x.getPointer(k), cols, 0f, scores, n);
          softmaxRows(sb, row, n, n, causal ? 1 : n, causal ? 1 : 0);
          openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, headDim, n, 1f, scores, n,
              x.getPointer(v), cols, 0f, o.getPointer((long) t0 * w + (long) h * headDim), w);
        }
      } finally {
        scores.deallocate();
      }
    });
  }

  /** Floats of score blocks held at once by {@link #attentionBlocks} (64 MiB), unless one head needs more. */
  static final long BLOCK_BUDGET = 16L << 20;

  /**
   * Attention with the softmax on oneDNN: per sequence of {@code n} tokens, the scores of a group of heads go into
   * one buffer of {@code [g * p, p]} blocks ({@code p} = {@code n} rounded up to 16, so that sequences of nearby
   * lengths share one softmax primitive; padding columns and masked entries hold {@code -inf}, padding rows zeros),
   * the QK^T GEMMs spread over the pool's threads, one softmax over the whole buffer on oneDNN's OpenMP team, then
   * the PV GEMMs over the threads. {@code g} is every head unless that exceeds {@code budget} floats
   * ({@link #BLOCK_BUDGET}; at least one head's block is held whatever the budget).
   */
  static void attentionBlocks(CpuPool pool, DnnlRows softmax, CpuTensor qkv, int qCol, int kCol, int vCol,
      int[] kvOf, int headDim, int[] offsets, boolean causal, float scale, CpuTensor out, int maxN, long budget) {
    int cols = qkv.cols();
    int w = out.cols();
    int heads = kvOf.length;
    int maxP = (maxN + 15) & ~15;
    long capacity = Math.max((long) maxP * maxP, Math.min((long) heads * maxP * maxP, budget));
    FloatPointer x = qkv.pointer();
    FloatPointer o = out.pointer();
    float[] fill = new float[maxP];
    java.util.Arrays.fill(fill, Float.NEGATIVE_INFINITY);
    float[] zeros = new float[maxP];
    FloatPointer scores = new FloatPointer(capacity);
    try {
      pool.bindOpenmp();
      for (int s = 0; s + 1 < offsets.length; s++) {
        int t0 = offsets[s];
        int n = offsets[s + 1] - t0;
        if (n == 0) {
          continue;
        }
        int p = (n + 15) & ~15;
        long block = (long) p * p;
        int g = (int) Math.max(1, Math.min(heads, capacity / block));
        for (int h0 = 0; h0 < heads; h0 += g) {
          int first = h0;
          int count = Math.min(g, heads - h0);
          pool.parallelFor(count, 1, (from, to) -> {
            FloatBuffer sb = scores.asBuffer();
            for (int j = from; j < to; j++) {
              int h = first + j;
              long base = j * block;
              long q = (long) t0 * cols + qCol + (long) h * headDim;
              long k = (long) t0 * cols + kCol + (long) kvOf[h] * headDim;
              openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, headDim, scale,
                  x.getPointer(q), cols, x.getPointer(k), cols, 0f, scores.getPointer(base), p);
              for (int i = 0; i < p; i++) {
                int at = (int) (base + (long) i * p);
                if (i >= n) {
                  sb.put(at, zeros, 0, p);
                } else {
                  int visible = causal ? i + 1 : n;
                  sb.put(at + visible, fill, 0, p - visible);
                }
              }
            }
          });
          softmax.softmax(scores, count * p, p);
          pool.parallelFor(count, 1, (from, to) -> {
            for (int j = from; j < to; j++) {
              int h = first + j;
              long v = (long) t0 * cols + vCol + (long) kvOf[h] * headDim;
              openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, headDim, n, 1f,
                  scores.getPointer(j * block), p, x.getPointer(v), cols, 0f,
                  o.getPointer((long) t0 * w + (long) h * headDim), w);
            }
          });
        }
      }
    } finally {
      scores.deallocate();
    }
  }

  /**
   * Softmax in place of {@code rows} rows of {@code len} scores at the start of {@code sb}: row {@code i} over its
   * first {@code min(len, firstVisible + i * step)} entries, zeros after them (the causal mask). The loop over rows
   * is in here, not in the callers: called once per row, this method was compiled on its own and then not inlined
   * ("already compiled into a big method"), and prefill attention at one thread ran 1.5x slower than with the loop
   * written out.
   */
  static void softmaxRows(FloatBuffer sb, float[] row, int rows, int len, int firstVisible, int step) {
    for (int i = 0; i < rows; i++) {
      int visible = (int) Math.min(len, firstVisible + (long) i * step);
      int at = i * len;
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

  static void rmsNorm(CpuPool pool, CpuTensor x, float[] gamma, float eps) {
    int cols = x.cols();
    pool.parallelFor(x.rows(), Elementwise.rowGrain(cols), (r0, r1) -> rmsNorm(x, gamma, eps, r0, r1));
  }

  private static void rmsNorm(CpuTensor x, float[] gamma, float eps, int r0, int r1) {
    int cols = x.cols();
    FloatBuffer b = x.buffer();
    float[] row = new float[cols];
    for (int r = r0; r < r1; r++) {
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
  static void rope(CpuPool pool, CpuTensor x, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    TransformerMath.checkRope(x.rows(), x.cols(), col, heads, headDim, positions, invFreq);
    pool.parallelFor(x.rows(), Math.max(1, 2048 / Math.max(1, heads * headDim)),
        (r0, r1) -> rope(x, col, heads, headDim, positions, invFreq, r0, r1));
  }

  private static void rope(CpuTensor x, int col, int heads, int headDim, int[] positions, float[] invFreq, int r0,
      int r1) {
    int cols = x.cols();
    int half = headDim / 2;
    FloatBuffer b = x.buffer();
    float[] row = new float[heads * headDim];
    float[] cos = new float[half];
    float[] sin = new float[half];
    for (int t = r0; t < r1; t++) {
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

  static void swiglu(CpuPool pool, CpuTensor gateUp, CpuTensor out) {
    int half = out.cols();
    if (gateUp.cols() != 2 * half || gateUp.rows() != out.rows()) {
      throw new IllegalArgumentException("swiglu of " + gateUp.shape() + " into " + out.shape());
    }
    pool.parallelFor(out.rows(), Elementwise.rowGrain(2 * half), (r0, r1) -> swiglu(gateUp, out, r0, r1));
  }

  private static void swiglu(CpuTensor gateUp, CpuTensor out, int r0, int r1) {
    int half = out.cols();
    FloatBuffer in = gateUp.buffer();
    FloatBuffer ob = out.buffer();
    float[] row = new float[2 * half];
    float[] res = new float[half];
    for (int r = r0; r < r1; r++) {
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
