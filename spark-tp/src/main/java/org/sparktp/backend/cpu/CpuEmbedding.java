package org.sparktp.backend.cpu;

import java.nio.FloatBuffer;
import org.bytedeco.javacpp.Pointer;
import org.sparktp.tensor.DType;

/**
 * Embedding lookups of the CPU backend over a table shard in f32, bf16 or f16 (half tables are widened to f32 row by
 * row as they are read): {@link org.sparktp.backend.Backend#embedding} and
 * {@link org.sparktp.backend.Backend#embeddingBag}.
 */
final class CpuEmbedding {
  private CpuEmbedding() {}

  static void embedding(CpuTensor t, int idStart, int[] ids, CpuTensor o) {
    if (o.cols() != t.cols() || o.rows() < ids.length) {
      throw new IllegalArgumentException("Embedding output " + o.shape() + " cannot hold " + ids.length
          + " rows of width " + t.cols());
    }
    Pointer.memset(o.data(), 0, o.bytes());
    int d = t.cols();
    if (t.dtype() != DType.F32) {
      // a bf16/f16 table (half the bytes): each row gathered is widened to f32 as it is copied
      int es = t.dtype().size();
      for (int r = 0; r < ids.length; r++) {
        int local = ids[r] - idStart;
        if (local >= 0 && local < t.rows()) {
          DType.F32.convertFrom(t.dtype(), t.byteBuffer((long) local * d * es, (long) d * es),
              o.byteBuffer((long) r * d * 4, (long) d * 4), d);
        }
      }
      return;
    }
    FloatBuffer tb = t.buffer();
    FloatBuffer ob = o.buffer();
    for (int r = 0; r < ids.length; r++) {
      int local = ids[r] - idStart;
      if (local >= 0 && local < t.rows()) {
        ob.position(r * d).put(tb.limit((local + 1) * d).position(local * d));
        tb.limit(tb.capacity());
      }
    }
  }

  static void embeddingBag(CpuTensor t, int idStart, int[] ids, int[] offsets, boolean mean, CpuTensor o) {
    int bags = offsets.length - 1;
    if (o.cols() != t.cols() || o.rows() < bags) {
      throw new IllegalArgumentException("Embedding-bag output " + o.shape() + " cannot hold " + bags
          + " rows of width " + t.cols());
    }
    Pointer.memset(o.data(), 0, o.bytes());
    int d = t.cols();
    FloatBuffer tb = t.dtype() == DType.F32 ? t.buffer() : null;
    java.nio.ShortBuffer hb = t.dtype() == DType.F32 ? null : t.byteBuffer().asShortBuffer(); // bf16/f16: widened
    DType tdt = t.dtype();
    FloatBuffer ob = o.buffer();
    float[] acc = new float[d];
    for (int r = 0; r < bags; r++) {
      java.util.Arrays.fill(acc, 0f);
      int from = offsets[r];
      int to = offsets[r + 1];
      for (int i = from; i < to; i++) {
        int local = ids[i] - idStart;
        if (local >= 0 && local < t.rows()) {
          int base = local * d;
          if (tb != null) {
            for (int c = 0; c < d; c++) {
              acc[c] += tb.get(base + c);
            }
          } else {
            for (int c = 0; c < d; c++) {
              acc[c] += tdt.toFloat(hb.get(base + c));
            }
          }
        }
      }
      if (mean && to > from) {
        float inv = 1f / (to - from);
        for (int c = 0; c < d; c++) {
          acc[c] *= inv;
        }
      }
      ob.position(r * d).put(acc);
    }
  }
}
