package org.sparktp.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * Every op of the CUDA backend against a float64 reference written here and against the CPU backend, on fresh
 * random data, with outputs NaN-poisoned first. Needs a GPU: tagged {@code gpu} (run by {@code mvn -Pgpu test} /
 * {@code bin/spark-tp gpu-check}) and skipped where the CUDA backend is unavailable.
 */
@Tag("gpu")
class CudaBackendGpuTest {
  private CudaBackend gpu;
  private CpuBackend cpu;
  private final Random rnd = new Random(20261201L);

  @BeforeEach
  void setUp() {
    CudaProbe.Status st = CudaProbe.status();
    assumeTrue(st.available(), () -> "no GPU: " + st.backendReason());
    gpu = new CudaBackend(Map.of(), 0);
    cpu = new CpuBackend();
  }

  @AfterEach
  void tearDown() {
    if (gpu != null) {
      gpu.close(); // fails on a leaked device tensor
      cpu.close();
    }
  }

  private float[] random(int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  private static float[] nans(int n) {
    float[] a = new float[n];
    Arrays.fill(a, Float.NaN);
    return a;
  }

  private Tensor poisoned(int rows, int cols) {
    return gpu.upload(nans(rows * cols), 0, rows, cols);
  }

  /** ||got - want|| / ||want||. */
  private static double relErr(float[] got, double[] want) {
    double num = 0;
    double den = 0;
    for (int i = 0; i < want.length; i++) {
      double d = got[i] - want[i];
      num += d * d;
      den += want[i] * want[i];
    }
    return Math.sqrt(num / Math.max(den, 1e-300));
  }

  private static double[] toDouble(float[] a) {
    double[] d = new double[a.length];
    for (int i = 0; i < a.length; i++) {
      d[i] = a[i];
    }
    return d;
  }

  private static double act(Activation a, double x) {
    return switch (a) {
      case GELU -> 0.5 * x * (1 + erf(x / Math.sqrt(2)));
      case GELU_TANH -> 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
      case RELU -> Math.max(0, x);
      case SILU -> x / (1 + Math.exp(-x));
      case TANH -> Math.tanh(x);
      case SIGMOID -> 1 / (1 + Math.exp(-x));
      case IDENTITY -> x;
      case SOFTMAX -> throw new IllegalArgumentException();
    };
  }

  /** erf to ~1e-15 (series / continued fraction), independent of the code under test. */
  static double erf(double x) {
    double ax = Math.abs(x);
    double r;
    if (ax < 2.5) {
      double sum = 0;
      double term = ax;
      for (int n = 0; n < 80; n++) {
        sum += term / (2 * n + 1);
        term *= -ax * ax / (n + 1);
      }
      r = 2 / Math.sqrt(Math.PI) * sum;
    } else {
      double f = 0;
      for (int n = 60; n >= 1; n--) {
        f = n / 2.0 / (ax + f);
      }
      r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f);
    }
    return Math.copySign(r, x);
  }

