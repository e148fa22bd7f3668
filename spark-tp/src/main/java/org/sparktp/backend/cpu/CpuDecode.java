package org.sparktp.backend.cpu;

import static org.bytedeco.openblas.global.openblas_full.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_full.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_full.CblasTrans;

import java.nio.FloatBuffer;
import java.nio.ShortBuffer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_full;
import org.sparktp.backend.Tensor;
import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;

/**
 * The CPU backend's {@link org.sparktp.backend.Backend#cachedAttention} on its {@link CpuPool}: the new keys and
 * values are stored into each sequence's cache (rounded to the cache's dtype; the rounded values also replace them
 * in {@code qkv}, so this step attends to what later steps read), then one task per (sequence, KV head) runs on the
 * pool's threads. A decode step (one new token) runs the query heads that share a KV head as one
 * {@code [heads per KV head, headDim]} block (adjacent columns of the token's row), so a GQA cache is read once per
 * KV head; a prompt chunk runs head by head. An f32 cache is read in place by two strided OpenBLAS GEMMs; a bf16/f16
 * cache is widened one (sequence, KV head) block at a time into the task's scratch, never the whole cache.
 */
final class CpuDecode {
  private CpuDecode() {}

  static void cachedAttention(CpuPool pool, CpuTensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf,
      int headDim, int[] offsets, Tensor[] caches, int[] past, float scale, CpuTensor out) {
    int cols = qkv.cols();
    int w = out.cols();
    int heads = kvOf.length;
    int kvw = 2 * kvHeads * headDim;
    if (w != heads * headDim || offsets.length != caches.length + 1) {
      throw new IllegalArgumentException("cachedAttention: out " + out.shape() + " for " + heads + " heads of "
          + headDim + ", " + caches.length + " caches for " + (offsets.length - 1) + " sequences");
    }
    CpuTensor[] cache = new CpuTensor[caches.length];
    int maxL = 0;
    int maxN = 0;
    for (int s = 0; s < cache.length; s++) {
      cache[s] = CpuBackend.cpu(caches[s]);
      int n = offsets[s + 1] - offsets[s];
      if (cache[s].cols() != kvw || past[s] + n > cache[s].rows() || !cache[s].dtype().isFloat()) {
        throw new IllegalArgumentException("cachedAttention: cache " + cache[s].shape() + " "
            + cache[s].dtype().id() + " of sequence " + s + " cannot hold " + (past[s] + n)
            + " float tokens of width " + kvw);
      }
      maxL = Math.max(maxL, past[s] + n);
      maxN = Math.max(maxN, n);
    }
    if (maxL == 0 || heads == 0) {
      return;
    }
    // the step's keys and values into the caches (and rounded back into qkv for a 16-bit cache)
    pool.parallelFor(cache.length, 1, (s0, s1) -> {
      for (int s = s0; s < s1; s++) {
        store(qkv, offsets[s], offsets[s + 1] - offsets[s], kvCol, kvw, cache[s], past[s]);
      }
    });
    // tasks: (sequence, first query head of a run that shares one KV head)
    int[] groupStart = new int[heads + 1];
    int groups = 0;
    for (int h0 = 0; h0 < heads; ) {
      int h1 = h0 + 1;
      while (h1 < heads && kvOf[h1] == kvOf[h0]) {
        h1++;
      }
      groupStart[groups++] = h0;
      h0 = h1;
    }
    groupStart[groups] = heads;
    int g = groups;
    int l = maxL;
    int blockRows = Math.max(maxN, heads);
    FloatPointer x = qkv.pointer();
    FloatPointer o = out.pointer();
    pool.parallelFor(cache.length * g, 1, (from, to) -> {
      Scratch sc = new Scratch(blockRows, l, headDim);
      try {
        for (int task = from; task < to; task++) {
          int s = task / g;
          int t0 = offsets[s];
          int n = offsets[s + 1] - t0;
          if (n == 0) {
            continue;
          }
          int len = past[s] + n;
          int h0 = groupStart[task % g];
          int h1 = groupStart[task % g + 1];
          int kv = kvOf[h0];
          CpuTensor c = cache[s];
          FloatPointer k;
          FloatPointer v;
          int ld;
          if (c.dtype() == DType.F32) {
            FloatPointer cp = c.pointer();
            k = cp.getPointer((long) kv * headDim);
            v = cp.getPointer((long) (kvHeads + kv) * headDim);
            ld = kvw;
          } else {
            sc.widen(c, len, kv * headDim, (kvHeads + kv) * headDim);
            k = sc.k;
            v = sc.v;
            ld = headDim;
          }
          if (n == 1) {
            int m = h1 - h0;
            long q = (long) t0 * cols + qCol + (long) h0 * headDim;
            openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, len, headDim, scale,
                x.getPointer(q), headDim, k, ld, 0f, sc.scores, len);
            CpuTransformer.softmaxRows(sc.sb, sc.row, m, len, len, 0);
            openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, headDim, len, 1f, sc.scores, len,
                v, ld, 0f, o.getPointer((long) t0 * w + (long) h0 * headDim), headDim);
            continue;
          }
          for (int h = h0; h < h1; h++) {
            long q = (long) t0 * cols + qCol + (long) h * headDim;
            openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, len, headDim, scale,
                x.getPointer(q), cols, k, ld, 0f, sc.scores, len);
            CpuTransformer.softmaxRows(sc.sb, sc.row, n, len, past[s] + 1, 1);
            openblas_full.cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, headDim, len, 1f, sc.scores, len,
                v, ld, 0f, o.getPointer((long) t0 * w + (long) h * headDim), w);
          }
        }
      } finally {
        sc.close();
      }
    });
  }

  /**
   * Copies the {@code n} new rows of keys and values (columns {@code [kvCol, kvCol + kvw)} of {@code qkv} from row
   * {@code t0}) into {@code cache} at row {@code past}; a 16-bit cache stores them rounded and the rounded values
   * replace them in {@code qkv}.
   */
  private static void store(CpuTensor qkv, int t0, int n, int kvCol, int kvw, CpuTensor cache, int past) {
    int cols = qkv.cols();
    DType dt = cache.dtype();
    FloatBuffer src = qkv.buffer();
    float[] row = new float[kvw];
    short[] half = dt == DType.F32 ? null : new short[kvw];
    for (int i = 0; i < n; i++) {
      src.position((t0 + i) * cols + kvCol);
      src.get(row);
      long at = (long) (past + i) * kvw;
      if (half == null) {
        cache.byteBuffer(4 * at, 4L * kvw).asFloatBuffer().put(row);
        continue;
      }
      for (int j = 0; j < kvw; j++) {
        half[j] = dt == DType.BF16 ? HalfFloats.floatToBf16(row[j]) : HalfFloats.floatToHalf(row[j]);
        row[j] = dt.toFloat(half[j]);
      }
      cache.byteBuffer(2 * at, 2L * kvw).asShortBuffer().put(half);
      src.position((t0 + i) * cols + kvCol);
      src.put(row);
    }
  }

  /** A task's buffers: scores, a softmax row, and (for a 16-bit cache) one KV head's keys and values in f32. */
  private static final class Scratch implements AutoCloseable {
    final FloatPointer scores;
    final FloatBuffer sb;
    final float[] row;
    final int headDim;
    final int maxLen;
    FloatPointer k;
    FloatPointer v;
    private short[] bits;
    private float[] wide;

    Scratch(int blockRows, int maxLen, int headDim) {
      this.scores = new FloatPointer((long) blockRows * maxLen);
      this.sb = scores.asBuffer();
      this.row = new float[maxLen];
      this.headDim = headDim;
      this.maxLen = maxLen;
    }

    /** Rows {@code [0, len)} of the cache's columns {@code [kc, kc + headDim)} and {@code [vc, vc + headDim)}. */
    void widen(CpuTensor cache, int len, int kc, int vc) {
      if (k == null) {
        k = new FloatPointer((long) maxLen * headDim);
        v = new FloatPointer((long) maxLen * headDim);
        bits = new short[headDim];
        wide = new float[Math.max(1, maxLen * headDim)];
      }
      widen(cache, len, kc, k);
      widen(cache, len, vc, v);
    }

    private void widen(CpuTensor cache, int len, int col, FloatPointer into) {
      DType dt = cache.dtype();
      int kvw = cache.cols();
      ShortBuffer src = cache.byteBuffer(0, 2L * len * kvw).asShortBuffer();
      for (int r = 0; r < len; r++) {
        src.position(r * kvw + col);
        src.get(bits);
        int o = r * headDim;
        if (dt == DType.BF16) {
          for (int d = 0; d < headDim; d++) {
            wide[o + d] = Float.intBitsToFloat(bits[d] << 16);
          }
        } else {
          for (int d = 0; d < headDim; d++) {
            wide[o + d] = dt.toFloat(bits[d]);
          }
        }
      }
      into.put(wide, 0, len * headDim);
    }

    @Override
    public void close() {
      scores.deallocate();
      if (k != null) {
        k.deallocate();
        v.deallocate();
      }
    }
  }
}
