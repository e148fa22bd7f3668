package org.sparktp.backend.cuda;

import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.IntPointer;
import org.bytedeco.javacpp.LongPointer;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUmemPoolHandle_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.cudart.cudaDeviceProp;
import org.bytedeco.cuda.global.cudart;
import org.sparktp.TpConf;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.backend.BackendOp;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * The CUDA backend: tensors in device memory ({@link CudaTensor}, stream-ordered allocations from the device's
 * default memory pool), GEMMs through cuBLASLt ({@link CudaGemm}: fp32 compute; F32/BF16/F16 storage; bias, ReLU
 * and tanh-GeLU fused as epilogues), elementwise ops, norms, RoPE and embeddings as NVRTC-compiled kernels
 * ({@link CudaOps}, {@link CudaKernels}); {@link #supports} says which ops run here and which go through the host.
 *
 * <p>Streams: compute work runs on one non-blocking compute stream; host transfers run on streams of their own
 * through a ring of pinned staging buffers ({@link CudaStaging}), ordered against compute by events.
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

  private final AtomicLong liveTensors = new AtomicLong();
  private final AtomicLong liveBytes = new AtomicLong();
  private final CudaOps ops = new CudaOps(this);
  private final CudaAttention attn = new CudaAttention(this);

  private CUstream_st compute;
  private CudaStaging staging;
  private CudaKernels kernels;
  private CudaGemm matmuls;
  private volatile RuntimeException failure;
  private volatile boolean closed;

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
    boolean tf32 = Boolean.parseBoolean(settings.getOrDefault(TpConf.CUDA_TF32, TpConf.CUDA_TF32_DEFAULT).trim());
    long workspaceBytes = TpConf.parseBytes(TpConf.CUDA_WORKSPACE_BYTES,
        settings.getOrDefault(TpConf.CUDA_WORKSPACE_BYTES, TpConf.CUDA_WORKSPACE_BYTES_DEFAULT));
    // chunks of whole elements: a multiple of 8 bytes, at least 64 KiB
    long stagingBytes = Math.max(1L << 16, TpConf.parseBytes(TpConf.CUDA_STAGING_BYTES,
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
      CUmemPoolHandle_st pool = new CUmemPoolHandle_st();
      CudaCheck.cuda(cudart.cudaDeviceGetDefaultMemPool(pool, device), "cudaDeviceGetDefaultMemPool");
      try (LongPointer threshold = new LongPointer(1).put(Long.MAX_VALUE)) {
        // keep freed memory in the pool (no release at every synchronization)
        CudaCheck.cuda(cudart.cudaMemPoolSetAttribute(pool, cudart.cudaMemPoolAttrReleaseThreshold, threshold),
            "cudaMemPoolSetAttribute(ReleaseThreshold)");
      }
      staging = new CudaStaging(this, stagingBytes);
      kernels = new CudaKernels(ccMajor, ccMinor);
      matmuls = new CudaGemm(this, tf32, workspaceBytes);
    } catch (RuntimeException | Error e) {
      try {
        releaseNative();
      } catch (RuntimeException suppressed) {
        e.addSuppressed(suppressed);
      }
      throw e;
    }
  }

  static CUstream_st stream(String what) {
    CUstream_st s = new CUstream_st();
    CudaCheck.cuda(cudart.cudaStreamCreateWithFlags(s, cudart.cudaStreamNonBlocking),
        "cudaStreamCreateWithFlags(" + what + ")");
    return s;
  }

  static CUevent_st event() {
    CUevent_st e = new CUevent_st();
    CudaCheck.cuda(cudart.cudaEventCreateWithFlags(e, cudart.cudaEventDisableTiming), "cudaEventCreateWithFlags");
    return e;
  }

  @Override
  public String name() {
    return "cuda";
  }

  /**
   * On the device: tensors of f32, bf16 and f16 (held, moved, converted, copied, transposed; embedding tables and KV
   * caches in any of them; linears with weights in any of them, fp32 accumulation, fused bias/ReLU/tanh-GeLU
   * epilogues through cuBLASLt); the math of activations (norms, RoPE, softmax, attention, SwiGLU, activations,
   * residuals) on f32. Nothing the engine calls goes through the host; int8 weights do (logged, {@link
   * org.sparktp.backend.Fallbacks}).
   */
  @Override
  public boolean supports(BackendOp op, DType dtype) {
    return claims(op, dtype);
  }

  /** {@link #supports(BackendOp, DType)} without a device (the contract test checks the overrides it implies). */
  public static boolean claims(BackendOp op, DType dtype) {
    return switch (op) {
      case ALLOCATE, UPLOAD, DOWNLOAD, WRITE, ZERO, COPY_BLOCK, COPY_ROWS, SELECT_ROWS, CONVERT, GEMM, LINEAR,
          EMBEDDING, EMBEDDING_BAG, CACHED_ATTENTION -> CudaTypes.STORAGE.contains(dtype);
      case ACCUMULATE -> dtype.isFloat();
      case HOST_BUFFER -> false;
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

  void enter() {
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
  void check(int rc, String call) {
    if (rc != 0) {
      CudaException e = new CudaException(call, rc, CudaCheck.errorString(rc));
      if (STICKY.contains(rc)) {
        failure = failure == null ? e : failure;
      }
      throw e;
    }
  }

  // ---------------------------------------------------------------- memory

  long mallocAsync(long bytes) {
    try (LongPointer out = new LongPointer(1)) {
      check(cudart.cudaMallocAsync(new PointerPointer<>(out), Math.max(1, bytes), compute),
          "cudaMallocAsync(" + bytes + " bytes on device " + device + ")");
      return out.get();
    }
  }

  void freeAsync(long address) {
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

  @Override
  public CudaTensor allocate(int rows, int cols, DType dtype) {
    CudaTensor t = empty(rows, cols, dtype);
    zero(t);
    return t;
  }

  @Override
  public CudaTensor upload(java.nio.ByteBuffer data, DType dtype, int rows, int cols) {
    CudaTensor t = empty(rows, cols, dtype);
    try {
      write(t, 0L, data.slice(data.position(), Math.toIntExact(t.bytes())));
    } catch (RuntimeException | Error e) {
      t.close();
      throw e;
    }
    data.position(data.position() + (int) t.bytes());
    return t;
  }

  @Override
  public void write(Tensor t, long byteOffset, java.nio.ByteBuffer src) {
    ops.writeBytes(t, byteOffset, src);
  }

  @Override
  public void download(Tensor src, java.nio.ByteBuffer dst) {
    ops.downloadBytes(src, dst);
  }

  /** The host transfers so far ({@link CudaTransfers}). */
  public CudaTransfers transfers() {
    long[] c = staging.counts();
    return new CudaTransfers(c[0], c[1], c[2], c[3]);
  }

  static CudaTensor cuda(Tensor t) {
    if (!(t instanceof CudaTensor c)) {
      throw new IllegalArgumentException(
          "The CUDA backend got a tensor of another backend (" + (t == null ? "null" : t.backend().name()) + ")");
    }
    c.checkOpen();
    return c;
  }

  static CudaTensor f32(Tensor t, String op) {
    CudaTensor c = cuda(t);
    if (c.dtype() != DType.F32) {
      throw new IllegalArgumentException(op + " works on F32 tensors, got " + c.shape()
          + ": convert it first (CudaBackend.cast)");
    }
    return c;
  }

  /** Copies {@code bytes} from the host to {@code dst} through the staging ring; compute waits for it. */
  void copyIn(long dst, long bytes, CudaStaging.Filler filler) {
    staging.copyIn(dst, bytes, filler);
  }

  /** Copies {@code bytes} from {@code src} to the host once the compute stream's work is done. */
  void copyOut(long src, long bytes, CudaStaging.Filler drain) {
    staging.copyOut(src, bytes, drain);
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
      copyIn(t.address(), n * 4, CudaStaging.floats(data, offset));
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
    return ops.cast(src, dtype);
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
    copyIn(c.address() + start * 4, (long) length * 4, CudaStaging.floats(data, offset));
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
    matmuls.matmul(transA, transB, alpha, a, b, beta, c, null, Activation.IDENTITY);
  }

  @Override
  public String kernel(DType dtype) {
    return CudaLinear.kernel(dtype);
  }

  /** {@link CudaLinear}: cuBLASLt with the weight's storage and the epilogue fused; owns weight and bias. */
  @Override
  public PreparedLinear prepareLinear(Tensor weight, Tensor bias, Activation epilogue) {
    return new CudaLinear(this, weight, bias, epilogue);
  }

  /** Float storage: converted on the device, then {@link CudaLinear}; {@code I8}: {@code Backend}'s host path. */
  @Override
  public PreparedLinear prepareLinear(Tensor weight, Tensor bias, Activation epilogue, DType storage) {
    if (storage == null || CudaTypes.STORAGE.contains(storage)) {
      CudaTensor w = cuda(weight);
      if (storage == null || storage == w.dtype()) {
        return prepareLinear(w, bias, epilogue);
      }
      try (CudaTensor src = w) {
        return prepareLinear(cast(src, storage), bias, epilogue);
      } catch (RuntimeException | Error e) {
        if (bias != null && !bias.isClosed()) {
          bias.close();
        }
        throw e;
      }
    }
    return Backend.super.prepareLinear(weight, bias, epilogue, storage);
  }

  /**
   * {@code out = act(x W^T + bias)} for a PyTorch weight {@code W[out, in]}: one cuBLASLt call with the bias
   * (and ReLU or tanh-GeLU) epilogue; other activations (erf GeLU, SiLU, ...) run as a kernel after the bias
   * epilogue. {@code x} and {@code w} may be F32, BF16 or F16 (the same type); {@code out} F32 or the inputs' type;
   * {@code bias} (may be null) is converted to {@code out}'s type when it differs.
   */
  public void linear(Tensor x, Tensor w, Tensor bias, Activation act, Tensor out) {
    CudaLinear.linear(this, matmuls, x, w, bias, act, out);
  }

  // ---------------------------------------------------------------- kernels

  int grid(long n) {
    long blocks = (n + BLOCK - 1) / BLOCK;
    return (int) Math.max(1, Math.min(blocks, (long) sms * 32));
  }

  /** Launches kernel {@code name} on the compute stream; Long = pointer or 64-bit integer, Integer, Float. */
  void launch(String name, int gridX, int rowsGrid, Object... args) {
    launch2d(name, rowsGrid > 0 ? rowsGrid : gridX, 1, args);
  }

  /** Launches kernel {@code name} on a {@code gridX x gridY} grid of {@code BLOCK} threads (see {@link #launch}). */
  void launch2d(String name, int gridX, int gridY, Object... args) {
    CudaKernels.checkArgs(name, args);
    enter();
    Pointer[] holders = new Pointer[args.length];
    PointerPointer<Pointer> params = new PointerPointer<>(args.length);
    try {
      for (int i = 0; i < args.length; i++) {
        Object a = args[i];
        holders[i] = switch (CudaKernels.kind(a)) { // checkArgs above has checked every kind
          case 'l' -> new LongPointer(1).put((Long) a);
          case 'i' -> new IntPointer(1).put((Integer) a);
          case 'f' -> new FloatPointer(1).put((Float) a);
          default -> throw new IllegalArgumentException("kernel argument " + i + " of " + name + ": " + a);
        };
        params.put(i, holders[i]);
      }
      int rc = cudart.cuLaunchKernel(kernels.function(name), gridX, gridY, 1, BLOCK, 1, 1, 0, compute, params,
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

  @Override
  public void addBias(Tensor x, Tensor bias) {
    biasActivate(x, bias, Activation.IDENTITY);
  }

  @Override
  public void activate(Tensor x, Activation act) {
    biasActivate(x, null, act);
  }

  @Override
  public void add(Tensor dst, Tensor src) {
    ops.add(dst, src);
  }

  @Override
  public void biasActivate(Tensor x, Tensor bias, Activation act) {
    ops.biasActivate(x, bias, act);
  }

  /**
   * Softmax over each row of {@code scale * x}, in place; with {@code causal}, rows are attention scores of
   * {@code qLen} queries per head against {@code x.cols()} keys and query {@code q} (row mod qLen) sees keys
   * {@code j <= q + cols - qLen}.
   */
  public void attentionSoftmax(Tensor x, float scale, boolean causal, int qLen) {
    ops.attentionSoftmax(x, scale, causal, qLen);
  }

  @Override
  public void layerNorm(Tensor x, Tensor gamma, Tensor beta, float eps) {
    ops.layerNorm(x, gamma, beta, eps);
  }

  /** RMSNorm over each row, in place: {@code x / sqrt(mean(x^2) + eps) * gamma} ({@code gamma} may be null). */
  @Override
  public void rmsNorm(Tensor x, Tensor gamma, float eps) {
    ops.rmsNorm(x, gamma, eps);
  }

  @Override
  public void rope(Tensor x, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    ops.rope(x, col, heads, headDim, positions, invFreq);
  }

  @Override
  public void embedding(Tensor table, int idStart, int[] ids, Tensor out) {
    ops.embedding(table, idStart, ids, out);
  }

  @Override
  public void embeddingBag(Tensor table, int idStart, int[] ids, int[] offsets, boolean mean, Tensor out) {
    ops.embeddingBag(table, idStart, ids, offsets, mean, out);
  }

  @Override
  public void attention(Tensor qkv, int qCol, int kCol, int vCol, int[] kvOf, int headDim, int[] offsets,
      boolean causal, float scale, Tensor out) {
    attn.attention(qkv, qCol, kCol, vCol, kvOf, headDim, offsets, causal, scale, out);
  }

  @Override
  public void cachedAttention(Tensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf, int headDim,
      int[] offsets, Tensor[] cache, int[] past, float scale, Tensor out) {
    attn.cachedAttention(qkv, qCol, kvCol, kvHeads, kvOf, headDim, offsets, cache, past, scale, out);
  }

  @Override
  public void swiglu(Tensor gateUp, Tensor out) {
    attn.swiglu(gateUp, out);
  }

  @Override
  public void copyRows(Tensor src, boolean transpose, Tensor dst, int dstRow) {
    attn.copyRows(src, transpose, dst, dstRow);
  }

  /**
   * The LM head's reduction of a vocabulary slice on the device: per row of {@code logits} a new {@code [rows, 3]}
   * f32 tensor of {max, id of the first max ({@code idStart} + column), log(sum(exp(x - max)))}; the ranks
   * combine the slices' rows with small collectives instead of gathering the logits.
   */
  public CudaTensor rowMaxLse(Tensor logits, int idStart) {
    return attn.rowMaxLse(logits, idStart);
  }

  /** {@link #rowMaxLse} on the device; only {max, id} per row comes back. */
  @Override
  public float[] argMaxRows(Tensor logits, int idStart) {
    return attn.argMaxRows(logits, idStart);
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
    if (matmuls != null) {
      CudaGemm g = matmuls;
      matmuls = null;
      first = g.release(first, compute != null && failure == null);
    }
    if (kernels != null) {
      CudaKernels k = kernels;
      kernels = null;
      first = keep(first, k::close);
    }
    if (staging != null) {
      CudaStaging st = staging;
      staging = null;
      first = st.release(first);
    }
    if (compute != null) {
      CUstream_st s = compute;
      compute = null;
      first = keep(first, () -> CudaCheck.cuda(cudart.cudaStreamDestroy(s), "cudaStreamDestroy"));
    }
    if (first != null) {
      throw first;
    }
  }

  static RuntimeException keep(RuntimeException first, Runnable r) {
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
