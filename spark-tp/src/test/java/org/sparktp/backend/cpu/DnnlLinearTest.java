package org.sparktp.backend.cpu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * The oneDNN linear against a float64 reference written here: f32 weights within 1e-5 of the largest
 * output, bf16/f16 weights (and the f32 activation rounded to bf16/f16 inside the kernel) within 2e-2.
 */
class DnnlLinearTest {
  private CpuBackend be;

  @BeforeEach
  void open() {
    be = new CpuBackend(1, "onednn", 16);
  }

  @AfterEach
  void close() {
    be.close(); // fails on a leaked tensor or oneDNN handle
  }

  static double act(Activation a, double v) {
    return switch (a) {
      case IDENTITY -> v;
      case RELU -> Math.max(0, v);
      case GELU -> 0.5 * v * (1 + erf(v / Math.sqrt(2)));
      case GELU_TANH -> 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
      case SILU -> v / (1 + Math.exp(-v));
      case TANH -> Math.tanh(v);
      case SIGMOID -> 1 / (1 + Math.exp(-v));
      default -> throw new IllegalArgumentException();
    };
  }

  /** erf by its Taylor series (|x| < 3) or the continued-fraction tail; enough for 1e-12 here. */
  static double erf(double x) {
    double ax = Math.abs(x);
    if (ax > 5) {
      return Math.signum(x);
    }
    double sum = 0;
    double term = ax;
    for (int n = 0; n < 200; n++) {
      sum += term / (2 * n + 1);
      term *= -ax * ax / (n + 1);
    }
    return Math.signum(x) * 2 / Math.sqrt(Math.PI) * sum;
  }

  @ParameterizedTest(name = "{0} weights, {1}, {2} rows")
  @CsvSource({"F32, GELU, 7", "F32, IDENTITY, 1", "BF16, GELU, 7", "BF16, GELU_TANH, 16", "BF16, RELU, 33",
      "BF16, SILU, 1", "F16, SILU, 7", "F16, TANH, 16", "BF16, SIGMOID, 5", "BF16, SOFTMAX, 4"})
  void matchesTheFloat64Reference(DType dtype, Activation a, int m) {
    int n = 37;
    int k = 50;
    Random rnd = new Random(dtype.ordinal() * 31L + a.ordinal() * 7L + m);
    float[] x = gauss(rnd, m * k, 1);
    float[] w = gauss(rnd, n * k, 1 / Math.sqrt(k));
    float[] b = gauss(rnd, n, 0.5);
    double[] ref = new double[m * n];
    for (int r = 0; r < m; r++) {
      double mx = Double.NEGATIVE_INFINITY;
      for (int c = 0; c < n; c++) {
        double s = b[c];
        for (int i = 0; i < k; i++) {
          s += (double) x[r * k + i] * w[c * k + i];
        }
        ref[r * n + c] = a == Activation.SOFTMAX ? s : act(a, s);
        mx = Math.max(mx, s);
      }
      if (a == Activation.SOFTMAX) {
        double z = 0;
        for (int c = 0; c < n; c++) {
          z += Math.exp(ref[r * n + c] - mx);
        }
        for (int c = 0; c < n; c++) {
          ref[r * n + c] = Math.exp(ref[r * n + c] - mx) / z;
        }
      }
    }
    Tensor wf = be.upload(w, n, k);
    Tensor wt = be.convert(wf, dtype);
    wf.close();
    Backend.PreparedLinear lin = be.prepareLinear(wt, be.upload(b, 1, n), a);
    try (Tensor xt = be.upload(x, m, k); Tensor y = lin.apply(xt, true)) {
      if (!Dnnl.supports(dtype)) {
        // e.g. f16 without AVX512-FP16 (ONEDNN_MAX_CPU_ISA=AVX512_CORE): widened to f32, on OpenBLAS
        assertThat(lin.kernel()).isEqualTo("openblas sgemm");
      } else {
        assertThat(lin.kernel()).startsWith("onednn ").doesNotContain("ref:");
      }
      if (DnnlLinear.forceConvert != null && Dnnl.supports(dtype)) {
        assertThat(lin.kernel()).endsWith("(activations converted first)");
      }
      assertThat(lin.bytes()).isGreaterThanOrEqualTo((long) n * k * (Dnnl.supports(dtype) ? dtype.size() : 4))
          .isLessThan((long) n * k * 4 + 4096 * 4);
      float[] got = be.download(y);
      double maxRef = 0;
      double maxErr = 0;
      for (int i = 0; i < ref.length; i++) {
        maxRef = Math.max(maxRef, Math.abs(ref[i]));
        maxErr = Math.max(maxErr, Math.abs(got[i] - ref[i]));
      }
      double tol = dtype == DType.F32 ? 1e-5 : 2e-2;
      assertThat(maxErr / maxRef).as("max |y - ref| / max |ref| for %s weights", dtype).isLessThanOrEqualTo(tol);
    } finally {
      lin.close();
    }
    assertThat(be.liveNativeHandles()).isZero();
    assertThat(be.liveTensors()).isZero();
  }

