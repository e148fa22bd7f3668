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
import org.sparktp.tensor.HalfFloats;
import org.sparktp.backend.Tensor;

/**
 * The int8 weight-only linear ({@code spark.tp.dtype=int8-wo}; W8A8 is {@link W8A8LinearTest}) against float64 references written here:
 * <ul>
 *   <li>the <b>kernel</b>: against {@code act(x (q s)^T + b)} with {@code q, s} quantized by this test's own
 *   code (symmetric, per output row, {@code s = max|w| / 127}, {@code q = rint(w / s)}): within 1e-5 of the
 *   largest output (f32 activations and math), 2e-2 where the kernel takes bf16 activations (AMX);</li>
 *   <li>the <b>accuracy</b>: against the unquantized weights, Gaussian weights and inputs: within 3e-2 of the
 *   largest output (measured here about 1e-2 for K = 512; docs/precision.md quotes it).</li>
 * </ul>
 */
class Int8LinearTest {
  private CpuBackend be;

  @BeforeEach
  void open() {
    be = new CpuBackend(1, "auto", 16);
  }

  @AfterEach
  void close() {
    be.close(); // fails on a leaked tensor or oneDNN handle
  }

  /** The test's own quantizer: the rows of {@code w [n, k]} replaced by {@code q * s}, in float64. */
  static double[] dequantized(float[] w, int n, int k) {
    double[] d = new double[n * k];
    for (int r = 0; r < n; r++) {
      float amax = 0;
      for (int i = 0; i < k; i++) {
        amax = Math.max(amax, Math.abs(w[r * k + i]));
      }
      float s = amax / 127f;
      for (int i = 0; i < k; i++) {
        double q = s == 0 ? 0 : Math.max(-127, Math.min(127, Math.rint(w[r * k + i] / s)));
        d[r * k + i] = q * s;
      }
    }
    return d;
  }

