package org.sparktp.backend.cuda;

import static org.bytedeco.cuda.global.cublas.CUBLASLT_EPILOGUE_BIAS;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_EPILOGUE_DEFAULT;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_EPILOGUE_GELU_BIAS;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_EPILOGUE_RELU_BIAS;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_MATMUL_DESC_BIAS_POINTER;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_MATMUL_DESC_EPILOGUE;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_MATMUL_DESC_TRANSA;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_MATMUL_DESC_TRANSB;
import static org.bytedeco.cuda.global.cublas.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES;
import static org.bytedeco.cuda.global.cublas.CUBLAS_COMPUTE_32F;
import static org.bytedeco.cuda.global.cublas.CUBLAS_COMPUTE_32F_FAST_TF32;
import static org.bytedeco.cuda.global.cublas.CUBLAS_OP_N;
import static org.bytedeco.cuda.global.cublas.CUBLAS_OP_T;
import static org.bytedeco.cuda.global.cudart.CUDA_R_32F;

import java.util.HashMap;
import java.util.Map;
import org.bytedeco.cuda.cublas.cublasLtContext;
import org.bytedeco.cuda.cublas.cublasLtMatmulDescOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulHeuristicResult_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulPreferenceOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatrixLayoutOpaque_t;
import org.bytedeco.cuda.global.cublas;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * The CUDA backend's GEMMs through cuBLASLt: one context, a preference with the workspace size, the workspace
 * (a stream-ordered allocation on the compute stream), and per GEMM shape its descriptors and chosen algorithm, made
 * once and reused. fp32 compute (TF32 when {@code spark.tp.cuda.tf32}); F32/BF16/F16 operands; bias, ReLU and
 * tanh-GeLU fused as epilogues.
 */
final class CudaGemm {
  private final CudaBackend backend;
  private final boolean tf32;
  private final long workspaceBytes;
  private final Map<String, LtPlan> plans = new HashMap<>();
  private cublasLtContext lt;
  private cublasLtMatmulPreferenceOpaque_t preference;
  private long workspace;

  /** One GEMM shape's cuBLASLt descriptors and chosen algorithm, made once and reused. */
  private static final class LtPlan {
    final LtGemm g;
    final cublasLtMatmulDescOpaque_t desc = new cublasLtMatmulDescOpaque_t();
    final cublasLtMatrixLayoutOpaque_t la = new cublasLtMatrixLayoutOpaque_t();
    final cublasLtMatrixLayoutOpaque_t lb = new cublasLtMatrixLayoutOpaque_t();
    final cublasLtMatrixLayoutOpaque_t lc = new cublasLtMatrixLayoutOpaque_t();
    final cublasLtMatmulHeuristicResult_t heuristic = new cublasLtMatmulHeuristicResult_t(1);
    final LongPointer biasPointer = new LongPointer(1);

    LtPlan(LtGemm g) {
      this.g = g;
    }

    void free() {
      desc.deallocate();
      la.deallocate();
      lb.deallocate();
      lc.deallocate();
      heuristic.deallocate();
      biasPointer.deallocate();
    }
  }

  CudaGemm(CudaBackend backend, boolean tf32, long workspaceBytes) {
    this.backend = backend;
    this.tf32 = tf32;
    this.workspaceBytes = workspaceBytes;
    try {
      cublasLtContext ctx = new cublasLtContext();
      CudaCheck.lt(cublas.cublasLtCreate(ctx), "cublasLtCreate");
      lt = ctx;
      preference = new cublasLtMatmulPreferenceOpaque_t();
      CudaCheck.lt(cublas.cublasLtMatmulPreferenceInit(preference), "cublasLtMatmulPreferenceInit");
      try (LongPointer ws = new LongPointer(1).put(workspaceBytes)) {
        CudaCheck.lt(cublas.cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            ws, 8), "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
      }
      workspace = backend.mallocAsync(workspaceBytes);
    } catch (RuntimeException | Error e) {
      try {
        RuntimeException r = release(null, true);
        if (r != null) {
          e.addSuppressed(r);
        }
      } catch (RuntimeException suppressed) {
        e.addSuppressed(suppressed);
      }
      throw e;
    }
  }