  private double[] gemmRef(boolean ta, boolean tb, double alpha, float[] a, float[] b, double beta, float[] c,
      int m, int n, int k) {
    double[] out = new double[m * n];
    for (int i = 0; i < m; i++) {
      for (int j = 0; j < n; j++) {
        double s = 0;
        for (int p = 0; p < k; p++) {
          s += (double) (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
        }
        out[i * n + j] = alpha * s + beta * c[i * n + j];
      }
    }
    return out;
  }

  @Test
  void uploadDownloadWriteZeroViewsAndCopyBlockAreExact() {
    float[] a = random(7 * 5);
    try (Tensor t = gpu.upload(a, 0, 7, 5)) {
      assertThat(gpu.download(t)).containsExactly(a);
      float[] row = random(5);
      gpu.write(t, 3, row, 0, 5);
      float[] want = a.clone();
      System.arraycopy(row, 0, want, 15, 5);
      assertThat(gpu.download(t)).containsExactly(want);
      assertThat(gpu.download(t.rows(2, 3))).containsExactly(Arrays.copyOfRange(want, 10, 25));
      assertThat(gpu.download(t.reshape(5, 7))).containsExactly(want);
      try (Tensor d = poisoned(4, 6)) {
        gpu.zero(d);
        gpu.copyBlock(t, 1, 2, d, 2, 1, 2, 3);
        float[] got = gpu.download(d);
        for (int r = 0; r < 4; r++) {
          for (int c = 0; c < 6; c++) {
            boolean in = r >= 2 && c >= 1 && c < 4;
            assertThat(got[r * 6 + c]).isEqualTo(in ? want[(r - 1) * 5 + (c + 1)] : 0f);
          }
        }
      }
    }
    // a large upload crosses several staging chunks
    float[] big = random(3 * 1024 * 1024 + 17);
    try (Tensor t = gpu.upload(big, 0, 1, big.length)) {
      assertThat(gpu.download(t)).containsExactly(big);
    }
    assertThat(gpu.liveTensors()).isZero();
  }

  @Test
  void gemmInEveryTransposeMatchesFloat64AndTheCpu() {
    int m = 67;
    int n = 45;
    int k = 129;
    for (boolean ta : new boolean[] {false, true}) {
      for (boolean tb : new boolean[] {false, true}) {
        float[] a = random(m * k);
        float[] b = random(k * n);
        float[] c = random(m * n);
        double[] want = gemmRef(ta, tb, 0.75, a, b, -0.5, c, m, n, k);
        try (Tensor ga = gpu.upload(a, 0, ta ? k : m, ta ? m : k); Tensor gb = gpu.upload(b, 0, tb ? n : k, tb ? k : n);
            Tensor gc = gpu.upload(c, 0, m, n);
            Tensor ca = cpu.upload(a, 0, ta ? k : m, ta ? m : k); Tensor cb = cpu.upload(b, 0, tb ? n : k, tb ? k : n);
            Tensor cc = cpu.upload(c, 0, m, n)) {
          gpu.gemm(ta, tb, 0.75f, ga, gb, -0.5f, gc);
          cpu.gemm(ta, tb, 0.75f, ca, cb, -0.5f, cc);
          assertThat(relErr(gpu.download(gc), want)).as("transA=%s transB=%s", ta, tb).isLessThan(1e-5);
          assertThat(relErr(gpu.download(gc), toDouble(cpu.download(cc)))).isLessThan(1e-5);
        }
      }
    }
  }

  private static float bf16(float f) {
    int u = Float.floatToRawIntBits(f);
    u = (u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000;
    return Float.intBitsToFloat(u);
  }

  @Test
  void castsRoundToNearestEven() {
    float[] a = random(1000);
    a[0] = 1.00390625f; // halfway between two bf16 values: rounds to even (1.0)
    try (Tensor f = gpu.upload(a, 0, 10, 100); CudaTensor b = gpu.cast(f, DType.BF16);
        CudaTensor h = gpu.cast(f, DType.F16)) {
      assertThat(b.bytes()).isEqualTo(2000);
      float[] gb = gpu.download(b);
      float[] gh = gpu.download(h);
      assertThat(gb[0]).isEqualTo(1.0f);
      for (int i = 0; i < a.length; i++) {
        assertThat(gb[i]).isEqualTo(bf16(a[i]));
        assertThat(gh[i]).isEqualTo(org.sparktp.tensor.HalfFloats.halfToFloat(
            org.sparktp.tensor.HalfFloats.floatToHalf(a[i]) & 0xffff));
      }
    }
  }

  @Test
  void linearWithEveryEpilogueAndStorageTypeMatchesFloat64() {
    int rows = 96;
    int in = 256;
    int out = 160;
    for (DType dt : CudaTypes.STORAGE) {
      for (Activation act : new Activation[] {Activation.IDENTITY, Activation.GELU_TANH, Activation.GELU,
          Activation.RELU, Activation.SILU}) {
        float[] x = random(rows * in);
        float[] w = random(out * in);
        float[] bias = random(out);
        try (CudaTensor gx = gpu.upload(x, 0, rows, in, dt); CudaTensor gw = gpu.upload(w, 0, out, in, dt);
            Tensor gbias = gpu.upload(bias, 0, 1, out);
            CudaTensor y = (CudaTensor) poisoned(rows, out)) {
          float[] xr = gpu.download(gx); // the values the GPU sees (rounded to dt)
          float[] wr = gpu.download(gw);
          double[] want = new double[rows * out];
          for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
              double s = bias[o];
              for (int i = 0; i < in; i++) {
                s += (double) xr[r * in + i] * wr[o * in + i];
              }
              want[r * out + o] = act(act, s);
            }
          }
          gpu.linear(gx, gw, gbias, act, y);
          double tol = dt == DType.F32 ? 1e-5 : 1e-5 * Math.sqrt(in) * 10;
          assertThat(relErr(gpu.download(y), want)).as("%s %s f32 out", dt, act).isLessThan(tol);
          if (dt != DType.F32) {
            try (CudaTensor y16 = gpu.empty(rows, out, dt)) {
              gpu.linear(gx, gw, gbias, act, y16);
              assertThat(relErr(gpu.download(y16), want)).as("%s %s %s out", dt, act, dt)
                  .isLessThan(dt == DType.BF16 ? 1e-2 : 2e-3);
            }
          }
        }
      }
    }
  }