  /** {@code act(x w^T + b)} in float64; softmax over each row. */
  static double[] reference(float[] x, double[] w, float[] b, int m, int k, int n, Activation a) {
    double[] ref = new double[m * n];
    for (int r = 0; r < m; r++) {
      double mx = Double.NEGATIVE_INFINITY;
      for (int c = 0; c < n; c++) {
        double s = b == null ? 0 : b[c];
        for (int i = 0; i < k; i++) {
          s += (double) x[r * k + i] * w[c * k + i];
        }
        ref[r * n + c] = a == Activation.SOFTMAX ? s : DnnlLinearTest.act(a, s);
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
    return ref;
  }

  static double relError(float[] got, double[] ref) {
    assertThat(got).hasSize(ref.length);
    double maxRef = 0;
    double maxErr = 0;
    for (int i = 0; i < ref.length; i++) {
      maxRef = Math.max(maxRef, Math.abs(ref[i]));
      maxErr = Math.max(maxErr, Math.abs(got[i] - ref[i]));
    }
    return maxErr / maxRef;
  }

  static double[] widen(float[] w) {
    double[] d = new double[w.length];
    for (int i = 0; i < w.length; i++) {
      d[i] = w[i];
    }
    return d;
  }

  private Tensor weight(float[] w, int n, int k, DType dtype) {
    Tensor f = be.upload(w, n, k);
    if (dtype == DType.F32) {
      return f;
    }
    try (f) {
      return be.convert(f, dtype);
    }
  }

  @ParameterizedTest(name = "{0} weights quantized, {1}, {2} rows")
  @CsvSource({"F32, IDENTITY, 1", "F32, GELU, 7", "F32, GELU_TANH, 16", "F32, RELU, 33", "F32, SILU, 2",
      "F32, TANH, 5", "F32, SIGMOID, 9", "F32, SOFTMAX, 4", "BF16, GELU, 13", "F16, SILU, 3"})
  void theKernelMatchesTheDequantizedFloat64Reference(DType dtype, Activation a, int m) {
    int n = 37;
    int k = 50;
    Random rnd = new Random(dtype.ordinal() * 131L + a.ordinal() * 17L + m);
    float[] x = DnnlLinearTest.gauss(rnd, m * k, 1);
    float[] w = DnnlLinearTest.gauss(rnd, n * k, 1 / Math.sqrt(k));
    float[] b = DnnlLinearTest.gauss(rnd, n, 0.5);
    float[] stored = w.clone(); // the weight as the kernel receives it (rounded to bf16/f16 here, by the test)
    for (int i = 0; i < stored.length; i++) {
      stored[i] = dtype == DType.BF16 ? HalfFloats.bf16ToFloat(HalfFloats.floatToBf16(w[i]))
          : dtype == DType.F16 ? HalfFloats.halfToFloat(HalfFloats.floatToHalf(w[i])) : w[i];
    }
    double[] ref = reference(x, dequantized(stored, n, k), b, m, k, n, a);
    Backend.PreparedLinear lin = be.prepareLinear(weight(w, n, k, dtype), be.upload(b, 1, n), a, DType.I8_WO);
    try (Tensor xt = be.upload(x, m, k); Tensor y = lin.apply(xt, true)) {
      assertThat(lin.kernel()).startsWith("onednn ").contains("int8").doesNotContain("ref:");
      assertThat(lin.bytes()).as("s8 weights, one f32 scale per row, f32 bias")
          .isGreaterThanOrEqualTo((long) n * k + 4L * n + 4L * n).isLessThan((long) n * k * 4); // packing pads small shapes
      double tol = lin.kernel().contains("bf16 activations") ? 2e-2 : 1e-5;
      assertThat(relError(be.download(y), ref)).as("int8 kernel vs float64 of q * s, %s", lin.kernel())
          .isLessThanOrEqualTo(tol);
      try (Tensor y2 = lin.apply(xt, false)) {
        assertThat(relError(be.download(y2), reference(x, dequantized(stored, n, k), null, m, k, n, a)))
            .as("without bias").isLessThanOrEqualTo(tol);
      }
    } finally {
      lin.close();
    }
    assertThat(be.liveNativeHandles()).isZero();
    assertThat(be.liveTensors()).isZero();
  }

  /** A reduction longer than oneDNN's K blocks (512 here): the f32-activation int8 kernel stays exact to q * s. */
  @Test
  void aLongReductionMatchesTheDequantizedReference() {
    int m = 3;
    int n = 40;
    int k = 1100;
    Random rnd = new Random(1100);
    float[] x = DnnlLinearTest.gauss(rnd, m * k, 1);
    float[] w = DnnlLinearTest.gauss(rnd, n * k, 1 / Math.sqrt(k));
    float[] b = DnnlLinearTest.gauss(rnd, n, 0.5);
    Backend.PreparedLinear lin = be.prepareLinear(be.upload(w, n, k), be.upload(b, 1, n), Activation.GELU, DType.I8_WO);
    try (Tensor xt = be.upload(x, m, k); Tensor y = lin.apply(xt, true)) {
      double tol = lin.kernel().contains("bf16 activations") ? 2e-2 : 1e-5;
      assertThat(relError(be.download(y), reference(x, dequantized(w, n, k), b, m, k, n, Activation.GELU)))
          .as(lin.kernel()).isLessThanOrEqualTo(tol);
    } finally {
      lin.close();
    }
  }

  /** The path AMX CPUs take (activations converted to bf16 first, bf16 math on the s8 weights), forced here. */
  @ParameterizedTest(name = "bf16 activations, {0}, {1} rows")
  @CsvSource({"GELU, 11", "IDENTITY, 1"})
  void theBf16ActivationPathMatchesTheDequantizedReference(Activation a, int m) {
    org.junit.jupiter.api.Assumptions.assumeTrue(CpuBackend.hasNativeBf16(), "needs AVX512-BF16 or AMX");
    DnnlLinear.forceConvert = true;
    try {
      theKernelMatchesTheDequantizedFloat64Reference(DType.F32, a, m);
      Backend.PreparedLinear lin = be.prepareLinear(be.upload(new float[] {1, 2, 3, 4}, 2, 2), null, a, DType.I8_WO);
      assertThat(lin.kernel()).endsWith("(int8 weights, bf16 activations)");
      lin.close();
    } finally {
      DnnlLinear.forceConvert = null;
    }
  }

  @Test
  void theErrorAgainstTheUnquantizedWeightsIsAboutOnePercent() {
    int m = 33;
    int n = 128; // packing pads N to its block (96 would hold 128 rows)
    int k = 512;
    Random rnd = new Random(42);
    float[] x = DnnlLinearTest.gauss(rnd, m * k, 1);
    float[] w = DnnlLinearTest.gauss(rnd, n * k, 1 / Math.sqrt(k));
    float[] b = DnnlLinearTest.gauss(rnd, n, 0.1);
    double[] exact = reference(x, widen(w), b, m, k, n, Activation.IDENTITY);
    Backend.PreparedLinear lin = be.prepareLinear(be.upload(w, n, k), be.upload(b, 1, n), Activation.IDENTITY,
        DType.I8_WO);
    try (Tensor xt = be.upload(x, m, k); Tensor y = lin.apply(xt, true)) {
      double e = relError(be.download(y), exact);
      System.out.printf("int8 weight-only vs unquantized float64 (M %d, K %d, N %d): relative error %.2e (%s)%n", m,
          k, n, e, lin.kernel());
      assertThat(e).as("quantization error, max |y - ref| / max |ref|").isLessThanOrEqualTo(3e-2)
          .isGreaterThan(1e-4); // it is quantized: not the f32 kernel
      assertThat(lin.bytes()).as("a quarter of f32, plus scales and bias").isEqualTo((long) n * k + 4L * n + 4L * n);
    } finally {
      lin.close();
    }
  }

  @Test
  void withoutOneDnnTheWeightsAreDequantizedToF32WithTheSameNumerics() {
    try (CpuBackend blas = new CpuBackend(1, "openblas", 16)) {
      int m = 5;
      int n = 21;
      int k = 30;
      Random rnd = new Random(3);
      float[] x = DnnlLinearTest.gauss(rnd, m * k, 1);
      float[] w = DnnlLinearTest.gauss(rnd, n * k, 0.2);
      float[] b = DnnlLinearTest.gauss(rnd, n, 0.5);
      assertThat(blas.kernel(DType.I8_WO)).isEqualTo("openblas (int8 weights dequantized to f32)");
      Backend.PreparedLinear lin = blas.prepareLinear(blas.upload(w, n, k), blas.upload(b, 1, n), Activation.GELU,
          DType.I8_WO);
      try (Tensor xt = blas.upload(x, m, k); Tensor y = lin.apply(xt, true)) {
        assertThat(lin.kernel()).isEqualTo("openblas sgemm (int8 weights dequantized to f32)");
        assertThat(relError(blas.download(y), reference(x, dequantized(w, n, k), b, m, k, n, Activation.GELU)))
            .isLessThanOrEqualTo(1e-5);
      } finally {
        lin.close();
      }
    }
  }

  @Test
  void aZeroRowAndANonFiniteWeightAreHandled() {
    int n = 3;
    int k = 4;
    float[] w = {0, 0, 0, 0, 1, -2, 3, -4, 0.5f, 0.25f, -1, 2};
    float[] x = {1, 2, 3, 4};
    Backend.PreparedLinear lin = be.prepareLinear(be.upload(w, n, k), null, Activation.IDENTITY, DType.I8_WO);
    try (Tensor xt = be.upload(x, 1, k); Tensor y = lin.apply(xt, false)) {
      assertThat(relError(be.download(y), reference(x, dequantized(w, n, k), null, 1, k, n, Activation.IDENTITY)))
          .isLessThanOrEqualTo(1e-6);
      assertThat(be.download(y)[0]).as("a row of zeros gives 0").isZero();
    } finally {
      lin.close();
    }
    w[6] = Float.NaN;
    Tensor bias = be.upload(new float[n], 1, n);
    assertThatThrownBy(() -> be.prepareLinear(be.upload(w, n, k), bias, Activation.IDENTITY, DType.I8_WO))
        .hasMessage("The [3, 4] weight's row 1 holds NaN at column 2: int8 quantization needs finite weights; use "
            + "spark.tp.dtype=f32 or bf16 for this model");
    assertThat(bias.isClosed()).as("the failed linear closed what it was given").isTrue();
    assertThat(be.liveTensors()).isZero();
    assertThat(be.liveNativeHandles()).isZero();
  }

  @Test
  void kernelNamesAndParsing() {
    assertThat(be.kernel(DType.I8_WO)).startsWith("onednn ").contains("int8 weight-only (brg_matmul:");
    assertThat(be.kernel(DType.I8)).startsWith("onednn ").contains("int8 W8A8 (brg_matmul:").doesNotContain("ref");
    assertThat(DType.parseStorage("INT8", "x")).isEqualTo(DType.I8);
    assertThat(DType.parseStorage("int8-wo", "x")).isEqualTo(DType.I8_WO);
    assertThat(DType.I8.id()).isEqualTo("int8");
    assertThat(DType.I8_WO.id()).isEqualTo("int8-wo");
    assertThat(DType.lookup("I8_WO")).as("not a safetensors type").isNull();
    assertThat(DType.lookup("I8")).isEqualTo(DType.I8);
    assertThat(org.sparktp.backend.Precision.resolve("auto", DType.BF16, true, "x")).as("auto never picks int8")
        .isEqualTo(DType.BF16);
    assertThatThrownBy(() -> DType.parseStorage("int4", "spark.tp.dtype"))
        .hasMessage("Unknown dtype 'int4' (spark.tp.dtype): use auto, f32, bf16, f16, int8 (W8A8) or int8-wo (int8 "
            + "weight-only)");
  }
}
