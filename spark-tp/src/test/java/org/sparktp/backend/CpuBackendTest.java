package org.sparktp.backend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.EnumSource;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.testing.Compare;
import org.sparktp.testing.Rand;
import org.sparktp.testing.Reference;

class CpuBackendTest {
  private CpuBackend be;
  private final Rand rnd = new Rand();

  @BeforeEach
  void open() {
    be = new CpuBackend();
  }

  @AfterEach
  void closeProvesNoLeak() {
    be.close();
  }

  @ParameterizedTest
  @CsvSource({"false,false", "false,true", "true,false", "true,true"})
  void gemmMatchesFloat64ForEveryTransposeCombination(boolean ta, boolean tb) {
    int m = 13;
    int k = 29;
    int n = 7;
    float[] a = rnd.floats(m * k, 1);
    float[] b = rnd.floats(k * n, 1);
    float[] c0 = rnd.floats(m * n, 1);
    double[][] ref = new double[m][n];
    for (int i = 0; i < m; i++) {
      for (int j = 0; j < n; j++) {
        double s = 0;
        for (int q = 0; q < k; q++) {
          double av = ta ? a[q * m + i] : a[i * k + q];
          double bv = tb ? b[j * k + q] : b[q * n + j];
          s += av * bv;
        }
        ref[i][j] = 0.5 * s + 2.0 * c0[i * n + j];
      }
    }
    try (Tensor ta1 = be.upload(a, ta ? k : m, ta ? m : k); Tensor tb1 = be.upload(b, tb ? n : k, tb ? k : n);
        Tensor c = be.upload(c0, m, n)) {
      be.gemm(ta, tb, 0.5f, ta1, tb1, 2.0f, c);
      Compare.assertClose(be.download(c), ref, rnd);
    }
  }

  @Test
  void gemmRejectsShapesThatDoNotAgree() {
    try (Tensor a = be.allocate(3, 4); Tensor b = be.allocate(5, 6); Tensor c = be.allocate(3, 6)) {
      assertThatThrownBy(() -> be.gemm(false, false, 1, a, b, 0, c))
          .hasMessage("GEMM shapes do not agree: op(A) is [3, 4], op(B) is [5, 6], C is [3, 6]");
    }
  }

  @ParameterizedTest
  @EnumSource(Activation.class)
  void activationsMatchPyTorchDefinitions(Activation act) {
    int rows = 9;
    int cols = 101;
    float[] x = rnd.floats(rows * cols, 6);
    double[][] ref = Reference.act(act, rnd.rows(x, rows, cols));
    try (Tensor t = be.upload(x, rows, cols)) {
      be.activate(t, act);
      Compare.assertClose(be.download(t), ref, act + " " + rnd);
    }
  }

  @Test
  void geluIsAccurateInTheNegativeTailElementByElement() {
    float[] x = {-9f, -6f, -4f, -2.5f, -1f, -1e-3f, 1e-3f, 0.5f, 3f, 7f};
    try (Tensor t = be.upload(x, 1, x.length)) {
      be.activate(t, Activation.GELU);
      float[] y = be.download(t);
      for (int i = 0; i < x.length; i++) {
        double ref = Reference.act(Activation.GELU, x[i]);
        assertThat(Math.abs(y[i] - ref)).as("gelu(%s)", x[i]).isLessThanOrEqualTo(1e-5 * Math.abs(ref) + 1e-30);
      }
    }
  }

  @Test
  void geluIsAccurateAcrossTheWholeRangeAndPropagatesNanAndInfinity() {
    int n = 24001;
    float[] x = new float[n + 3];
    for (int i = 0; i < n; i++) {
      x[i] = -12f + 24f * i / (n - 1) + (float) (rnd.floats(1, 1e-4)[0]);
    }
    x[n] = Float.NaN;
    x[n + 1] = Float.POSITIVE_INFINITY;
    x[n + 2] = Float.NEGATIVE_INFINITY;
    try (Tensor t = be.upload(x, 1, x.length)) {
      be.activate(t, Activation.GELU);
      float[] y = be.download(t);
      for (int i = 0; i < n; i++) {
        double ref = Reference.act(Activation.GELU, x[i]);
        // float rounding of the result plus the erfc fit: within 1e-6 of the output scale max(1, |x|)
        assertThat(Math.abs(y[i] - ref)).as("gelu(%s)", x[i]).isLessThanOrEqualTo(1e-6 * Math.max(1, Math.abs(x[i])));
      }
      assertThat(y[n]).isNaN();
      assertThat(y[n + 1]).isEqualTo(Float.POSITIVE_INFINITY);
      assertThat(y[n + 2]).as("-inf * 0.5 * (1 + erf(-inf)) = -inf * 0, as in PyTorch").isNaN();
    }
  }

