package org.sparktp.backend;

import org.sparktp.tensor.DType;

/**
 * {@link Backend#cachedAttention} over KV caches stored in bf16/f16 (issue 9b, {@code spark.tp.activation-dtype}):
 * the step's new keys and values are rounded once to the cache's dtype and stored, the rounded values also
 * replace them in {@code qkv} (so this step attends to what later steps will read), and each sequence's cache is
 * widened to f32 for the attention math, which then runs on the backend's f32 path. Generic: it only uses
 * {@link Backend#allocate}, {@link Backend#convert} and {@link Backend#copyBlock}.
 */
public final class HalfKv {
  private HalfKv() {}

  /** True when any of the caches is stored in a 16-bit float type. */
  public static boolean needed(Tensor[] cache) {
    for (Tensor c : cache) {
      if (c.dtype() != DType.F32) {
        return true;
      }
    }
    return false;
  }

  public static void cachedAttention(Backend be, Tensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf,
      int headDim, int[] offsets, Tensor[] cache, int[] past, float scale, Tensor out) {
    int kvw = 2 * kvHeads * headDim;
    Tensor[] wide = new Tensor[cache.length];
    try {
      for (int s = 0; s < cache.length; s++) {
        int o = offsets[s];
        int n = offsets[s + 1] - o;
        DType dt = cache[s].dtype();
        if (cache[s].cols() != kvw || past[s] + n > cache[s].rows()) {
          throw new IllegalArgumentException("cachedAttention: cache " + cache[s].shape() + " of sequence " + s
              + " cannot hold " + (past[s] + n) + " tokens of width " + kvw);
        }
        wide[s] = be.allocate(past[s] + n, kvw, DType.F32);
        if (n == 0) {
          continue; // not read
        }
        try (Tensor fresh = be.allocate(n, kvw, DType.F32)) {
          be.copyBlock(qkv, o, kvCol, fresh, 0, 0, n, kvw);
          try (Tensor stored = be.convert(fresh, dt)) {
            be.copyBlock(stored, 0, 0, cache[s], past[s], 0, n, kvw);
            try (Tensor back = be.convert(stored, DType.F32)) {
              be.copyBlock(back, 0, 0, qkv, o, kvCol, n, kvw);
            }
          }
        }
        if (past[s] > 0) {
          try (Tensor w = be.convert(cache[s].rows(0, past[s]), DType.F32)) {
            be.copyBlock(w, 0, 0, wide[s], 0, 0, past[s], kvw);
          }
        }
      }
      be.cachedAttention(qkv, qCol, kvCol, kvHeads, kvOf, headDim, offsets, wide, past, scale, out);
    } finally {
      for (Tensor w : wide) {
        if (w != null) {
          w.close();
        }
      }
    }
  }
}