  @Test
  void elementwiseOpsMatchFloat64AndTheCpu() {
    int rows = 33;
    int cols = 300;
    for (Activation act : Activation.values()) {
      float[] x = random(rows * cols);
      float[] bias = random(cols);
      double[] want = new double[rows * cols];
      for (int r = 0; r < rows; r++) {
        if (act == Activation.SOFTMAX) {
          double max = Double.NEGATIVE_INFINITY;
          for (int c = 0; c < cols; c++) {
            max = Math.max(max, (double) x[r * cols + c] + bias[c]);
          }
          double sum = 0;
          for (int c = 0; c < cols; c++) {
            sum += Math.exp(x[r * cols + c] + (double) bias[c] - max);
          }
          for (int c = 0; c < cols; c++) {
            want[r * cols + c] = Math.exp(x[r * cols + c] + (double) bias[c] - max) / sum;
          }
        } else {
          for (int c = 0; c < cols; c++) {
            want[r * cols + c] = act(act, (double) x[r * cols + c] + bias[c]);
          }
        }
      }
      try (Tensor g = gpu.upload(x, 0, rows, cols); Tensor gb = gpu.upload(bias, 0, 1, cols);
          Tensor c = cpu.upload(x, 0, rows, cols); Tensor cb = cpu.upload(bias, 0, 1, cols)) {
        gpu.biasActivate(g, gb, act);
        cpu.biasActivate(c, cb, act);
        assertThat(relErr(gpu.download(g), want)).as("%s", act).isLessThan(1e-5);
        assertThat(relErr(gpu.download(g), toDouble(cpu.download(c)))).as("%s vs cpu", act).isLessThan(1e-5);
      }
    }
    float[] a = random(rows * cols);
    float[] b = random(rows * cols);
    try (Tensor ga = gpu.upload(a, 0, rows, cols); Tensor gb = gpu.upload(b, 0, rows, cols)) {
      gpu.add(ga, gb);
      float[] got = gpu.download(ga);
      for (int i = 0; i < a.length; i++) {
        assertThat(got[i]).isEqualTo(a[i] + b[i]);
      }
    }
  }