  void matmul(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c,
      Tensor bias, Activation act) {
    CudaTensor ta = CudaBackend.cuda(a);
    CudaTensor tb = CudaBackend.cuda(b);
    CudaTensor tc = CudaBackend.cuda(c);
    backend.enter();
    int[] mnk = Backend.gemmShape(transA, transB, ta, tb, tc);
    int m = mnk[0];
    int n = mnk[1];
    int k = mnk[2];
    if (ta.dtype() != tb.dtype()) {
      throw new IllegalArgumentException("GEMM operands have different storage types: " + ta.shape() + " and "
          + tb.shape());
    }
    if (tc.dtype() != DType.F32 && tc.dtype() != ta.dtype()) {
      throw new IllegalArgumentException("GEMM output " + tc.shape() + " must be F32 or the operands' type "
          + ta.dtype());
    }
    if (m == 0 || n == 0) {
      return;
    }
    if (k == 0) {
      if (tc.dtype() != DType.F32) {
        throw new IllegalArgumentException("GEMM with K = 0 needs an F32 output, got " + tc.shape());
      }
      backend.launch("tp_scale", backend.grid(tc.numel()), 0, tc.address(), tc.numel(), beta);
      if (bias != null) {
        backend.biasActivate(tc, bias, act);
      } else if (act != Activation.IDENTITY) {
        backend.activate(tc, act);
      }
      return;
    }
    CudaTensor tbias = null;
    CudaTensor convertedBias = null;
    if (bias != null) {
      tbias = CudaBackend.cuda(bias);
      if (tbias.numel() != n) {
        throw new IllegalArgumentException("Bias has " + tbias.numel() + " elements but the GEMM output has " + n
            + " columns");
      }
      if (tbias.dtype() != tc.dtype()) {
        convertedBias = backend.cast(tbias, tc.dtype());
        tbias = convertedBias;
      }
    }
    try {
      int epilogue = bias == null ? CUBLASLT_EPILOGUE_DEFAULT : switch (act) {
        case IDENTITY -> CUBLASLT_EPILOGUE_BIAS;
        case GELU_TANH -> CUBLASLT_EPILOGUE_GELU_BIAS;
        case RELU -> CUBLASLT_EPILOGUE_RELU_BIAS;
        default -> throw new IllegalArgumentException("No cuBLASLt epilogue for " + act);
      };
      if (bias == null && act != Activation.IDENTITY) {
        throw new IllegalArgumentException("An activation epilogue needs a bias here");
      }
      int computeType = tf32 && ta.dtype() == DType.F32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
      LtPlan p = plan(transA, transB, m, n, k, ta.dtype(), tc.dtype(), epilogue, computeType);
      if (tbias != null) {
        p.biasPointer.put(0, tbias.address());
        CudaCheck.lt(cublas.cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, p.biasPointer, 8),
            "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
      }
      try (FloatPointer al = new FloatPointer(1).put(alpha); FloatPointer be = new FloatPointer(1).put(beta)) {
        // cuBLASLt's A is our B's buffer, its B is our A's (LtGemm)
        CudaCheck.lt(cublas.cublasLtMatmul(lt, p.desc, al, new Ptr(tb.address()), p.la, new Ptr(ta.address()), p.lb,
            be, new Ptr(tc.address()), p.lc, new Ptr(tc.address()), p.lc, p.heuristic.algo(), new Ptr(workspace),
            workspaceBytes, backend.computeStream()), "cublasLtMatmul(" + p.g + ")");
      }
    } finally {
      if (convertedBias != null) {
        convertedBias.close();
      }
    }
  }

