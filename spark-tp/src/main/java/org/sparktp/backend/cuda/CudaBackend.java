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
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.cuda.cublas.cublasLtContext;
import org.bytedeco.cuda.cublas.cublasLtMatmulDescOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulHeuristicResult_t;
import org.bytedeco.cuda.cublas.cublasLtMatmulPreferenceOpaque_t;
import org.bytedeco.cuda.cublas.cublasLtMatrixLayoutOpaque_t;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUmemPoolHandle_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.cudart.cudaDeviceProp;
import org.bytedeco.cuda.global.cublas;
import org.bytedeco.cuda.global.cudart;
import org.sparktp.TpConf;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.backend.BackendOp;
import org.sparktp.backend.TransformerMath;
import org.sparktp.tensor.DType;
import org.sparktp.tensor.Tensor;

/**
 * The CUDA backend: tensors in device memory ({@link CudaTensor}, stream-ordered allocations from the device's
 * default memory pool), GEMMs through cuBLASLt (fp32 compute; F32/BF16/F16 storage; bias, ReLU and tanh-GeLU
 * fused as epilogues), every other op as an NVRTC-compiled kernel ({@link CudaKernels}).
 *
 * <p>Streams: compute work runs on one non-blocking compute stream; host-to-device copies run on their own stream
 * through a ring of pinned staging buffers, and the compute stream waits on an event after each upload, so an
 * upload issued while earlier GEMMs run overlaps them. Downloads run on a third stream after an event from compute.
 * Every call's status is checked and turned into a {@link CudaException} naming the call; an error that leaves
 * the device context unusable (an illegal address, a failed launch) puts the backend in a failed state that rejects
 * later calls with the first cause.
 *
 * <p>Every method may be called from any thread (each call makes the backend's device current), but not from two
 * threads at once.
 */
public final class CudaBackend implements Backend {
  private static final ThreadLocal<int[]> CURRENT_DEVICE = ThreadLocal.withInitial(() -> new int[] {-1});
  private static final int BLOCK = 256;
  /** Errors after which the context is unusable: illegal address, launch timeout, assert, hardware, launch failure. */
  private static final java.util.Set<Integer> STICKY = java.util.Set.of(700, 702, 710, 714, 715, 719, 999);

  private final int device;
  private final int ccMajor;
  private final int ccMinor;
  private final int sms;
  private final String deviceName;
  private final long totalMemory;
  private final boolean tf32;
  private final long workspaceBytes;
  private final long stagingBytes;

  private final AtomicLong liveTensors = new AtomicLong();
  private final AtomicLong liveBytes = new AtomicLong();
  private final Map<String, LtPlan> plans = new HashMap<>();

  private CUstream_st compute;
  private CUstream_st h2d;
  private CUstream_st d2h;
  private CUevent_st computeMark;
  private CUevent_st copyMark;
  private Staging[] staging;
  private int nextSlot;
  private CudaKernels kernels;
  private cublasLtContext lt;
  private cublasLtMatmulPreferenceOpaque_t preference;
  private long workspace;
  private volatile RuntimeException failure;
  private volatile boolean closed;

  /** A pinned host buffer and the event that marks its last copy done. */
  private static final class Staging {
    final long host;
    final CUevent_st done;
    boolean pending;

    Staging(long host, CUevent_st done) {
      this.host = host;
      this.done = done;
    }
  }

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