  @Test
  void biasAndActivationAreFusedInOnePass() {
    int rows = 5;
    int cols = 33;
    float[] x = rnd.floats(rows * cols, 3);
    float[] b = rnd.floats(cols, 1);
    double[][] ref = new double[rows][cols];
    for (int r = 0; r < rows; r++) {
      for (int c = 0; c < cols; c++) {
        ref[r][c] = Reference.act(Activation.SILU, x[r * cols + c] + (double) b[c]);
      }
    }
    try (Tensor t = be.upload(x, rows, cols); Tensor bt = be.upload(b, 1, cols)) {
      be.biasActivate(t, bt, Activation.SILU);
      Compare.assertClose(be.download(t), ref, rnd);
    }
  }

  @Test
  void layerNormMatchesFloat64() {
    int rows = 6;
    int cols = 37;
    float[] x = rnd.floats(rows * cols, 4);
    float[] g = rnd.floats(cols, 2);
    float[] b = rnd.floats(cols, 1);
    double[][] xr = rnd.rows(x, rows, cols);
    double[][] ref = new double[rows][cols];
    for (int r = 0; r < rows; r++) {
      double mean = 0;
      for (double v : xr[r]) {
        mean += v / cols;
      }
      double var = 0;
      for (double v : xr[r]) {
        var += (v - mean) * (v - mean) / cols;
      }
      for (int c = 0; c < cols; c++) {
        ref[r][c] = (xr[r][c] - mean) / Math.sqrt(var + 1e-5) * g[c] + b[c];
      }
    }
    try (Tensor t = be.upload(x, rows, cols); Tensor gt = be.upload(g, 1, cols); Tensor bt = be.upload(b, 1, cols)) {
      be.layerNorm(t, gt, bt, 1e-5f);
      Compare.assertClose(be.download(t), ref, rnd);
    }
  }

  @Test
  void embeddingShardLooksUpOwnIdsAndZerosTheRest() {
    int vocab = 10;
    int dim = 4;
    float[] table = rnd.floats(vocab * dim, 1);
    int start = 3; // the shard holds ids [3, 7)
    int[] ids = {3, 0, 6, 7, 5};
    try (Tensor shard = be.upload(table, start * dim, 4, dim); Tensor out = be.allocate(ids.length, dim)) {
      be.embedding(shard, start, ids, out);
      float[] y = be.download(out);
      for (int r = 0; r < ids.length; r++) {
        for (int c = 0; c < dim; c++) {
          float want = ids[r] >= 3 && ids[r] < 7 ? table[ids[r] * dim + c] : 0f;
          assertThat(y[r * dim + c]).isEqualTo(want);
        }
      }
    }
  }

  @Test
  void closingTheBackendWithALiveTensorReportsTheLeak() {
    CpuBackend other = new CpuBackend();
    Tensor leaked = other.allocate(3, 5);
    assertThatThrownBy(other::close).isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("1 live tensor(s) holding 60 bytes");
    leaked.close();
    leaked.close(); // closing twice is harmless
    assertThat(other.liveTensors()).isZero();
  }

  @Test
  void usingAClosedTensorFailsClearly() {
    Tensor t = be.allocate(2, 2);
    t.close();
    assertThatThrownBy(() -> be.download(t)).hasMessage("Tensor [2, 2] was used after it was closed");
  }

