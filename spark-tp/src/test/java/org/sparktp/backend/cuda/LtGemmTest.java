package org.sparktp.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The row-major to cuBLASLt mapping, checked without a GPU: the test interprets the {@link LtGemm} description the
 * way cuBLASLt defines it (column-major operands {@code rows x cols} with leading dimension {@code ld}, an optional
 * transpose, {@code D[m, n] = op(A) op(B) + bias[m]}) in float64 on the raw row-major buffers, and compares with a
 * plain row-major float64 GEMM.
 */
class LtGemmTest {

  /** Element (i, j) of op(X) for a column-major stored X. */
  private static double colMajor(double[] buf, int ld, boolean trans, int i, int j) {
    return trans ? buf[j + i * ld] : buf[i + j * ld];
  }

  /** cuBLASLt's D = op(A) op(B) + bias (bias over D's rows), column-major, as the description says. */
  private static double[] interpret(LtGemm g, double[] ltA, double[] ltB, double[] bias) {
    // op(A) is m x k, op(B) is k x n; the stored shapes must agree with the transposes
    assertThat(g.transA() ? new int[] {g.aCols(), g.aRows()} : new int[] {g.aRows(), g.aCols()})
        .containsExactly(g.m(), g.k());
    assertThat(g.transB() ? new int[] {g.bCols(), g.bRows()} : new int[] {g.bRows(), g.bCols()})
        .containsExactly(g.k(), g.n());
    assertThat(new int[] {g.dRows(), g.dCols()}).containsExactly(g.m(), g.n());
    double[] d = new double[g.m() * g.n()];
    for (int i = 0; i < g.m(); i++) {
      for (int j = 0; j < g.n(); j++) {
        double s = bias == null ? 0 : bias[i];
        for (int p = 0; p < g.k(); p++) {
          s += colMajor(ltA, g.lda(), g.transA(), i, p) * colMajor(ltB, g.ldb(), g.transB(), p, j);
        }
        d[i + j * g.ldd()] = s;
      }
    }
    return d;
  }

  private static double[] random(int n, Random r) {
    double[] a = new double[n];
    for (int i = 0; i < n; i++) {
      a[i] = r.nextGaussian();
    }
    return a;
  }

  @Test
  void everyTransposeCombinationMatchesARowMajorGemm() {
    Random rnd = new Random(13);
    int[][] shapes = {{3, 5, 4}, {1, 7, 2}, {6, 1, 3}, {4, 4, 1}, {5, 3, 8}};
    for (int[] s : shapes) {
      int m = s[0];
      int n = s[1];
      int k = s[2];
      for (boolean ta : new boolean[] {false, true}) {
        for (boolean tb : new boolean[] {false, true}) {
          double[] a = random(m * k, rnd); // [M,K] or, transposed, [K,M]; row-major
          double[] b = random(k * n, rnd); // [K,N] or, transposed, [N,K]
          double[] bias = random(n, rnd);
          double[] want = new double[m * n];
          for (int i = 0; i < m; i++) {
            for (int j = 0; j < n; j++) {
              double acc = bias[j];
              for (int p = 0; p < k; p++) {
                double av = ta ? a[p * m + i] : a[i * k + p];
                double bv = tb ? b[j * k + p] : b[p * n + j];
                acc += av * bv;
              }
              want[i * n + j] = acc;
            }
          }
          LtGemm g = LtGemm.rowMajor(ta, tb, m, n, k);
          assertThat(g.biasLength()).isEqualTo(n);
          // cuBLASLt's A is our B's buffer, its B our A's; its D buffer is our row-major C
          double[] got = interpret(g, b, a, bias);
          for (int i = 0; i < want.length; i++) {
            assertThat(got[i]).as("M=%d N=%d K=%d transA=%s transB=%s element %d: %s", m, n, k, ta, tb, i, g)
                .isCloseTo(want[i], org.assertj.core.data.Offset.offset(1e-12));
          }
        }
      }
    }
  }

  @Test
  void aPyTorchLinearIsTransAOnTheWeightWithLeadingDimensionK() {
    // Y[4096, 16384] = X[4096, 4096] W^T, W = [16384, 4096] (the MLP up projection)
    LtGemm g = LtGemm.rowMajor(false, true, 4096, 16384, 4096);
    assertThat(g.toString()).isEqualTo("cublasLtMatmul(m=16384, n=4096, k=4096, TRANSA=T, TRANSB=N,"
        + " A 4096x16384 ld 4096, B 4096x4096 ld 4096, D 16384x4096 ld 16384)");
  }
}
