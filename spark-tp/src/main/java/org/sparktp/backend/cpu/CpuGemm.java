package org.sparktp.backend.cpu;

import static org.bytedeco.openblas.global.openblas_full.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_full.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_full.CblasTrans;

import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.openblas.global.openblas_full;

/**
 * OpenBLAS {@code cblas_sgemm} over a {@link CpuPool}: OpenBLAS runs one thread per call, and a GEMM large enough
 * is split into blocks of the output's columns (when it has at least as many columns as rows: the few rows of a
 * decode step) or rows, one {@code sgemm} per block. Each output element is computed by one call over the whole
 * {@code k}, so the result is the same for every thread count.
 */
final class CpuGemm {
  private CpuGemm() {}

  /** {@code C = alpha op(A) op(B) + beta C} for checked shapes {@code [m, k] x [k, n]}, {@code k > 0}. */
  static void sgemm(CpuPool pool, boolean transA, boolean transB, int m, int n, int k, float alpha, CpuTensor a,
      CpuTensor b, float beta, CpuTensor c) {
    int lda = Math.max(1, a.cols());
    int ldb = Math.max(1, b.cols());
    int ldc = Math.max(1, c.cols());
    if ((long) m * n * k < (1L << 18) || pool.threads() == 1) {
      sgemm(transA, transB, m, n, k, alpha, a.pointer(), lda, b.pointer(), ldb, beta, c.pointer(), ldc);
      return;
    }
    FloatPointer pa = a.pointer();
    FloatPointer pb = b.pointer();
    FloatPointer pc = c.pointer();
    if (n >= m) { // columns of C: columns of B (rows of B^T); decode's few rows take this side
      pool.parallelFor((n + 15) / 16, 4, (c0, c1) -> {
        int from = 16 * c0;
        int cols = Math.min(n, 16 * c1) - from;
        sgemm(transA, transB, m, cols, k, alpha, pa, lda, pb.getPointer(transB ? (long) from * ldb : from), ldb,
            beta, pc.getPointer(from), ldc);
      });
    } else { // rows of C: rows of A (columns of A^T)
      pool.parallelFor((m + 7) / 8, 2, (r0, r1) -> {
        int from = 8 * r0;
        int rows = Math.min(m, 8 * r1) - from;
        sgemm(transA, transB, rows, n, k, alpha, pa.getPointer(transA ? from : (long) from * lda), lda, pb, ldb,
            beta, pc.getPointer((long) from * ldc), ldc);
      });
    }
  }

  private static void sgemm(boolean transA, boolean transB, int m, int n, int k, float alpha,
      FloatPointer a, int lda, FloatPointer b, int ldb, float beta, FloatPointer c, int ldc) {
    openblas_full.cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
        m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}
