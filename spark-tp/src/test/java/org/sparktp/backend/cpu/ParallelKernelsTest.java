package org.sparktp.backend.cpu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Tensor;
import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import org.sparktp.testing.Rand;

/**
 * The CPU backend's kernels on its thread pool ({@link CpuPool}, {@code spark.tp.cpu.threads}) against float64 math
 * written plainly here, on fresh random data of odd shapes, for 1, 2 and 3 threads: prefill attention batched over
 * sequences and heads (GQA ratios 1, 2 and 3, causal and not, an empty sequence), cached attention over f32, bf16 and
 * f16 KV caches (decode tokens and a prompt chunk in one step), RMSNorm, LayerNorm, RoPE, SwiGLU, bias + activations,
 * softmax, residual adds, bf16 conversion and the OpenBLAS GEMM split by rows or columns. Tolerance 1e-5 absolute on
 * values of order one (float32 arithmetic; bf16 conversion: exact rounding). Then: the thread count does not change any
 * result by more than 1e-6.
 */
class ParallelKernelsTest {
  static final double TOL = 1e-5;

  @ParameterizedTest(name = "threads={0}")
  @ValueSource(ints = {1, 2, 3})
  void prefillAttentionMatchesFloat64(int threads) {
    Rand rnd = new Rand();
    int[][] shapes = {{6, 2, 10}, {5, 5, 6}, {4, 2, 8}}; // heads, kv heads, head dim
    for (int[] sh : shapes) {
      for (boolean causal : new boolean[] {true, false}) {
        int heads = sh[0];
        int kv = sh[1];
        int hd = sh[2];
        int[] offsets = {0, 7, 8, 21, 21, 26}; // lengths 7, 1, 13, 0, 5
        int tokens = offsets[offsets.length - 1];
        int qCol = 3; // the q, k, v blocks inside a wider activation
        int kCol = qCol + heads * hd;
        int vCol = kCol + kv * hd;
        int cols = vCol + kv * hd + 2;
        int[] kvOf = kvOf(heads, kv);
        float[] x = rnd.floats(tokens * cols, 1);
        float scale = (float) (1 / Math.sqrt(hd));
        double[] want = prefillReference(x, cols, qCol, kCol, vCol, kvOf, hd, offsets, causal, scale);
        try (CpuBackend be = new CpuBackend(threads); Tensor t = be.upload(x, 0, tokens, cols);
            Tensor out = be.empty(tokens, heads * hd)) {
          be.attention(t, qCol, kCol, vCol, kvOf, hd, offsets, causal, scale, out);
          assertClose(be.download(out), want, TOL, rnd + " heads " + heads + "/" + kv + " causal " + causal);
        }
      }
    }
  }

