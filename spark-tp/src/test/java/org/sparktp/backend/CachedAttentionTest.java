package org.sparktp.backend;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.testing.Rand;

/**
 * {@link Backend#cachedAttention}, the CPU fast path and the generic implementation every backend
 * inherits, against attention written plainly in float64 over the whole prefix: two sequences with GQA
 * (4 query heads on 2 KV heads), one decoding a token after 5 cached ones, one prefilling 3 after 2;
 * the new keys and values land in the caches. Tolerance 1e-5 (float32 storage).
 */
class CachedAttentionTest {
  static final int HD = 8;
  static final int HEADS = 4;
  static final int KV = 2;

  /** A backend that keeps every default method of {@link Backend} (the generic path). */
  static final class Generic implements Backend {
    final CpuBackend cpu = new CpuBackend();

    public String name() {
      return "generic";
    }

    public Tensor allocate(int r, int c) {
      return cpu.allocate(r, c);
    }

    public Tensor upload(float[] d, int o, int r, int c) {
      return cpu.upload(d, o, r, c);
    }

    public void download(Tensor s, float[] d, int o) {
      cpu.download(s, d, o);
    }

    public void write(Tensor t, int row, float[] d, int o, int l) {
      cpu.write(t, row, d, o, l);
    }

    public void zero(Tensor t) {
      cpu.zero(t);
    }

    public void copyBlock(Tensor s, int sr, int sc, Tensor d, int dr, int dc, int r, int c) {
      cpu.copyBlock(s, sr, sc, d, dr, dc, r, c);
    }

    public void gemm(boolean ta, boolean tb, float al, Tensor a, Tensor b, float be, Tensor c) {
      cpu.gemm(ta, tb, al, a, b, be, c);
    }

    public void addBias(Tensor x, Tensor b) {
      cpu.addBias(x, b);
    }

    public void add(Tensor d, Tensor s) {
      cpu.add(d, s);
    }

    public void activate(Tensor x, Activation a) {
      cpu.activate(x, a);
    }

    public void layerNorm(Tensor x, Tensor g, Tensor b, float e) {
      cpu.layerNorm(x, g, b, e);
    }

    public void embedding(Tensor t, int s, int[] ids, Tensor o) {
      cpu.embedding(t, s, ids, o);
    }

    public void embeddingBag(Tensor t, int s, int[] ids, int[] off, boolean m, Tensor o) {
      cpu.embeddingBag(t, s, ids, off, m, o);
    }

    public long liveTensors() {
      return cpu.liveTensors();
    }

    public long liveBytes() {
      return cpu.liveBytes();
    }

    public void close() {
      cpu.close();
    }
  }

  @Test
  void cpuAndGenericPathsMatchPlainFloat64AttentionOverTheWholePrefix() {
    Rand rnd = new Rand();
    int[] past = {5, 2};
    int[] offsets = {0, 1, 4}; // seq 0: 1 new token, seq 1: 3
    int cols = (HEADS + 2 * KV) * HD;
    int kvw = 2 * KV * HD;
    float[] qkv = rnd.floats(4 * cols, 1);
    float[][] cached = {rnd.floats(8 * kvw, 1), rnd.floats(8 * kvw, 1)}; // capacity 8, rows < past are history
    int[] kvOf = {0, 0, 1, 1};
    float scale = (float) (1 / Math.sqrt(HD));
    double[] want = new double[4 * HEADS * HD];
    for (int s = 0; s < 2; s++) {
      int n = offsets[s + 1] - offsets[s];
      // the prefix as float64 rows: history then the new tokens' K and V
      double[][] k = new double[past[s] + n][];
      double[][] v = new double[past[s] + n][];
      for (int j = 0; j < past[s] + n; j++) {
        k[j] = new double[KV * HD];
        v[j] = new double[KV * HD];
        for (int c = 0; c < KV * HD; c++) {
          k[j][c] = j < past[s] ? cached[s][j * kvw + c] : qkv[(offsets[s] + j - past[s]) * cols + HEADS * HD + c];
          v[j][c] = j < past[s] ? cached[s][j * kvw + KV * HD + c]
              : qkv[(offsets[s] + j - past[s]) * cols + (HEADS + KV) * HD + c];
        }
      }
      for (int i = 0; i < n; i++) {
        int t = offsets[s] + i;
        for (int h = 0; h < HEADS; h++) {
          int last = past[s] + i;
          double[] sc = new double[last + 1];
          double max = Double.NEGATIVE_INFINITY;
          for (int j = 0; j <= last; j++) {
            double dot = 0;
            for (int d = 0; d < HD; d++) {
              dot += qkv[t * cols + h * HD + d] * k[j][kvOf[h] * HD + d];
            }
            sc[j] = dot * scale;
            max = Math.max(max, sc[j]);
          }
          double z = 0;
          for (int j = 0; j <= last; j++) {
            sc[j] = Math.exp(sc[j] - max);
            z += sc[j];
          }
          for (int j = 0; j <= last; j++) {
            for (int d = 0; d < HD; d++) {
              want[t * HEADS * HD + h * HD + d] += sc[j] / z * v[j][kvOf[h] * HD + d];
            }
          }
        }
      }
    }
    for (Backend be : new Backend[] {new CpuBackend(), new Generic()}) {
      try (be) {
        float[] got;
        float[] cache1;
        try (Tensor x = be.upload(qkv, 4, cols); Tensor c0 = be.upload(cached[0], 8, kvw);
            Tensor c1 = be.upload(cached[1], 8, kvw); Tensor out = be.empty(4, HEADS * HD)) {
          be.cachedAttention(x, 0, HEADS * HD, KV, kvOf, HD, offsets, new Tensor[] {c0, c1}, past, scale, out);
          got = be.download(out);
          cache1 = be.download(c1);
        }
        double err = 0;
        for (int i = 0; i < want.length; i++) {
          err = Math.max(err, Math.abs(got[i] - want[i]));
        }
        assertThat(err).as("%s max |error|", be.name()).isLessThanOrEqualTo(1e-5);
        for (int j = 0; j < 3; j++) { // sequence 1's new K and V at rows 2..4 of its cache
          for (int c = 0; c < kvw; c++) {
            assertThat(cache1[(2 + j) * kvw + c]).isEqualTo(qkv[(1 + j) * cols + HEADS * HD + c]);
          }
        }
      }
    }
  }
}
