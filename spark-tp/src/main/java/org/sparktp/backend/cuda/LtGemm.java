package org.sparktp.backend.cuda;

/**
 * How a row-major GEMM {@code C[M,N] = op(A) op(B)} is handed to cuBLASLt, which is column-major.
 *
 * <p>A row-major {@code [r, c]} buffer read column-major is its transpose {@code [c, r]} with leading
 * dimension {@code c}. So {@code C = op(A) op(B)} is computed as {@code C^T = op(B)^T op(A)^T}: cuBLASLt's
 * "A" is our {@code B}'s buffer, its "B" is our {@code A}'s, {@code m = N}, {@code n = M}, {@code k = K}, and
 * its "D" ({@code N x M}, leading dimension {@code N}) is our row-major {@code C}. For a PyTorch weight
 * {@code W[out, in]} used as {@code X W^T} ({@code transB = true}) this gives TRANSA = T on the weight, layout
 * {@code (K, N, ld K)}, and the bias epilogue's vector runs along D's rows: one value per output feature.
 *
 * <p>The layouts describe each stored matrix before its transpose: {@code rows x cols, ld} as cuBLASLt's
 * {@code cublasLtMatrixLayoutInit(layout, type, rows, cols, ld)} takes them.
 */
public record LtGemm(boolean transA, boolean transB, int m, int n, int k,
    int aRows, int aCols, int lda, int bRows, int bCols, int ldb, int dRows, int dCols, int ldd) {

  /**
   * The cuBLASLt call for row-major {@code C[M,N] = op(A) op(B)}, with {@code A} {@code [M,K]} (or
   * {@code [K,M]} when {@code rowTransA}) and {@code B} {@code [K,N]} (or {@code [N,K]} when {@code rowTransB}).
   */
  public static LtGemm rowMajor(boolean rowTransA, boolean rowTransB, int bigM, int bigN, int bigK) {
    if (bigM < 0 || bigN < 0 || bigK < 0) {
      throw new IllegalArgumentException("GEMM sizes must be non-negative, got M=" + bigM + " N=" + bigN + " K=" + bigK);
    }
    // cuBLASLt's A = our B's buffer. Stored row-major [K,N] (no transpose) is column-major [N,K] = B^T,
    // which is op(B)^T already; stored [N,K] (transB) is column-major [K,N] and needs a transpose.
    int aRows = rowTransB ? bigK : bigN;
    int aCols = rowTransB ? bigN : bigK;
    // cuBLASLt's B = our A's buffer, by the same reasoning.
    int bRows = rowTransA ? bigM : bigK;
    int bCols = rowTransA ? bigK : bigM;
    return new LtGemm(rowTransB, rowTransA, bigN, bigM, bigK,
        aRows, aCols, Math.max(1, aRows), bRows, bCols, Math.max(1, bRows), bigN, bigM, Math.max(1, bigN));
  }

  /** Length of the bias vector the BIAS epilogues add (rows of D = output features N). */
  public int biasLength() {
    return m;
  }

  @Override
  public String toString() {
    return "cublasLtMatmul(m=" + m + ", n=" + n + ", k=" + k + ", TRANSA=" + (transA ? "T" : "N") + ", TRANSB="
        + (transB ? "T" : "N") + ", A " + aRows + "x" + aCols + " ld " + lda + ", B " + bRows + "x" + bCols + " ld "
        + ldb + ", D " + dRows + "x" + dCols + " ld " + ldd + ")";
  }
}