  /**
   * A backend on device {@code device} (an ordinal as CUDA numbers the visible devices). {@code settings}: the
   * resolved {@code spark.tp.cuda.*} values (missing keys take their defaults).
   */
  public CudaBackend(Map<String, String> settings, int device) {
    CudaProbe.Status st = CudaProbe.status();
    if (!st.available()) {
      throw new IllegalStateException("The CUDA backend is unavailable: " + st.backendReason());
    }
    if (device < 0 || device >= st.devices()) {
      throw new IllegalArgumentException("CUDA device " + device + " does not exist: this process sees " + st.devices()
          + " device(s) (CUDA_VISIBLE_DEVICES=" + System.getenv("CUDA_VISIBLE_DEVICES") + ")");
    }
    this.device = device;
    this.tf32 = Boolean.parseBoolean(settings.getOrDefault(TpConf.CUDA_TF32, TpConf.CUDA_TF32_DEFAULT).trim());
    this.workspaceBytes = TpConf.parseBytes(TpConf.CUDA_WORKSPACE_BYTES,
        settings.getOrDefault(TpConf.CUDA_WORKSPACE_BYTES, TpConf.CUDA_WORKSPACE_BYTES_DEFAULT));
    // chunks of whole elements: a multiple of 8 bytes, at least 64 KiB
    this.stagingBytes = Math.max(1L << 16, TpConf.parseBytes(TpConf.CUDA_STAGING_BYTES,
        settings.getOrDefault(TpConf.CUDA_STAGING_BYTES, TpConf.CUDA_STAGING_BYTES_DEFAULT)) & ~7L);
    CudaCheck.cuda(cudart.cudaSetDevice(device), "cudaSetDevice(" + device + ")");
    CURRENT_DEVICE.get()[0] = device;
    CudaCheck.cuda(cudart.cudaFree((Pointer) null), "cudaFree(NULL) (creating the context on device " + device + ")");
    int[] v = {0};
    CudaCheck.cuda(cudart.cudaDeviceGetAttribute(v, cudart.cudaDevAttrComputeCapabilityMajor, device),
        "cudaDeviceGetAttribute(major)");
    this.ccMajor = v[0];
    CudaCheck.cuda(cudart.cudaDeviceGetAttribute(v, cudart.cudaDevAttrComputeCapabilityMinor, device),
        "cudaDeviceGetAttribute(minor)");
    this.ccMinor = v[0];
    CudaCheck.cuda(cudart.cudaDeviceGetAttribute(v, cudart.cudaDevAttrMultiProcessorCount, device),
        "cudaDeviceGetAttribute(multiProcessorCount)");
    this.sms = v[0];
    try (cudaDeviceProp p = new cudaDeviceProp()) {
      CudaCheck.cuda(cudart.cudaGetDeviceProperties(p, device), "cudaGetDeviceProperties");
      this.deviceName = p.name().getString();
      this.totalMemory = p.totalGlobalMem();
    }
    try {
      compute = stream("compute");
      h2d = stream("host-to-device");
      d2h = stream("device-to-host");
      computeMark = event();
      copyMark = event();
      CUmemPoolHandle_st pool = new CUmemPoolHandle_st();
      CudaCheck.cuda(cudart.cudaDeviceGetDefaultMemPool(pool, device), "cudaDeviceGetDefaultMemPool");
      try (LongPointer threshold = new LongPointer(1).put(Long.MAX_VALUE)) {
        // keep freed memory in the pool (no release at every synchronization)
        CudaCheck.cuda(cudart.cudaMemPoolSetAttribute(pool, cudart.cudaMemPoolAttrReleaseThreshold, threshold),
            "cudaMemPoolSetAttribute(ReleaseThreshold)");
      }
      staging = new Staging[2];
      for (int i = 0; i < staging.length; i++) {
        PointerPointer<Pointer> pp = new PointerPointer<>(1);
        try {
          CudaCheck.cuda(cudart.cudaHostAlloc(pp, stagingBytes, cudart.cudaHostAllocDefault),
              "cudaHostAlloc(" + stagingBytes + " bytes)");
          staging[i] = new Staging(pp.get(0).address(), event());
        } finally {
          pp.deallocate();
        }
      }
      kernels = new CudaKernels(ccMajor, ccMinor);
      cublasLtContext ctx = new cublasLtContext();
      CudaCheck.lt(cublas.cublasLtCreate(ctx), "cublasLtCreate");
      lt = ctx;
      preference = new cublasLtMatmulPreferenceOpaque_t();
      CudaCheck.lt(cublas.cublasLtMatmulPreferenceInit(preference), "cublasLtMatmulPreferenceInit");
      try (LongPointer ws = new LongPointer(1).put(workspaceBytes)) {
        CudaCheck.lt(cublas.cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            ws, 8), "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
      }
      workspace = mallocAsync(workspaceBytes);
    } catch (RuntimeException | Error e) {
      try {
        releaseNative();
      } catch (RuntimeException suppressed) {
        e.addSuppressed(suppressed);
      }
      throw e;
    }
  }

  private static CUstream_st stream(String what) {
    CUstream_st s = new CUstream_st();
    CudaCheck.cuda(cudart.cudaStreamCreateWithFlags(s, cudart.cudaStreamNonBlocking),
        "cudaStreamCreateWithFlags(" + what + ")");
    return s;
  }

  private static CUevent_st event() {
    CUevent_st e = new CUevent_st();
    CudaCheck.cuda(cudart.cudaEventCreateWithFlags(e, cudart.cudaEventDisableTiming), "cudaEventCreateWithFlags");
    return e;
  }

  @Override
  public String name() {
    return "cuda";
  }

  /**
   * On the device: f32 tensors for the engine (bf16/f16 tensors through {@link #empty(int, int, DType)},
   * {@link #cast} and {@link #linear}); GEMMs, conversions and copies of f32/bf16/f16; linears with f32 weights;
   * elementwise math, norms, RoPE and embeddings on f32. Attention, SwiGLU, cached attention and {@code copyRows}
   * have no kernel yet: they go through the host, logged ({@link org.sparktp.backend.Fallbacks}).
   */
  @Override
  public boolean supports(BackendOp op, DType dtype) {
    return switch (op) {
      case ZERO, COPY_BLOCK, SELECT_ROWS, CONVERT, GEMM -> CudaTypes.STORAGE.contains(dtype);
      case ACCUMULATE -> dtype.isFloat();
      case HOST_BUFFER, COPY_ROWS, ATTENTION, SWIGLU, CACHED_ATTENTION -> false;
      default -> dtype == DType.F32;
    };
  }