  @Test
  void layerNormRmsNormRopeAndCausalSoftmaxMatchFloat64() {
    int rows = 19;
    int cols = 1000;
    float[] x = random(rows * cols);
    float[] g = random(cols);
    float[] b = random(cols);
    double[] ln = org.sparktp.testing.Reference.layerNorm(x, rows, cols, g, b, 1e-5);
    double[] rms = org.sparktp.testing.Reference.rmsNorm(x, rows, cols, g, 1e-6);
    try (Tensor t = gpu.upload(x, 0, rows, cols); Tensor tg = gpu.upload(g, 0, 1, cols);
        Tensor tb = gpu.upload(b, 0, 1, cols); Tensor c = cpu.upload(x, 0, rows, cols);
        Tensor cg = cpu.upload(g, 0, 1, cols); Tensor cb = cpu.upload(b, 0, 1, cols)) {
      gpu.layerNorm(t, tg, tb, 1e-5f);
      cpu.layerNorm(c, cg, cb, 1e-5f);
      assertThat(relErr(gpu.download(t), ln)).isLessThan(1e-5);
      assertThat(relErr(gpu.download(t), toDouble(cpu.download(c)))).isLessThan(1e-5);
    }
    try (Tensor t = gpu.upload(x, 0, rows, cols); Tensor tg = gpu.upload(g, 0, 1, cols)) {
      gpu.rmsNorm(t, tg, 1e-6f);
      assertThat(relErr(gpu.download(t), rms)).isLessThan(1e-5);
    }
    // RoPE, rotate-half: 3 heads of 8
    int heads = 3;
    int hd = 8;
    float[] q = random(5 * heads * hd);
    int[] pos = {0, 1, 7, 100, 4095};
    double[] rq = new double[q.length];
    for (int r = 0; r < 5; r++) {
      for (int h = 0; h < heads; h++) {
        for (int i = 0; i < hd / 2; i++) {
          double ang = pos[r] * Math.pow(10000.0, -2.0 * i / hd);
          int base = r * heads * hd + h * hd;
          double a = q[base + i];
          double bb = q[base + i + hd / 2];
          rq[base + i] = a * Math.cos(ang) - bb * Math.sin(ang);
          rq[base + i + hd / 2] = bb * Math.cos(ang) + a * Math.sin(ang);
        }
      }
    }
    float[] invFreq = new float[hd / 2];
    for (int i = 0; i < hd / 2; i++) {
      invFreq[i] = (float) Math.pow(10000.0, -2.0 * i / hd);
    }
    try (Tensor t = gpu.upload(q, 0, 5, heads * hd)) {
      gpu.rope(t, 0, heads, hd, pos, invFreq); // Backend.rope, not a host round trip
      assertThat(relErr(gpu.download(t), rq)).isLessThan(1e-5);
    }
    // causal attention softmax: 2 heads x 3 queries against 5 keys (2 cached), scale 0.125
    float[] s = random(6 * 5);
    double[] rs = new double[s.length];
    for (int r = 0; r < 6; r++) {
      int qi = r % 3;
      int limit = qi + 2 + 1;
      double max = Double.NEGATIVE_INFINITY;
      for (int j = 0; j < limit; j++) {
        max = Math.max(max, 0.125 * s[r * 5 + j]);
      }
      double sum = 0;
      for (int j = 0; j < limit; j++) {
        sum += Math.exp(0.125 * s[r * 5 + j] - max);
      }
      for (int j = 0; j < 5; j++) {
        rs[r * 5 + j] = j < limit ? Math.exp(0.125 * s[r * 5 + j] - max) / sum : 0;
      }
    }
    try (Tensor t = gpu.upload(s, 0, 6, 5)) {
      gpu.attentionSoftmax(t, 0.125f, true, 3);
      assertThat(relErr(gpu.download(t), rs)).isLessThan(1e-6);
    }
  }

  @Test
  void embeddingAndBagsOverAShardMatchTheCpu() {
    int rows = 10;
    int dim = 17;
    float[] table = random(rows * dim);
    int[] ids = {12, 3, 15, 10, 19, 20, 11};
    int[] offsets = {0, 2, 2, 5, 7};
    try (Tensor gt = gpu.upload(table, 0, rows, dim); Tensor ct = cpu.upload(table, 0, rows, dim);
        Tensor go = poisoned(8, dim); Tensor co = cpu.allocate(8, dim)) {
      gpu.embedding(gt, 10, ids, go);
      cpu.embedding(ct, 10, ids, co);
      assertThat(gpu.download(go)).containsExactly(cpu.download(co));
      for (boolean mean : new boolean[] {false, true}) {
        gpu.embeddingBag(gt, 10, ids, offsets, mean, go);
        cpu.embeddingBag(ct, 10, ids, offsets, mean, co);
        assertThat(relErr(gpu.download(go), toDouble(cpu.download(co)))).isLessThan(1e-6);
      }
    }
  }

  @Test
  void misuseFailsClearlyAndLeaksAreCounted() {
    try (Tensor a = gpu.upload(random(6), 0, 2, 3); Tensor b = gpu.upload(random(6), 0, 2, 3);
        Tensor c = gpu.allocate(2, 2)) {
      assertThatThrownBy(() -> gpu.gemm(false, false, 1f, a, b, 0f, c))
          .hasMessage("GEMM shapes do not agree: op(A) is [2, 3], op(B) is [2, 3], C is [2, 2]");
      Tensor onCpu = cpu.allocate(2, 3);
      assertThatThrownBy(() -> gpu.add(a, onCpu)).hasMessage("The CUDA backend got a tensor of another backend (cpu)");
      onCpu.close();
    }
    CudaBackend other = new CudaBackend(Map.of(), 0);
    other.allocate(3, 3);
    assertThatThrownBy(other::close)
        .hasMessage("CUDA backend closed with 1 live tensor(s) holding 36 bytes: every tensor must be closed by its"
            + " owner (a leak)");
  }
}