  /**
   * Reductions longer than 512: oneDNN 3.11's in-kernel f32-to-bf16/f16 conversion ({@code fpmath_mode} with f32
   * activations) gave relative errors of 0.4 to 1.3 there, so bf16/f16 weights take the reorder path; within 2e-2.
   */
  @ParameterizedTest(name = "{0} weights, K {1}")
  @CsvSource({"BF16, 1100", "F16, 1100", "BF16, 4096"})
  void longReductionsStayCorrect(DType dtype, int k) {
    int m = 3;
    int n = 40;
    Random rnd = new Random(k + dtype.ordinal());
    float[] x = gauss(rnd, m * k, 1);
    float[] w = gauss(rnd, n * k, 1 / Math.sqrt(k));
    float[] b = gauss(rnd, n, 0.5);
    Tensor wf = be.upload(w, n, k);
    Tensor wt = be.convert(wf, dtype);
    wf.close();
    Backend.PreparedLinear lin = be.prepareLinear(wt, be.upload(b, 1, n), Activation.IDENTITY);
    try (Tensor xt = be.upload(x, m, k); Tensor y = lin.apply(xt, true)) {
      float[] got = be.download(y);
      double maxRef = 0;
      double maxErr = 0;
      for (int r = 0; r < m; r++) {
        for (int c = 0; c < n; c++) {
          double s = b[c];
          for (int i = 0; i < k; i++) {
            s += (double) x[r * k + i] * w[c * k + i];
          }
          maxRef = Math.max(maxRef, Math.abs(s));
          maxErr = Math.max(maxErr, Math.abs(got[r * n + c] - s));
        }
      }
      assertThat(maxErr / maxRef).as("%s weights, K %d, %s", dtype, k, lin.kernel()).isLessThanOrEqualTo(2e-2);
    } finally {
      lin.close();
    }
  }

  @ParameterizedTest(name = "{0} weights, activations converted by a reorder first")
  @CsvSource({"BF16", "F16"})
  void theConversionPathMatchesTheReferenceToo(DType dtype) {
    DnnlLinear.forceConvert = true;
    try {
      matchesTheFloat64Reference(dtype, Activation.GELU, 9);
    } finally {
      DnnlLinear.forceConvert = null;
    }
  }

  @Test
  void cachesAtMostEightPrimitivesAndStaysCorrectWithoutBias() {
    int n = 9;
    int k = 12;
    Random rnd = new Random(5);
    float[] w = gauss(rnd, n * k, 0.3);
    Tensor wf = be.upload(w, n, k);
    DnnlLinear lin = (DnnlLinear) be.prepareLinear(be.convert(wf, DType.BF16), null, Activation.IDENTITY);
    wf.close();
    try {
      for (int m = 1; m <= 12; m++) {
        float[] x = gauss(rnd, m * k, 1);
        try (Tensor xt = be.upload(x, m, k); Tensor y = lin.apply(xt, false)) {
          float[] got = be.download(y);
          for (int r = 0; r < m; r++) {
            for (int c = 0; c < n; c++) {
              double s = 0;
              double scale = 0;
              for (int i = 0; i < k; i++) {
                s += (double) x[r * k + i] * w[c * k + i];
                scale += Math.abs((double) x[r * k + i] * w[c * k + i]);
              }
              assertThat(Math.abs(got[r * n + c] - s)).isLessThanOrEqualTo(2e-2 * scale);
            }
          }
        }
        assertThat(lin.cachedPrimitives()).isLessThanOrEqualTo(DnnlLinear.MAX_CACHED);
      }
    } finally {
      lin.close();
    }
    assertThat(be.liveNativeHandles()).isZero();
  }

  /** In the surefire execution with ONEDNN_MAX_CPU_ISA=AVX512_CORE (a CPU without AMX or AVX512-BF16). */
  @Test
  void aCappedInstructionSetIsReportedAndBf16StillRuns() {
    String cap = System.getenv("ONEDNN_MAX_CPU_ISA");
    org.junit.jupiter.api.Assumptions.assumeTrue(cap != null && cap.equalsIgnoreCase("AVX512_CORE"),
        "runs in the onednn-without-amx execution");
    assertThat(CpuBackend.onednnIsa()).isEqualTo("avx512_core");
    assertThat(CpuBackend.hasNativeBf16()).isFalse();
    assertThat(be.kernel(DType.BF16)).isEqualTo("onednn avx512");
    assertThat(org.sparktp.backend.Precision.resolve("auto", DType.BF16, CpuBackend.hasNativeBf16(), "x"))
        .as("auto keeps f32 without native bf16").isEqualTo(DType.F32);
  }

  @Test
  void aLeakedLinearFailsTheBackendsClose() {
    CpuBackend other = new CpuBackend(1, "onednn", 4);
    Tensor f = other.upload(new float[] {1, 2, 3, 4, 5, 6}, 2, 3);
    Tensor w = other.convert(f, DType.BF16);
    f.close();
    Backend.PreparedLinear lin = other.prepareLinear(w, null, Activation.RELU);
    assertThat(other.liveNativeHandles()).isPositive();
    assertThatThrownBy(other::close).isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("live oneDNN handle(s)");
    lin.close();
  }

  @Test
  void badInputsSayWhatIsWrong() {
    Tensor f = be.upload(new float[6], 2, 3);
    Tensor w = be.convert(f, DType.BF16);
    f.close();
    Tensor bias = be.upload(new float[3], 1, 3);
    assertThatThrownBy(() -> be.prepareLinear(w, bias, Activation.GELU))
        .hasMessageContaining("bias must be f32 with 2 elements");
    w.close();
    bias.close();
    assertThatThrownBy(() -> new CpuBackend(1, "mkl", 1)).hasMessage(
        "Unknown CPU GEMM 'mkl' (spark.tp.cpu.gemm): use auto, openblas or onednn");
  }

  static float[] gauss(Random r, int n, double scale) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) (r.nextGaussian() * scale);
    }
    return a;
  }
}