  @ParameterizedTest(name = "threads={0}")
  @ValueSource(ints = {1, 2, 3})
  void cachedAttentionOverF32AndHalfCachesMatchesFloat64(int threads) {
    Rand rnd = new Rand();
    int[][] shapes = {{6, 2, 10}, {4, 1, 8}, {3, 3, 6}};
    for (int[] sh : shapes) {
      for (DType dt : new DType[] {DType.F32, DType.BF16, DType.F16}) {
        int heads = sh[0];
        int kv = sh[1];
        int hd = sh[2];
        int kvw = 2 * kv * hd;
        int qCol = 0;
        int kvCol = heads * hd;
        int cols = kvCol + kvw;
        int[] kvOf = kvOf(heads, kv);
        int[] past = {9, 0, 4, 3};
        int[] offsets = {0, 1, 4, 5, 5}; // decode 1 token after 9; a 3-token prompt; decode after 4; nothing
        int tokens = offsets[offsets.length - 1];
        int cap = 12;
        float[] x = rnd.floats(tokens * cols, 1);
        float[][] hist = new float[past.length][];
        for (int s = 0; s < past.length; s++) {
          hist[s] = round(rnd.floats(cap * kvw, 1), dt);
        }
        float[] xr = x.clone(); // the new keys and values as the cache stores them
        for (int t = 0; t < tokens; t++) {
          for (int c = 0; c < kvw; c++) {
            xr[t * cols + kvCol + c] = round(new float[] {x[t * cols + kvCol + c]}, dt)[0];
          }
        }
        float scale = (float) (1 / Math.sqrt(hd));
        double[] want = new double[tokens * heads * hd];
        for (int s = 0; s < past.length; s++) {
          int t0 = offsets[s];
          int n = offsets[s + 1] - t0;
          int ps = past[s];
          float[] hs = hist[s];
          for (int i = 0; i < n; i++) {
            for (int h = 0; h < heads; h++) {
              int visible = ps + i + 1;
              int hh = h;
              // a combined array: history rows, then the new rows of xr
              float[] all = new float[(ps + n) * kvw];
              System.arraycopy(hs, 0, all, 0, ps * kvw);
              for (int j = 0; j < n; j++) {
                System.arraycopy(xr, (t0 + j) * cols + kvCol, all, (ps + j) * kvw, kvw);
              }
              double[] q = new double[hd];
              for (int d = 0; d < hd; d++) {
                q[d] = x[(t0 + i) * cols + qCol + h * hd + d];
              }
              attendRow(all, q, j -> j * kvw + kvOf[hh] * hd, j -> j * kvw + (kv + kvOf[hh]) * hd, visible, hd,
                  scale, want, (t0 + i) * heads * hd + h * hd);
            }
          }
        }
        try (CpuBackend be = new CpuBackend(threads); Tensor t = be.upload(x, 0, tokens, cols);
            Tensor out = be.empty(tokens, heads * hd)) {
          Tensor[] caches = new Tensor[past.length];
          try {
            for (int s = 0; s < past.length; s++) {
              try (Tensor f = be.upload(hist[s], 0, cap, kvw)) {
                caches[s] = dt == DType.F32 ? be.upload(hist[s], 0, cap, kvw) : be.convert(f, dt);
              }
            }
            be.cachedAttention(t, qCol, kvCol, kv, kvOf, hd, offsets, caches, past, scale, out);
            String what = rnd + " heads " + heads + "/" + kv + " " + dt.id();
            assertClose(be.download(out), want, TOL, what);
            // the new rows landed in the caches, rounded, and the rounded values replaced them in qkv
            float[] c1 = download(be, caches[1]);
            for (int j = 0; j < 3; j++) {
              for (int c = 0; c < kvw; c++) {
                assertThat(c1[j * kvw + c]).as(what).isEqualTo(xr[(1 + j) * cols + kvCol + c]);
              }
            }
            float[] back = be.download(t);
            assertThat(back[2 * cols + kvCol + 1]).as(what).isEqualTo(xr[2 * cols + kvCol + 1]);
          } finally {
            for (Tensor c : caches) {
              if (c != null) {
                c.close();
              }
            }
          }
        }
      }
    }
  }

