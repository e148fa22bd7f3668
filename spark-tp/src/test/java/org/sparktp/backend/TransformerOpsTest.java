package org.sparktp.backend;

import static org.assertj.core.api.Assertions.assertThat;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.Set;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.testing.Rand;

/**
 * The transformer ops of {@link Backend} (attention over a ragged batch with grouped-query heads, causal
 * and bidirectional; RMSNorm; SwiGLU), through the CPU backend's fast paths and through the generic
 * default implementations every other backend inherits, against float64 math written plainly here.
 */
class TransformerOpsTest {
  final Rand rnd = new Rand();
  static final Set<String> OPS = Set.of("attention", "rope", "rmsNorm", "swiglu", "selectRows");

  /** The CPU backend with the transformer ops left to {@link Backend}'s default implementations. */
  static Backend generic(CpuBackend cpu) {
    InvocationHandler h = (proxy, m, args) -> {
      if (m.isDefault() && OPS.contains(m.getName())) {
        return InvocationHandler.invokeDefault(proxy, m, args);
      }
      try {
        return m.invoke(cpu, args);
      } catch (InvocationTargetException e) {
        throw e.getCause();
      }
    };
    return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, h);
  }

  @ParameterizedTest
  @ValueSource(booleans = {true, false})
  void attentionMatchesFloat64OnARaggedBatchWithGroupedHeads(boolean causal) {
    int[] offsets = {0, 1, 6, 6 + 13}; // lengths 1, 5, 13
    int tokens = offsets[3];
    int d = 8;
    int heads = 3;
    int[] kvOf = {0, 0, 1}; // two KV heads, the first shared
    int cols = heads * d + 2 * 2 * d + 5; // q | k | v, plus unused columns
    int qCol = 0;
    int kCol = heads * d;
    int vCol = kCol + 2 * d;
    float[] x = rnd.floats(tokens * cols, 1.5);
    float scale = (float) (1 / Math.sqrt(d));
    double[][] ref = new double[tokens][heads * d];
    for (int s = 0; s + 1 < offsets.length; s++) {
      for (int h = 0; h < heads; h++) {
        for (int i = offsets[s]; i < offsets[s + 1]; i++) {
          int last = causal ? i : offsets[s + 1] - 1;
          double[] p = new double[last + 1];
          double max = Double.NEGATIVE_INFINITY;
          for (int j = offsets[s]; j <= last; j++) {
            double dot = 0;
            for (int c = 0; c < d; c++) {
              dot += (double) x[i * cols + qCol + h * d + c] * x[j * cols + kCol + kvOf[h] * d + c];
            }
            p[j] = dot * scale;
            max = Math.max(max, p[j]);
          }
          double sum = 0;
          for (int j = offsets[s]; j <= last; j++) {
            p[j] = Math.exp(p[j] - max);
            sum += p[j];
          }
          for (int j = offsets[s]; j <= last; j++) {
            for (int c = 0; c < d; c++) {
              ref[i][h * d + c] += p[j] / sum * x[j * cols + vCol + kvOf[h] * d + c];
            }
          }
        }
      }
    }
    try (CpuBackend cpu = new CpuBackend()) {
      for (Backend be : new Backend[] {cpu, generic(cpu)}) {
        try (Tensor in = be.upload(x, tokens, cols); Tensor out = be.allocate(tokens, heads * d)) {
          be.attention(in, qCol, kCol, vCol, kvOf, d, offsets, causal, scale, out);
          assertClose(be.download(out), ref, be == cpu ? "cpu" : "generic");
        }
      }
    }
  }

  @ParameterizedTest
  @ValueSource(booleans = {true, false})
  void rmsNormAndSwigluMatchFloat64(boolean useGeneric) {
    int rows = 7;
    int n = 37;
    float[] x = rnd.floats(rows * 2 * n, 2);
    float[] g = rnd.floats(n, 1);
    double[][] rms = new double[rows][n];
    double[][] glu = new double[rows][n];
    for (int r = 0; r < rows; r++) {
      double ss = 0;
      for (int c = 0; c < n; c++) {
        ss += (double) x[r * 2 * n + c] * x[r * 2 * n + c];
      }
      for (int c = 0; c < n; c++) {
        rms[r][c] = x[r * 2 * n + c] / Math.sqrt(ss / n + 1e-6) * g[c];
        double a = x[r * 2 * n + c];
        glu[r][c] = a / (1 + Math.exp(-a)) * x[r * 2 * n + n + c];
      }
    }
    try (CpuBackend cpu = new CpuBackend()) {
      Backend be = useGeneric ? generic(cpu) : cpu;
      try (Tensor gu = be.upload(x, rows, 2 * n); Tensor out = be.allocate(rows, n); Tensor gamma = be.upload(g, 1, n);
          Tensor first = be.allocate(rows, n)) {
        be.swiglu(gu, out);
        assertClose(be.download(out), glu, "swiglu");
        be.copyBlock(gu, 0, 0, first, 0, 0, rows, n);
        be.rmsNorm(first, gamma, 1e-6f);
        assertClose(be.download(first), rms, "rms_norm");
      }
    }
  }

  static void assertClose(float[] got, double[][] ref, String what) {
    double err = 0;
    double max = 0;
    int cols = ref[0].length;
    assertThat(got).hasSize(ref.length * cols);
    for (int r = 0; r < ref.length; r++) {
      for (int c = 0; c < cols; c++) {
        err = Math.max(err, Math.abs(got[r * cols + c] - ref[r][c]));
        max = Math.max(max, Math.abs(ref[r][c]));
      }
    }
    assertThat(err / max).as(what).isLessThanOrEqualTo(1e-5);
  }
}