  /** A copy of {@code src} converted to {@code dtype} on the device ({@link #cast}). */
  @Override
  public CudaTensor convert(Tensor src, DType dtype) {
    return cast(src, dtype);
  }

  /** The device ordinal. */
  public int device() {
    return device;
  }

  /** "NVIDIA H200, sm_90, 132 SMs, 140.4 GiB". */
  public String describe() {
    return deviceName + ", sm_" + ccMajor + ccMinor + ", " + sms + " SMs, "
        + String.format(java.util.Locale.ROOT, "%.1f GiB", totalMemory / (double) (1L << 30));
  }

  /** The compute stream (collectives are ordered against it). */
  public CUstream_st computeStream() {
    return compute;
  }

  /** Makes this backend's device current in the calling thread (every public method does). */
  public void makeCurrent() {
    int[] cur = CURRENT_DEVICE.get();
    if (cur[0] != device) {
      check(cudart.cudaSetDevice(device), "cudaSetDevice(" + device + ")");
      cur[0] = device;
    }
  }

  private void enter() {
    if (closed) {
      throw new IllegalStateException("The CUDA backend was used after it was closed");
    }
    RuntimeException f = failure;
    if (f != null) {
      throw new IllegalStateException("The CUDA backend on device " + device + " failed earlier and cannot be used: "
          + f.getMessage(), f);
    }
    makeCurrent();
  }

  /** Checks a runtime status; errors that break the context mark the backend failed. */
  private void check(int rc, String call) {
    if (rc != 0) {
      CudaException e = new CudaException(call, rc, CudaCheck.errorString(rc));
      if (STICKY.contains(rc)) {
        failure = failure == null ? e : failure;
      }
      throw e;
    }
  }

  // ---------------------------------------------------------------- memory

  private long mallocAsync(long bytes) {
    try (LongPointer out = new LongPointer(1)) {
      check(cudart.cudaMallocAsync(new PointerPointer<>(out), Math.max(1, bytes), compute),
          "cudaMallocAsync(" + bytes + " bytes on device " + device + ")");
      return out.get();
    }
  }

  private void freeAsync(long address) {
    if (address != 0) {
      check(cudart.cudaFreeAsync(new Ptr(address), compute), "cudaFreeAsync");
    }
  }

  /** A new tensor of storage {@code dtype} whose contents are unspecified. */
  public CudaTensor empty(int rows, int cols, DType dtype) {
    enter();
    long bytes = (long) rows * cols * dtype.size();
    CudaTensor t = new CudaTensor(this, rows, cols, dtype, mallocAsync(bytes));
    liveTensors.incrementAndGet();
    liveBytes.addAndGet(bytes);
    return t;
  }

  void released(long base, long bytes) {
    liveTensors.decrementAndGet();
    liveBytes.addAndGet(-bytes);
    if (!closed && failure == null) {
      makeCurrent();
      freeAsync(base);
    }
  }

  @Override
  public CudaTensor empty(int rows, int cols) {
    return empty(rows, cols, DType.F32);
  }

  @Override
  public CudaTensor allocate(int rows, int cols) {
    CudaTensor t = empty(rows, cols);
    zero(t);
    return t;
  }

  static CudaTensor cuda(Tensor t) {
    if (!(t instanceof CudaTensor c)) {
      throw new IllegalArgumentException(
          "The CUDA backend got a tensor of another backend (" + (t == null ? "null" : t.backend().name()) + ")");
    }
    c.checkOpen();
    return c;
  }

  private static CudaTensor f32(Tensor t, String op) {
    CudaTensor c = cuda(t);
    if (c.dtype() != DType.F32) {
      throw new IllegalArgumentException(op + " works on F32 tensors, got " + c.shape()
          + ": convert it first (CudaBackend.cast)");
    }
    return c;
  }

  /** Fills pinned buffer {@code host} with {@code bytes} bytes starting {@code from} bytes into the source. */
  @FunctionalInterface
  private interface Filler {
    void fill(long host, long from, long bytes);
  }