  @ParameterizedTest(name = "threads={0}")
  @ValueSource(ints = {1, 2, 3})
  void normsRopeActivationsAndAddsMatchFloat64(int threads) {
    Rand rnd = new Rand();
    int rows = 37;
    int cols = 130;
    float[] x = rnd.floats(rows * cols, 2);
    float[] g = rnd.floats(cols, 1);
    float[] b = rnd.floats(cols, 1);
    try (CpuBackend be = new CpuBackend(threads)) {
      // RMSNorm
      double[] want = new double[rows * cols];
      for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int c = 0; c < cols; c++) {
          ss += (double) x[r * cols + c] * x[r * cols + c];
        }
        double inv = 1 / Math.sqrt(ss / cols + 1e-6);
        for (int c = 0; c < cols; c++) {
          want[r * cols + c] = g[c] * x[r * cols + c] * inv;
        }
      }
      try (Tensor t = be.upload(x, 0, rows, cols); Tensor gt = be.upload(g, 0, 1, cols)) {
        be.rmsNorm(t, gt, 1e-6f);
        assertClose(be.download(t), want, TOL, rnd + " rmsNorm");
      }
      // LayerNorm
      for (int r = 0; r < rows; r++) {
        double mean = 0;
        for (int c = 0; c < cols; c++) {
          mean += x[r * cols + c];
        }
        mean /= cols;
        double var = 0;
        for (int c = 0; c < cols; c++) {
          var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
        }
        double inv = 1 / Math.sqrt(var / cols + 1e-5);
        for (int c = 0; c < cols; c++) {
          want[r * cols + c] = (x[r * cols + c] - mean) * inv * g[c] + b[c];
        }
      }
      try (Tensor t = be.upload(x, 0, rows, cols); Tensor gt = be.upload(g, 0, 1, cols);
          Tensor bt = be.upload(b, 0, 1, cols)) {
        be.layerNorm(t, gt, bt, 1e-5f);
        assertClose(be.download(t), want, TOL, rnd + " layerNorm");
      }
      // RoPE on 3 heads of 10 at column 7
      int heads = 3;
      int hd = 10;
      int col = 7;
      int[] pos = new int[rows];
      for (int r = 0; r < rows; r++) {
        pos[r] = rnd.nextInt(500);
      }
      float[] inv = new float[hd / 2];
      for (int i = 0; i < hd / 2; i++) {
        inv[i] = (float) Math.pow(10000, -2.0 * i / hd);
      }
      for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
          want[r * cols + c] = x[r * cols + c];
        }
        for (int h = 0; h < heads; h++) {
          for (int i = 0; i < hd / 2; i++) {
            int a = r * cols + col + h * hd + i;
            double ang = (double) pos[r] * inv[i];
            want[a] = x[a] * Math.cos(ang) - x[a + hd / 2] * Math.sin(ang);
            want[a + hd / 2] = x[a + hd / 2] * Math.cos(ang) + x[a] * Math.sin(ang);
          }
        }
      }
      try (Tensor t = be.upload(x, 0, rows, cols)) {
        be.rope(t, col, heads, hd, pos, inv);
        assertClose(be.download(t), want, TOL, rnd + " rope");
      }
      // SwiGLU: [rows, 2 * 65] -> [rows, 65]
      double[] sw = new double[rows * cols / 2];
      for (int r = 0; r < rows; r++) {
        for (int j = 0; j < cols / 2; j++) {
          double gate = x[r * cols + j];
          sw[r * cols / 2 + j] = gate / (1 + Math.exp(-gate)) * x[r * cols + cols / 2 + j];
        }
      }
      try (Tensor t = be.upload(x, 0, rows, cols); Tensor o = be.empty(rows, cols / 2)) {
        be.swiglu(t, o);
        assertClose(be.download(o), sw, TOL, rnd + " swiglu");
      }
      // bias + activation, softmax, add
      for (Activation a : new Activation[] {Activation.GELU, Activation.SILU, Activation.GELU_TANH,
          Activation.SOFTMAX}) {
        for (int r = 0; r < rows; r++) {
          double max = Double.NEGATIVE_INFINITY;
          for (int c = 0; c < cols; c++) {
            double v = (double) x[r * cols + c] + b[c];
            want[r * cols + c] = act(a, v);
            max = Math.max(max, v);
          }
          if (a == Activation.SOFTMAX) {
            double z = 0;
            for (int c = 0; c < cols; c++) {
              z += Math.exp(x[r * cols + c] + (double) b[c] - max);
            }
            for (int c = 0; c < cols; c++) {
              want[r * cols + c] = Math.exp(x[r * cols + c] + (double) b[c] - max) / z;
            }
          }
        }
        try (Tensor t = be.upload(x, 0, rows, cols); Tensor bt = be.upload(b, 0, 1, cols)) {
          be.biasActivate(t, bt, a);
          assertClose(be.download(t), want, TOL, rnd + " bias + " + a);
        }
      }
      float[] y = rnd.floats(rows * cols, 1);
      for (int i = 0; i < want.length; i++) {
        want[i] = (double) x[i] + y[i];
      }
      try (Tensor t = be.upload(x, 0, rows, cols); Tensor u = be.upload(y, 0, rows, cols)) {
        be.add(t, u);
        assertClose(be.download(t), want, 1e-6, rnd + " add");
      }
      // bf16 conversion of a tensor larger than one chunk of the pool: exact rounding and back
      float[] big = rnd.floats(3 * 4096 + 17, 3);
      try (Tensor t = be.upload(big, 0, 1, big.length); Tensor h = be.convert(t, DType.BF16);
          Tensor w = be.convert(h, DType.F32)) {
        float[] got = be.download(w);
        for (int i = 0; i < big.length; i++) {
          assertThat(got[i]).as("%s bf16 of %s", rnd, big[i]).isEqualTo(HalfFloats.bf16ToFloat(
              HalfFloats.floatToBf16(big[i])));
        }
      }
    }
  }

  @ParameterizedTest(name = "threads={0}")
  @ValueSource(ints = {1, 2, 3})
  void gemmSplitByRowsOrColumnsMatchesFloat64(int threads) {
    Rand rnd = new Rand();
    int[][] shapes = {{3, 1001, 97}, {301, 53, 41}, {64, 64, 65}}; // m, n, k: columns, rows, either
    try (CpuBackend be = new CpuBackend(threads)) {
      for (int[] sh : shapes) {
        for (int tr = 0; tr < 4; tr++) {
          int m = sh[0];
          int n = sh[1];
          int k = sh[2];
          boolean ta = (tr & 1) != 0;
          boolean tb = (tr & 2) != 0;
          float[] a = rnd.floats(m * k, 1);
          float[] b = rnd.floats(k * n, 1);
          float[] c = rnd.floats(m * n, 1);
          double[] want = new double[m * n];
          for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
              double s = 0;
              for (int p = 0; p < k; p++) {
                s += (double) (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
              }
              want[i * n + j] = 0.5 * s + 0.25 * c[i * n + j];
            }
          }
          try (Tensor at = ta ? be.upload(a, 0, k, m) : be.upload(a, 0, m, k);
              Tensor bt = tb ? be.upload(b, 0, n, k) : be.upload(b, 0, k, n); Tensor ct = be.upload(c, 0, m, n)) {
            be.gemm(ta, tb, 0.5f, at, bt, 0.25f, ct);
            assertClose(be.download(ct), want, 1e-4, rnd + " gemm " + m + "x" + n + "x" + k + " ta " + ta + " tb " + tb);
          }
        }
      }
    }
  }

  @Test
  void threadCountDoesNotChangeResults() {
    Rand rnd = new Rand();
    int heads = 6;
    int kv = 2;
    int hd = 16;
    int tokens = 40;
    int cols = (heads + 2 * kv) * hd;
    float[] x = rnd.floats(tokens * cols, 1);
    float[] w = rnd.floats(cols * 96, 0.1f);
    float[] g = rnd.floats(cols, 1);
    int[] offsets = {0, 11, 40};
    int[] pos = new int[tokens];
    for (int i = 0; i < tokens; i++) {
      pos[i] = i;
    }
    float[] inv = new float[hd / 2];
    for (int i = 0; i < hd / 2; i++) {
      inv[i] = (float) Math.pow(10000, -2.0 * i / hd);
    }
    List<float[]> results = new ArrayList<>();
    for (int threads : new int[] {1, 2, 4}) {
      try (CpuBackend be = new CpuBackend(threads); Tensor t = be.upload(x, 0, tokens, cols);
          Tensor gt = be.upload(g, 0, 1, cols); Tensor wt = be.upload(w, 0, 96, cols);
          Tensor att = be.empty(tokens, heads * hd)) {
        be.rmsNorm(t, gt, 1e-6f);
        be.rope(t, 0, heads + kv, hd, pos, inv);
        be.attention(t, 0, heads * hd, (heads + kv) * hd, kvOf(heads, kv), hd, offsets, true, 0.25f, att);
        try (Tensor y = be.empty(tokens, 96); org.sparktp.backend.Backend.PreparedLinear lin = be.prepareLinear(
            be.convert(wt, DType.BF16), null, Activation.GELU); Tensor yb = lin.apply(t, false)) {
          be.gemm(false, true, 1f, t, wt, 0f, y);
          be.activate(y, Activation.GELU);
          float[] a = be.download(att);
          float[] b = be.download(y);
          float[] c = be.download(yb);
          float[] all = new float[a.length + b.length + c.length];
          System.arraycopy(a, 0, all, 0, a.length);
          System.arraycopy(b, 0, all, a.length, b.length);
          System.arraycopy(c, 0, all, a.length + b.length, c.length);
          results.add(all);
        }
      }
    }
    for (int i = 1; i < results.size(); i++) {
      float[] a = results.get(0);
      float[] b = results.get(i);
      for (int j = 0; j < a.length; j++) {
        assertThat((double) Math.abs(a[j] - b[j])).as("%s element %d, threads run %d", rnd, j, i)
            .isLessThanOrEqualTo(1e-6 * Math.max(1, Math.abs(a[j])));
      }
    }
  }

  @Test
  void poolRunsEveryIndexOnceAndRethrowsTheFirstFailure() {
    try (CpuPool pool = new CpuPool(3)) {
      for (int n : new int[] {1, 2, 7, 1000}) {
        AtomicInteger[] seen = new AtomicInteger[n];
        for (int i = 0; i < n; i++) {
          seen[i] = new AtomicInteger();
        }
        pool.parallelFor(n, 1, (a, b) -> {
          for (int i = a; i < b; i++) {
            seen[i].incrementAndGet();
            pool.parallelFor(3, 1, (c, d) -> { }); // nested: runs on the calling thread
          }
        });
        for (int i = 0; i < n; i++) {
          assertThat(seen[i].get()).as("index %d of %d", i, n).isEqualTo(1);
        }
      }
      assertThatThrownBy(() -> pool.parallelFor(100, 1, (a, b) -> {
        if (a <= 50 && 50 < b) {
          throw new IllegalStateException("chunk with 50 failed");
        }
      })).isInstanceOf(IllegalStateException.class).hasMessage("chunk with 50 failed");
      pool.parallelFor(10, 1, (a, b) -> { }); // usable after a failure
    }
  }

  // ---------------------------------------------------------------------------------------------

  /**
   * Float64 prefill attention of the sequences at {@code offsets} over the q, k and v blocks at columns {@code qCol},
   * {@code kCol}, {@code vCol} of {@code x [tokens, cols]}: {@code [tokens, heads * hd]}, query head {@code h}
   * reading KV head {@code kvOf[h]}, causal or not.
   */
  static double[] prefillReference(float[] x, int cols, int qCol, int kCol, int vCol, int[] kvOf, int hd,
      int[] offsets, boolean causal, float scale) {
    int heads = kvOf.length;
    double[] want = new double[offsets[offsets.length - 1] * heads * hd];
    for (int s = 0; s + 1 < offsets.length; s++) {
      int t0 = offsets[s];
      int n = offsets[s + 1] - t0;
      for (int i = 0; i < n; i++) {
        for (int h = 0; h < heads; h++) {
          double[] q = new double[hd];
          for (int d = 0; d < hd; d++) {
            q[d] = x[(t0 + i) * cols + qCol + h * hd + d];
          }
          int hh = h;
          attendRow(x, q, j -> (t0 + j) * cols + kCol + kvOf[hh] * hd, j -> (t0 + j) * cols + vCol + kvOf[hh] * hd,
              causal ? i + 1 : n, hd, scale, want, (t0 + i) * heads * hd + h * hd);
        }
      }
    }
    return want;
  }

  static int[] kvOf(int heads, int kv) {
    int[] out = new int[heads];
    for (int h = 0; h < heads; h++) {
      out[h] = h / (heads / kv);
    }
    return out;
  }

  static double act(Activation a, double v) {
    return switch (a) {
      case GELU -> 0.5 * v * (1 + org.sparktp.testing.Reference.erf(v / Math.sqrt(2)));
      case GELU_TANH -> 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
      case SILU -> v / (1 + Math.exp(-v));
      default -> v;
    };
  }

  /** One query row {@code q} attending to {@code visible} keys at {@code kAt(j)} and values at {@code vAt(j)}. */
  static void attendRow(float[] kv, double[] q, java.util.function.IntUnaryOperator kAt,
      java.util.function.IntUnaryOperator vAt, int visible, int hd, float scale, double[] out, int outAt) {
    double[] s = new double[visible];
    double max = Double.NEGATIVE_INFINITY;
    for (int j = 0; j < visible; j++) {
      double dot = 0;
      for (int d = 0; d < hd; d++) {
        dot += q[d] * kv[kAt.applyAsInt(j) + d];
      }
      s[j] = dot * scale;
      max = Math.max(max, s[j]);
    }
    double z = 0;
    for (int j = 0; j < visible; j++) {
      s[j] = Math.exp(s[j] - max);
      z += s[j];
    }
    for (int j = 0; j < visible; j++) {
      for (int d = 0; d < hd; d++) {
        out[outAt + d] += s[j] / z * kv[vAt.applyAsInt(j) + d];
      }
    }
  }

  static float[] round(float[] a, DType dt) {
    float[] out = a.clone();
    if (dt == DType.F32) {
      return out;
    }
    for (int i = 0; i < out.length; i++) {
      out[i] = dt == DType.BF16 ? HalfFloats.bf16ToFloat(HalfFloats.floatToBf16(a[i]))
          : HalfFloats.halfToFloat(HalfFloats.floatToHalf(a[i]));
    }
    return out;
  }

  static float[] download(CpuBackend be, Tensor t) {
    if (t.dtype() == DType.F32) {
      return be.download(t);
    }
    try (Tensor w = be.convert(t, DType.F32)) {
      return be.download(w);
    }
  }

  static void assertClose(float[] got, double[] want, double tol, String what) {
    assertThat(got).as(what).hasSize(want.length);
    double err = 0;
    int at = -1;
    for (int i = 0; i < want.length; i++) {
      double e = Math.abs(got[i] - want[i]);
      if (e > err || Double.isNaN(e)) {
        err = e;
        at = i;
      }
    }
    assertThat(err).as("%s: max |error| at %d", what, at).isLessThanOrEqualTo(tol);
  }
}
