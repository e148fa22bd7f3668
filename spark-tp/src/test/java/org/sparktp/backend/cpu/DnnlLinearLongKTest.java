package org.sparktp.backend.cpu;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.SplittableRandom;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * bf16/f16 linears with a long reduction (K beyond 512, as every real transformer has: hidden 768, 1024, ...)
 * against float64 written plainly, on the weights as the half type holds them: max |y - ref| / max |ref| <=
 * 2e-2. oneDNN's in-kernel conversion of f32 activations computed wrong results here from K 520 on (relative
 * error 0.16, ~1 from K 768), which DnnlLinearTest's small K did not reach.
 */
class DnnlLinearLongKTest {

  @ParameterizedTest(name = "{0} weights, M {1}, K {2}, N {3}")
  @CsvSource({"BF16, 8, 520, 48", "BF16, 64, 1024, 96", "BF16, 3, 2048, 40", "F16, 8, 1024, 64", "F16, 17, 768, 33"})
  void longReductionsMatchTheFloat64Reference(DType dtype, int m, int k, int n) {
    SplittableRandom rnd = new SplittableRandom(System.nanoTime());
    float[] x = new float[m * k];
    float[] w = new float[n * k];
    for (int i = 0; i < x.length; i++) {
      x[i] = (float) (rnd.nextDouble() * 2 - 1);
    }
    for (int i = 0; i < w.length; i++) {
      w[i] = (float) ((rnd.nextDouble() * 2 - 1) / Math.sqrt(k));
    }
    try (CpuBackend be = new CpuBackend(1, "auto", 16)) {
      Tensor wf = be.upload(w, n, k);
      Tensor wt = be.convert(wf, dtype);
      wf.close();
      float[] held = be.download(wt); // the weights as the half type holds them
      Backend.PreparedLinear lin = be.prepareLinear(wt, null, Activation.IDENTITY);
      try (Tensor xt = be.upload(x, m, k); Tensor y = lin.apply(xt, false)) {
        float[] got = be.download(y);
        double maxErr = 0;
        double maxRef = 0;
        for (int r = 0; r < m; r++) {
          for (int c = 0; c < n; c++) {
            double s = 0;
            for (int i = 0; i < k; i++) {
              s += (double) x[r * k + i] * held[c * k + i];
            }
            maxErr = Math.max(maxErr, Math.abs(got[r * n + c] - s));
            maxRef = Math.max(maxRef, Math.abs(s));
          }
        }
        assertThat(maxErr / maxRef).as("%s [%d x %d] x [%d x %d]^T via %s", dtype, m, k, n, k, lin.kernel())
            .isLessThanOrEqualTo(2e-2);
      } finally {
        lin.close();
      }
      assertThat(be.liveNativeHandles()).isZero();
    }
  }
}