  @Test
  void rowViewsAndBlockCopiesAddressTheRightElements() {
    float[] x = rnd.floats(4 * 5, 1);
    try (Tensor t = be.upload(x, 4, 5); Tensor dst = be.allocate(3, 7)) {
      float[] row2 = be.download(t.rows(2, 1));
      assertThat(row2).containsExactly(java.util.Arrays.copyOfRange(x, 10, 15));
      be.copyBlock(t, 1, 2, dst, 0, 4, 3, 3);
      float[] d = be.download(dst);
      for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 3; c++) {
          assertThat(d[r * 7 + 4 + c]).isEqualTo(x[(1 + r) * 5 + 2 + c]);
        }
      }
      assertThat(d[0]).isZero();
    }
  }

  /**
   * copyRows stacks a block and a transposed block (GPT-2's Conv1D) into rows of a wider tensor, in the
   * tensors' own dtype: the CPU override and the interface's generic default (through a proxy that keeps it)
   * against the placement written plainly; rows not written stay zero.
   */
  @ParameterizedTest
  @CsvSource({"F32,false", "BF16,false", "F16,false", "F32,true", "BF16,true"})
  void copyRowsStacksAndTransposesBlocksInTheirDtype(org.sparktp.tensor.DType dtype, boolean generic) {
    Backend b = generic ? (Backend) java.lang.reflect.Proxy.newProxyInstance(Backend.class.getClassLoader(),
        new Class<?>[] {Backend.class}, (proxy, m, args) -> m.getName().equals("copyRows")
            ? java.lang.reflect.InvocationHandler.invokeDefault(proxy, m, args) : m.invoke(be, args)) : be;
    float[] a = rnd.floats(4 * 6, 1); // [4, 6]
    float[] c = rnd.floats(6 * 3, 1); // [6, 3], placed transposed as [3, 6]
    try (Tensor a32 = be.upload(a, 4, 6); Tensor c32 = be.upload(c, 6, 3);
        Tensor ta = be.convert(a32, dtype); Tensor tc = be.convert(c32, dtype);
        Tensor dst = be.allocate(1 + 4 + 3, 6, dtype)) {
      float[] ar = be.download(ta); // the values as the dtype holds them (exact when widened back)
      float[] cr = be.download(tc);
      b.copyRows(ta, false, dst, 1);
      b.copyRows(tc, true, dst, 5);
      float[] got = be.download(dst);
      for (int j = 0; j < 6; j++) {
        assertThat(got[j]).as("row 0 untouched").isZero();
      }
      for (int i = 0; i < 4; i++) {
        for (int j = 0; j < 6; j++) {
          assertThat(got[(1 + i) * 6 + j]).isEqualTo(ar[i * 6 + j]);
        }
      }
      for (int i = 0; i < 3; i++) {
        for (int j = 0; j < 6; j++) {
          assertThat(got[(5 + i) * 6 + j]).isEqualTo(cr[j * 3 + i]);
        }
      }
      assertThatThrownBy(() -> b.copyRows(ta, true, dst, 0)).isInstanceOf(IllegalArgumentException.class)
          .hasMessageContaining("as 6 rows of width 4 into rows 0..");
    }
  }

  /** A bf16/f16 embedding table: rows gathered widened to f32, ids another rank holds give zeros. */
  @ParameterizedTest
  @EnumSource(value = org.sparktp.tensor.DType.class, names = {"BF16", "F16"})
  void embeddingGathersRowsOfAHalfTableWidenedToF32(org.sparktp.tensor.DType dtype) {
    float[] t = rnd.floats(5 * 8, 2); // rows 10..14 of the vocabulary
    int[] ids = {12, 3, 14, 10, 12, 99};
    try (Tensor t32 = be.upload(t, 5, 8); Tensor half = be.convert(t32, dtype); Tensor out = be.empty(6, 8)) {
      float[] held = be.download(half);
      be.embedding(half, 10, ids, out);
      float[] got = be.download(out);
      for (int r = 0; r < ids.length; r++) {
        int local = ids[r] - 10;
        for (int c = 0; c < 8; c++) {
          float want = local >= 0 && local < 5 ? held[local * 8 + c] : 0f;
          assertThat(got[r * 8 + c]).as("row %d col %d", r, c).isEqualTo(want);
          if (local >= 0 && local < 5) {
            assertThat((double) want).isCloseTo(t[local * 8 + c], org.assertj.core.data.Offset.offset(2e-2));
          }
        }
      }
    }
  }
}