  /** Copies {@code bytes} from the host (through the staging ring) to {@code dst}; compute waits for it. */
  private void copyIn(long dst, long bytes, Filler filler) {
    if (bytes == 0) {
      return;
    }
    // the destination was allocated (stream-ordered) on compute: the copy stream waits for that
    check(cudart.cudaEventRecord(computeMark, compute), "cudaEventRecord(compute)");
    check(cudart.cudaStreamWaitEvent(h2d, computeMark, 0), "cudaStreamWaitEvent(host-to-device)");
    for (long done = 0; done < bytes; ) {
      long n = Math.min(stagingBytes, bytes - done);
      Staging s = staging[nextSlot];
      nextSlot = (nextSlot + 1) % staging.length;
      if (s.pending) {
        check(cudart.cudaEventSynchronize(s.done), "cudaEventSynchronize(staging)");
      }
      filler.fill(s.host, done, n);
      check(cudart.cudaMemcpyAsync(new Ptr(dst + done), new Ptr(s.host), n, cudart.cudaMemcpyHostToDevice, h2d),
          "cudaMemcpyAsync(host to device, " + n + " bytes)");
      check(cudart.cudaEventRecord(s.done, h2d), "cudaEventRecord(staging)");
      s.pending = true;
      done += n;
    }
    check(cudart.cudaEventRecord(copyMark, h2d), "cudaEventRecord(host-to-device)");
    check(cudart.cudaStreamWaitEvent(compute, copyMark, 0), "cudaStreamWaitEvent(compute)");
  }

  /** Copies {@code bytes} from {@code src} to the host once the compute stream's work is done. */
  private void copyOut(long src, long bytes, Filler drain) {
    if (bytes == 0) {
      return;
    }
    check(cudart.cudaEventRecord(computeMark, compute), "cudaEventRecord(compute)");
    check(cudart.cudaStreamWaitEvent(d2h, computeMark, 0), "cudaStreamWaitEvent(device-to-host)");
    for (long done = 0; done < bytes; ) {
      long n = Math.min(stagingBytes, bytes - done);
      Staging s = staging[nextSlot];
      nextSlot = (nextSlot + 1) % staging.length;
      if (s.pending) {
        check(cudart.cudaEventSynchronize(s.done), "cudaEventSynchronize(staging)");
      }
      check(cudart.cudaMemcpyAsync(new Ptr(s.host), new Ptr(src + done), n, cudart.cudaMemcpyDeviceToHost, d2h),
          "cudaMemcpyAsync(device to host, " + n + " bytes)");
      check(cudart.cudaEventRecord(s.done, d2h), "cudaEventRecord(staging)");
      check(cudart.cudaEventSynchronize(s.done), "cudaEventSynchronize(device to host)");
      s.pending = false;
      drain.fill(s.host, done, n);
      done += n;
    }
  }

  private static Filler floats(float[] src, int offset) {
    return (host, from, n) -> new FloatPointer(new Ptr(host)).capacity(n / 4).put(src, offset + (int) (from / 4),
        (int) (n / 4));
  }

  private static Filler ints(int[] src) {
    return (host, from, n) -> new IntPointer(new Ptr(host)).capacity(n / 4).put(src, (int) (from / 4), (int) (n / 4));
  }

  @Override
  public CudaTensor upload(float[] data, int offset, int rows, int cols) {
    long n = (long) rows * cols;
    if (offset < 0 || offset + n > data.length) {
      throw new IllegalArgumentException("upload of [" + rows + ", " + cols + "] needs " + n
          + " floats from offset " + offset + ", array has " + data.length);
    }
    CudaTensor t = empty(rows, cols);
    try {
      copyIn(t.address(), n * 4, floats(data, offset));
    } catch (RuntimeException | Error e) {
      t.close();
      throw e;
    }
    return t;
  }

  /** A new tensor of storage {@code dtype} holding {@code data} (converted on the device, round to nearest even). */
  public CudaTensor upload(float[] data, int offset, int rows, int cols, DType dtype) {
    if (dtype == DType.F32) {
      return upload(data, offset, rows, cols);
    }
    try (CudaTensor f = upload(data, offset, rows, cols)) {
      return cast(f, dtype);
    }
  }

  /** A copy of {@code src} converted to {@code dtype}. */
  public CudaTensor cast(Tensor src, DType dtype) {
    CudaTensor s = cuda(src);
    CudaTensor out = empty(s.rows(), s.cols(), dtype);
    try {
      long n = s.numel();
      if (s.dtype() == dtype) {
        check(cudart.cudaMemcpyAsync(new Ptr(out.address()), new Ptr(s.address()), s.bytes(),
            cudart.cudaMemcpyDeviceToDevice, compute), "cudaMemcpyAsync(device to device)");
      } else if (s.dtype() == DType.F32) {
        launch(dtype == DType.BF16 ? "tp_cast_f32_bf16" : "tp_cast_f32_f16", grid(n), 0, s.address(),
            out.address(), n);
      } else if (dtype == DType.F32) {
        launch(s.dtype() == DType.BF16 ? "tp_cast_bf16_f32" : "tp_cast_f16_f32", grid(n), 0, s.address(),
            out.address(), n);
      } else {
        try (CudaTensor mid = cast(s, DType.F32)) {
          out.close();
          return cast(mid, dtype);
        }
      }
    } catch (RuntimeException | Error e) {
      out.close();
      throw e;
    }
    return out;
  }