  private LtPlan plan(boolean transA, boolean transB, int m, int n, int k, DType in, DType out, int epilogue,
      int computeType) {
    String key = transA + "," + transB + "," + m + "," + n + "," + k + "," + in + "," + out + "," + epilogue + ","
        + computeType;
    LtPlan p = plans.get(key);
    if (p != null) {
      return p;
    }
    LtGemm g = LtGemm.rowMajor(transA, transB, m, n, k);
    p = new LtPlan(g);
    try {
      CudaCheck.lt(cublas.cublasLtMatmulDescInit(p.desc, computeType, CUDA_R_32F), "cublasLtMatmulDescInit");
      setInt(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, g.transA() ? CUBLAS_OP_T : CUBLAS_OP_N, "TRANSA");
      setInt(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, g.transB() ? CUBLAS_OP_T : CUBLAS_OP_N, "TRANSB");
      setInt(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue, "EPILOGUE");
      if (epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
        setInt(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, CudaTypes.cudaType(out), "BIAS_DATA_TYPE");
      }
      CudaCheck.lt(cublas.cublasLtMatrixLayoutInit(p.la, CudaTypes.cudaType(in), g.aRows(), g.aCols(), g.lda()),
          "cublasLtMatrixLayoutInit(A)");
      CudaCheck.lt(cublas.cublasLtMatrixLayoutInit(p.lb, CudaTypes.cudaType(in), g.bRows(), g.bCols(), g.ldb()),
          "cublasLtMatrixLayoutInit(B)");
      CudaCheck.lt(cublas.cublasLtMatrixLayoutInit(p.lc, CudaTypes.cudaType(out), g.dRows(), g.dCols(), g.ldd()),
          "cublasLtMatrixLayoutInit(D)");
      int[] found = {0};
      CudaCheck.lt(cublas.cublasLtMatmulAlgoGetHeuristic(lt, p.desc, p.la, p.lb, p.lc, p.lc, preference, 1,
          p.heuristic, found), "cublasLtMatmulAlgoGetHeuristic(" + g + ")");
      if (found[0] == 0) {
        throw new CudaException("cublasLtMatmulAlgoGetHeuristic", 15, "no algorithm for " + g + " with " + in
            + " inputs, " + out + " output, epilogue " + epilogue);
      }
    } catch (RuntimeException | Error e) {
      p.free();
      throw e;
    }
    plans.put(key, p);
    return p;
  }

  private static void setInt(cublasLtMatmulDescOpaque_t desc, int attr, int value, String what) {
    try (IntPointer v = new IntPointer(1).put(value)) {
      CudaCheck.lt(cublas.cublasLtMatmulDescSetAttribute(desc, attr, v, 4),
          "cublasLtMatmulDescSetAttribute(" + what + ")");
    }
  }

  /**
   * Frees the plans, the workspace (when {@code usable}: the device context still works, waiting for the compute
   * stream first), the preference and the context; returns {@code first}, or the first failure of these.
   */
  RuntimeException release(RuntimeException first, boolean usable) {
    for (LtPlan p : plans.values()) {
      p.free();
    }
    plans.clear();
    if (usable) {
      first = CudaBackend.keep(first, () -> CudaCheck.cuda(cudart.cudaStreamSynchronize(backend.computeStream()),
          "cudaStreamSynchronize"));
      if (workspace != 0) {
        long ws = workspace;
        workspace = 0;
        first = CudaBackend.keep(first, () -> CudaCheck.cuda(cudart.cudaFreeAsync(new Ptr(ws), backend.computeStream()),
            "cudaFreeAsync"));
        first = CudaBackend.keep(first, () -> CudaCheck.cuda(cudart.cudaStreamSynchronize(backend.computeStream()),
            "cudaStreamSynchronize"));
      }
    }
    if (preference != null) {
      preference.deallocate();
      preference = null;
    }
    if (lt != null) {
      cublasLtContext l = lt;
      lt = null;
      first = CudaBackend.keep(first, () -> CudaCheck.lt(cublas.cublasLtDestroy(l), "cublasLtDestroy"));
    }
    return first;
  }
}