  @Override
  public void download(Tensor src, float[] dst, int offset) {
    CudaTensor s = cuda(src);
    enter();
    if (offset < 0 || offset + s.numel() > dst.length) {
      throw new IllegalArgumentException("download of " + s.shape() + " does not fit in " + dst.length
          + " floats from offset " + offset);
    }
    if (s.dtype() != DType.F32) {
      try (CudaTensor f = cast(s, DType.F32)) {
        download(f, dst, offset);
      }
      return;
    }
    copyOut(s.address(), s.numel() * 4, (host, from, n) ->
        new FloatPointer(new Ptr(host)).capacity(n / 4).get(dst, offset + (int) (from / 4), (int) (n / 4)));
  }

  @Override
  public void write(Tensor t, int row, float[] data, int offset, int length) {
    CudaTensor c = f32(t, "write");
    enter();
    long start = (long) row * c.cols();
    if (row < 0 || start + length > c.numel() || offset < 0 || offset + length > data.length) {
      throw new IndexOutOfBoundsException("write of " + length + " floats at row " + row + " outside " + c.shape());
    }
    copyIn(c.address() + start * 4, (long) length * 4, floats(data, offset));
  }

  @Override
  public void zero(Tensor t) {
    CudaTensor c = cuda(t);
    enter();
    if (c.numel() > 0) {
      check(cudart.cudaMemsetAsync(new Ptr(c.address()), 0, c.bytes(), compute), "cudaMemsetAsync");
    }
  }

  @Override
  public void copyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols) {
    CudaTensor s = cuda(src);
    CudaTensor d = cuda(dst);
    enter();
    if (srcRow < 0 || srcCol < 0 || srcRow + rows > s.rows() || srcCol + cols > s.cols()
        || dstRow < 0 || dstCol < 0 || dstRow + rows > d.rows() || dstCol + cols > d.cols()) {
      throw new IndexOutOfBoundsException("copyBlock of " + rows + "x" + cols + " from " + s.shape() + " at ("
          + srcRow + ", " + srcCol + ") to " + d.shape() + " at (" + dstRow + ", " + dstCol + ")");
    }
    if (s.dtype() != d.dtype()) {
      throw new IllegalArgumentException("copyBlock from " + s.shape() + " to " + d.shape() + ": storage types differ");
    }
    if (rows == 0 || cols == 0) {
      return;
    }
    int es = s.dtype().size();
    long so = s.address() + ((long) srcRow * s.cols() + srcCol) * es;
    long dO = d.address() + ((long) dstRow * d.cols() + dstCol) * es;
    check(cudart.cudaMemcpy2DAsync(new Ptr(dO), (long) d.cols() * es, new Ptr(so), (long) s.cols() * es,
        (long) cols * es, rows, cudart.cudaMemcpyDeviceToDevice, compute), "cudaMemcpy2DAsync(device to device)");
  }

  // ---------------------------------------------------------------- GEMM

  @Override
  public void gemm(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c) {
    matmul(transA, transB, alpha, a, b, beta, c, null, Activation.IDENTITY);
  }

  /**
   * {@code out = act(x W^T + bias)} for a PyTorch weight {@code W[out, in]}: one cuBLASLt call with the bias
   * (and ReLU or tanh-GeLU) epilogue; other activations (erf GeLU, SiLU, ...) run as a kernel after the bias
   * epilogue. {@code x} and {@code w} may be F32, BF16 or F16 (the same type); {@code out} F32 or the inputs' type;
   * {@code bias} (may be null) is converted to {@code out}'s type when it differs.
   */
  public void linear(Tensor x, Tensor w, Tensor bias, Activation act, Tensor out) {
    CudaTensor o = cuda(out);
    boolean fused = act == Activation.IDENTITY || (bias != null
        && (act == Activation.GELU_TANH || act == Activation.RELU));
    try {
      if (fused) {
        matmul(false, true, 1f, x, w, 0f, o, bias, act);
        return;
      }
      if (o.dtype() == DType.F32) {
        matmul(false, true, 1f, x, w, 0f, o, bias, Activation.IDENTITY);
        activate(o, act);
        return;
      }
      try (CudaTensor tmp = empty(o.rows(), o.cols(), DType.F32)) {
        matmul(false, true, 1f, x, w, 0f, tmp, bias, Activation.IDENTITY);
        activate(tmp, act);
        try (CudaTensor cast = cast(tmp, o.dtype())) {
          copyBlock(cast, 0, 0, o, 0, 0, o.rows(), o.cols());
        }
      }
    } catch (CudaException e) {
      if (bias == null || !e.call().startsWith("cublasLtMatmulAlgoGetHeuristic")) {
        throw e;
      }
      // cuBLASLt has no algorithm with this epilogue for these types: plain GEMM, then bias + activation kernels
      unfused(x, w, bias, act, o);
    }
  }

  private void unfused(Tensor x, Tensor w, Tensor bias, Activation act, CudaTensor o) {
    CudaTensor tmp = o.dtype() == DType.F32 ? o : empty(o.rows(), o.cols(), DType.F32);
    CudaTensor b32 = cuda(bias).dtype() == DType.F32 ? null : cast(bias, DType.F32);
    try {
      matmul(false, true, 1f, x, w, 0f, tmp, null, Activation.IDENTITY);
      biasActivate(tmp, b32 == null ? bias : b32, act);
      if (tmp != o) {
        try (CudaTensor cast = cast(tmp, o.dtype())) {
          copyBlock(cast, 0, 0, o, 0, 0, o.rows(), o.cols());
        }
      }
    } finally {
      if (b32 != null) {
        b32.close();
      }
      if (tmp != o) {
        tmp.close();
      }
    }
  }

  private void matmul(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c,
      Tensor bias, Activation act) {
    CudaTensor ta = cuda(a);
    CudaTensor tb = cuda(b);
    CudaTensor tc = cuda(c);
    enter();
    int m = transA ? ta.cols() : ta.rows();
    int k = transA ? ta.rows() : ta.cols();
    int kb = transB ? tb.cols() : tb.rows();
    int n = transB ? tb.rows() : tb.cols();
    if (k != kb || tc.rows() != m || tc.cols() != n) {
      throw new IllegalArgumentException("GEMM shapes do not agree: op(A) is [" + m + ", " + k + "], op(B) is ["
          + kb + ", " + n + "], C is " + tc.shape());
    }
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
      launch("tp_scale", grid(tc.numel()), 0, tc.address(), tc.numel(), beta);
      if (bias != null) {
        biasActivate(tc, bias, act);
      } else if (act != Activation.IDENTITY) {
        activate(tc, act);
      }
      return;
    }
    CudaTensor tbias = null;
    CudaTensor convertedBias = null;
    if (bias != null) {
      tbias = cuda(bias);
      if (tbias.numel() != n) {
        throw new IllegalArgumentException("Bias has " + tbias.numel() + " elements but the GEMM output has " + n
            + " columns");
      }
      if (tbias.dtype() != tc.dtype()) {
        convertedBias = cast(tbias, tc.dtype());
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
            workspaceBytes, compute), "cublasLtMatmul(" + p.g + ")");
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

  // ---------------------------------------------------------------- kernels

  private int grid(long n) {
    long blocks = (n + BLOCK - 1) / BLOCK;
    return (int) Math.max(1, Math.min(blocks, (long) sms * 32));
  }

  /** Launches kernel {@code name} on the compute stream; Long = pointer or 64-bit integer, Integer, Float. */
  private void launch(String name, int gridX, int rowsGrid, Object... args) {
    CudaKernels.checkArgs(name, args);
    enter();
    Pointer[] holders = new Pointer[args.length];
    PointerPointer<Pointer> params = new PointerPointer<>(args.length);
    try {
      for (int i = 0; i < args.length; i++) {
        Object a = args[i];
        if (a instanceof Long l) {
          holders[i] = new LongPointer(1).put(l);
        } else if (a instanceof Integer v) {
          holders[i] = new IntPointer(1).put(v);
        } else if (a instanceof Float f) {
          holders[i] = new FloatPointer(1).put(f);
        } else {
          throw new IllegalArgumentException("kernel argument " + i + " of " + name + ": " + a);
        }
        params.put(i, holders[i]);
      }
      int gx = rowsGrid > 0 ? rowsGrid : gridX;
      int rc = cudart.cuLaunchKernel(kernels.function(name), gx, 1, 1, BLOCK, 1, 1, 0, compute, params,
          (PointerPointer<?>) null);
      if (rc != 0) {
        try {
          CudaCheck.cu(rc, "cuLaunchKernel(" + name + ")");
        } catch (CudaException e) {
          if (STICKY.contains(rc)) {
            failure = failure == null ? e : failure;
          }
          throw e;
        }
      }
    } finally {
      for (Pointer h : holders) {
        if (h != null) {
          h.deallocate();
        }
      }
      params.deallocate();
    }
  }

  private static long addr(CudaTensor t) {
    return t == null ? 0L : t.address();
  }

  private static CudaTensor vector(Tensor t, int n, String what) {
    if (t == null) {
      return null;
    }
    CudaTensor c = f32(t, what);
    if (c.numel() != n) {
      throw new IllegalArgumentException(what + " has " + c.numel() + " elements, expected " + n);
    }
    return c;
  }

  @Override
  public void addBias(Tensor x, Tensor bias) {
    biasActivate(x, bias, Activation.IDENTITY);
  }

  @Override
  public void add(Tensor dst, Tensor src) {
    CudaTensor d = f32(dst, "add");
    CudaTensor s = f32(src, "add");
    if (d.rows() != s.rows() || d.cols() != s.cols()) {
      throw new IllegalArgumentException("Cannot add " + s.shape() + " to " + d.shape() + ": shapes differ");
    }
    if (d.numel() > 0) {
      launch("tp_add", grid(d.numel()), 0, d.address(), s.address(), d.numel());
    }
  }

  @Override
  public void activate(Tensor x, Activation act) {
    biasActivate(x, null, act);
  }

  @Override
  public void biasActivate(Tensor x, Tensor bias, Activation act) {
    CudaTensor tx = f32(x, "biasActivate");
    CudaTensor tb = null;
    if (bias != null) {
      tb = f32(bias, "bias");
      if (tb.numel() != tx.cols()) {
        throw new IllegalArgumentException(
            "Bias has " + tb.numel() + " elements but the activation has " + tx.cols() + " columns");
      }
    }
    if (tx.numel() == 0) {
      return;
    }
    if (act == Activation.SOFTMAX) {
      if (tb != null) {
        launch("tp_bias_act", grid(tx.numel()), 0, tx.address(), tb.address(), tx.rows(), tx.cols(),
            CudaKernels.actCode(Activation.IDENTITY));
      }
      attentionSoftmax(tx, 1f, false, 1);
    } else if (tb != null || act != Activation.IDENTITY) {
      launch("tp_bias_act", grid(tx.numel()), 0, tx.address(), addr(tb), tx.rows(), tx.cols(),
          CudaKernels.actCode(act));
    }
  }

  /**
   * Softmax over each row of {@code scale * x}, in place; with {@code causal}, rows are attention scores of
   * {@code qLen} queries per head against {@code x.cols()} keys and query {@code q} (row mod qLen) sees keys
   * {@code j <= q + cols - qLen}.
   */
  public void attentionSoftmax(Tensor x, float scale, boolean causal, int qLen) {
    CudaTensor tx = f32(x, "softmax");
    if (causal && (qLen <= 0 || qLen > tx.cols())) {
      throw new IllegalArgumentException("Causal softmax needs 0 < qLen <= keys, got qLen " + qLen + " for "
          + tx.shape());
    }
    if (tx.rows() > 0) {
      launch("tp_softmax_rows", 0, tx.rows(), tx.address(), tx.rows(), tx.cols(), scale, causal ? 1 : 0,
          Math.max(1, qLen));
    }
  }

  @Override
  public void layerNorm(Tensor x, Tensor gamma, Tensor beta, float eps) {
    CudaTensor tx = f32(x, "layerNorm");
    CudaTensor g = vector(gamma, tx.cols(), "layer_norm weight");
    CudaTensor b = vector(beta, tx.cols(), "layer_norm bias");
    if (tx.rows() > 0) {
      launch("tp_layer_norm", 0, tx.rows(), tx.address(), addr(g), addr(b), tx.rows(), tx.cols(), eps);
    }
  }

  /** RMSNorm over each row, in place: {@code x / sqrt(mean(x^2) + eps) * gamma} ({@code gamma} may be null). */
  @Override
  public void rmsNorm(Tensor x, Tensor gamma, float eps) {
    CudaTensor tx = f32(x, "rmsNorm");
    CudaTensor g = vector(gamma, tx.cols(), "rms_norm weight");
    if (tx.rows() > 0) {
      launch("tp_rms_norm", 0, tx.rows(), tx.address(), addr(g), tx.rows(), tx.cols(), eps);
    }
  }

  @Override
  public void rope(Tensor x, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    CudaTensor tx = f32(x, "rope");
    TransformerMath.checkRope(tx.rows(), tx.cols(), col, heads, headDim, positions, invFreq);
    if (tx.rows() == 0 || heads == 0) {
      return;
    }
    long pos = deviceInts(positions);
    long freq = 0;
    try {
      freq = deviceFloats(invFreq, headDim / 2);
      launch("tp_rope", grid((long) tx.rows() * heads * (headDim / 2)), 0, tx.address(), tx.rows(), tx.cols(), col,
          heads, headDim, pos, freq);
    } finally {
      freeAsync(pos);
      freeAsync(freq);
    }
  }

  private long deviceFloats(float[] values, int count) {
    long d = mallocAsync((long) count * 4);
    try {
      copyIn(d, (long) count * 4, floats(values, 0));
    } catch (RuntimeException | Error e) {
      freeAsync(d);
      throw e;
    }
    return d;
  }

  private long deviceInts(int[] values) {
    long d = mallocAsync((long) values.length * 4);
    try {
      copyIn(d, (long) values.length * 4, ints(values));
    } catch (RuntimeException | Error e) {
      freeAsync(d);
      throw e;
    }
    return d;
  }

  @Override
  public void embedding(Tensor table, int idStart, int[] ids, Tensor out) {
    CudaTensor t = f32(table, "embedding");
    CudaTensor o = f32(out, "embedding");
    if (o.cols() != t.cols() || o.rows() < ids.length) {
      throw new IllegalArgumentException("Embedding output " + o.shape() + " cannot hold " + ids.length
          + " rows of width " + t.cols());
    }
    zero(o);
    if (ids.length == 0 || t.cols() == 0) {
      return;
    }
    long d = deviceInts(ids);
    try {
      launch("tp_embedding", grid((long) ids.length * t.cols()), 0, t.address(), t.rows(), t.cols(), idStart, d,
          ids.length, o.address());
    } finally {
      freeAsync(d);
    }
  }

  @Override
  public void embeddingBag(Tensor table, int idStart, int[] ids, int[] offsets, boolean mean, Tensor out) {
    CudaTensor t = f32(table, "embeddingBag");
    CudaTensor o = f32(out, "embeddingBag");
    int bags = offsets.length - 1;
    if (o.cols() != t.cols() || o.rows() < bags) {
      throw new IllegalArgumentException("Embedding-bag output " + o.shape() + " cannot hold " + bags
          + " rows of width " + t.cols());
    }
    for (int i = 0; i < bags; i++) {
      if (offsets[i] < 0 || offsets[i] > offsets[i + 1] || offsets[i + 1] > ids.length) {
        throw new IllegalArgumentException("Embedding-bag offsets must rise within [0, " + ids.length + "], got "
            + offsets[i] + ", " + offsets[i + 1] + " at bag " + i);
      }
    }
    zero(o);
    if (bags <= 0 || t.cols() == 0) {
      return;
    }
    long dIds = deviceInts(ids.length == 0 ? new int[1] : ids);
    long dOff = 0;
    try {
      dOff = deviceInts(offsets);
      launch("tp_embedding_bag", grid((long) bags * t.cols()), 0, t.address(), t.rows(), t.cols(), idStart, dIds,
          dOff, bags, mean ? 1 : 0, o.address());
    } finally {
      freeAsync(dIds);
      freeAsync(dOff);
    }
  }

  /** Waits for everything enqueued on the compute stream. */
  public void synchronize() {
    enter();
    check(cudart.cudaStreamSynchronize(compute), "cudaStreamSynchronize(compute)");
  }

  @Override
  public long liveTensors() {
    return liveTensors.get();
  }

  @Override
  public long liveBytes() {
    return liveBytes.get();
  }

  private void releaseNative() {
    RuntimeException first = null;
    for (LtPlan p : plans.values()) {
      p.free();
    }
    plans.clear();
    if (compute != null && failure == null) {
      first = keep(first, () -> CudaCheck.cuda(cudart.cudaStreamSynchronize(compute), "cudaStreamSynchronize"));
      if (workspace != 0) {
        long ws = workspace;
        workspace = 0;
        first = keep(first, () -> CudaCheck.cuda(cudart.cudaFreeAsync(new Ptr(ws), compute), "cudaFreeAsync"));
        first = keep(first, () -> CudaCheck.cuda(cudart.cudaStreamSynchronize(compute), "cudaStreamSynchronize"));
      }
    }
    if (preference != null) {
      preference.deallocate();
      preference = null;
    }
    if (lt != null) {
      cublasLtContext l = lt;
      lt = null;
      first = keep(first, () -> CudaCheck.lt(cublas.cublasLtDestroy(l), "cublasLtDestroy"));
    }
    if (kernels != null) {
      CudaKernels k = kernels;
      kernels = null;
      first = keep(first, k::close);
    }
    if (staging != null) {
      for (Staging s : staging) {
        if (s != null) {
          first = keep(first, () -> CudaCheck.cuda(cudart.cudaEventSynchronize(s.done), "cudaEventSynchronize"));
          first = keep(first, () -> CudaCheck.cuda(cudart.cudaFreeHost(new Ptr(s.host)), "cudaFreeHost"));
          cudart.cudaEventDestroy(s.done);
        }
      }
      staging = null;
    }
    for (CUevent_st e : new CUevent_st[] {computeMark, copyMark}) {
      if (e != null) {
        cudart.cudaEventDestroy(e);
      }
    }
    computeMark = null;
    copyMark = null;
    for (CUstream_st s : new CUstream_st[] {compute, h2d, d2h}) {
      if (s != null) {
        first = keep(first, () -> CudaCheck.cuda(cudart.cudaStreamDestroy(s), "cudaStreamDestroy"));
      }
    }
    compute = null;
    h2d = null;
    d2h = null;
    if (first != null) {
      throw first;
    }
  }

  private static RuntimeException keep(RuntimeException first, Runnable r) {
    try {
      r.run();
    } catch (RuntimeException e) {
      if (first == null) {
        return e;
      }
      first.addSuppressed(e);
    }
    return first;
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    makeCurrentQuietly();
    closed = true;
    releaseNative();
    long live = liveTensors.get();
    if (live != 0) {
      throw new IllegalStateException("CUDA backend closed with " + live + " live tensor(s) holding "
          + liveBytes.get() + " bytes: every tensor must be closed by its owner (a leak)");
    }
  }

  private void makeCurrentQuietly() {
    try {
      makeCurrent();
    } catch (RuntimeException e) {
      // a failed context: releaseNative reports what it cannot free
    }
  }
}
