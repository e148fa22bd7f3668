package org.sparktp.backend.cpu;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.util.Locale;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.openblas.global.openblas_full;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.backend.BackendOp;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * The CPU backend: tensors of any {@link DType} in off-heap host memory; linear layers through oneDNN
 * matmuls ({@code org.bytedeco:dnnl}, weights prepacked once, AMX or AVX512-BF16 for bf16/f16 weights,
 * see {@link DnnlLinear}; f32 weights too where oneDNN has JIT kernels) or OpenBLAS {@code cblas_sgemm}
 * ({@code org.bytedeco:openblas}: attention's GEMMs, {@link #gemm}, and f32 linears where oneDNN has only its
 * reference code); elementwise work in Java, norms and attention's softmax on oneDNN where it loads, in float32.
 *
 * <p>Which GEMM runs ({@code spark.tp.cpu.gemm}): {@code auto} = oneDNN for every dtype where its ISA is AVX2 or
 * better, else OpenBLAS for f32 weights and oneDNN for the others; {@code onednn} = oneDNN for every dtype;
 * {@code openblas} = OpenBLAS only (bf16/f16 weights are then widened to f32 at load).
 *
 * <p>Threads ({@code spark.tp.cpu.threads}, one by default: ranks of a group in one JVM would otherwise
 * oversubscribe the cores): one {@link CpuPool} per backend runs every kernel that is not a oneDNN matmul, OpenBLAS
 * GEMMs included (split by rows or columns over the pool, OpenBLAS itself on one thread), and oneDNN's OpenMP team
 * gets the same count on the threads that call it. Results do not depend on the count.
 */
public final class CpuBackend implements Backend {
  private static final Object INIT_LOCK = new Object();
  private static volatile boolean loaded;

  private final AtomicLong liveTensors = new AtomicLong();
  private final AtomicLong liveBytes = new AtomicLong();
  private final int blasThreads;
  private final CpuPool pool;
  private final String gemm;
  private final int referenceRows;
  private Dnnl dnnl; // made on first use
  private DnnlRows rowOps; // made on first use
  private volatile boolean closed;

  /** A backend with one BLAS thread. */
  public CpuBackend() {
    this(1);
  }

  /** A backend with {@code blasThreads} threads ({@link CpuPool}); GEMM choice {@code auto}. */
  public CpuBackend(int blasThreads) {
    this(blasThreads, "auto", 256);
  }

  /**
   * A backend with {@code threads} threads (its {@link CpuPool}; OpenBLAS runs one thread per call), GEMM choice
   * {@code gemm}
   * ({@code auto|openblas|onednn}), and {@code referenceRows} (the micro-batch size) for which oneDNN picks
   * the packed weight layout.
   */
  public CpuBackend(int threads, String gemm, int referenceRows) {
    if (threads <= 0) {
      throw new IllegalArgumentException(
          "CPU thread count must be positive, got " + threads + " (spark.tp.cpu.threads)");
    }
    this.gemm = checkGemm(gemm);
    load();
    if ("onednn".equals(this.gemm) && Dnnl.loadError() != null) {
      throw new IllegalStateException(Dnnl.loadError() + " (spark.tp.cpu.gemm=onednn); use auto or openblas");
    }
    this.blasThreads = threads;
    this.referenceRows = Math.max(1, referenceRows);
    // one OpenBLAS thread per call: the pool splits the GEMMs (OpenBLAS's own threads spin long after each call)
    openblas_full.openblas_set_num_threads(1);
    this.pool = new CpuPool(threads);
  }

  /** The threads of this backend (one rank). */
  public CpuPool pool() {
    return pool;
  }

  /** Checks a {@code spark.tp.cpu.gemm} value; returns it normalized. */
  public static String checkGemm(String gemm) {
    String g = gemm == null ? "auto" : gemm.trim().toLowerCase(Locale.ROOT);
    if (!g.equals("auto") && !g.equals("openblas") && !g.equals("onednn")) {
      throw new IllegalArgumentException("Unknown CPU GEMM '" + gemm + "' (spark.tp.cpu.gemm): use auto, openblas "
          + "or onednn");
    }
    return g;
  }

  /** True when this CPU runs bf16 GEMMs natively through oneDNN (AMX or AVX512-BF16). */
  public static boolean hasNativeBf16() {
    return Dnnl.hasBf16();
  }

  /** oneDNN's instruction set here ({@code avx512_core_amx}, ...), or {@code unavailable} with the reason. */
  public static String onednnIsa() {
    String why = Dnnl.loadError();
    return why == null ? Dnnl.isa() : "unavailable: " + why;
  }

  /** What oneDNN's OpenMP runtime was given: {@code OMP_NUM_THREADS}, read once when it loaded. */
  public static String onednnThreads() {
    String v = Dnnl.ompThreads();
    return v == null ? "OMP_NUM_THREADS unset (OpenMP uses every core)" : "OMP_NUM_THREADS=" + v;
  }

  private boolean useDnnl(DType weights) {
    if ("openblas".equals(gemm) || Dnnl.loadError() != null) {
      return false;
    }
    // auto: f32 on oneDNN too where it has JIT kernels (2.2x OpenBLAS on a BERT encoder here, docs/precision.md)
    return ("onednn".equals(gemm) || weights != DType.F32 || Dnnl.isa().startsWith("avx")) && Dnnl.supports(weights);
  }

  @Override
  public String kernel(DType dtype) {
    if (dtype == DType.I8) {
      return useDnnl(DType.I8) ? Dnnl.kernelName() + " int8 W8A8 (" + Dnnl.w8a8Impl() + ")"
          : "openblas (int8 W8A8 emulated: weights and activations quantized, dequantized to f32)";
    }
    if (dtype == DType.I8_WO) {
      return useDnnl(DType.I8_WO) ? Dnnl.kernelName() + " int8 weight-only (" + Dnnl.int8Impl() + ")"
          : "openblas (int8 weights dequantized to f32)";
    }
    if (!useDnnl(dtype)) {
      return dtype == DType.F32 ? "openblas" : "openblas (" + dtype.id() + " weights widened to f32)";
    }
    return Dnnl.kernelName();
  }

  private synchronized Dnnl dnnl() {
    if (dnnl == null) {
      dnnl = new Dnnl();
    }
    return dnnl;
  }

  /** Attention's softmax and the norms on oneDNN where it loads (made on first use), else null: Java's. */
  private synchronized DnnlRows rowOps() {
    if (rowOps == null && Dnnl.loadError() == null) {
      rowOps = new DnnlRows(dnnl());
    }
    return rowOps;
  }

  @Override
  public Backend.PreparedLinear prepareLinear(Tensor weight, Tensor bias, Activation epilogue) {
    CpuTensor w = cpu(weight);
    CpuTensor b = bias == null ? null : cpu(bias);
    checkBias(w, b);
    if (useDnnl(w.dtype())) {
      return new DnnlLinear(this, dnnl(), w, b, epilogue, w.dtype(), referenceRows);
    }
    if (w.dtype() != DType.F32) {
      CpuTensor wide = convert(w, DType.F32);
      w.close();
      w = wide;
    }
    Backend.PreparedLinear generic = Backend.super.prepareLinear(w, b, epilogue);
    return new Backend.PreparedLinear() {
      @Override
      public Tensor apply(Tensor x, boolean withBias) {
        return generic.apply(x, withBias);
      }

      @Override
      public long bytes() {
        return generic.bytes();
      }

      @Override
      public String kernel() {
        return "openblas sgemm";
      }

      @Override
      public void close() {
        generic.close();
      }
    };
  }

  /**
   * {@inheritDoc} Here: {@code I8} goes to oneDNN's W8A8 matmul ({@link DnnlW8A8Linear}: s8 weights prepacked with
   * per-output-channel scales, activations quantized per row at every call, s8 x s8 with s32 sums on VNNI or AMX)
   * and {@code I8_WO} to its int8 weight-only matmul ({@link DnnlLinear}: s8 weights decompressed in the kernel),
   * where this CPU has a kernel for it that is not oneDNN's reference code ({@code Dnnl.w8a8Impl()},
   * {@code Dnnl.int8Impl()}) and {@code spark.tp.cpu.gemm} is not {@code openblas}; otherwise the generic path
   * quantizes, dequantizes to f32 and runs OpenBLAS (int8 accuracy, f32 memory and speed).
   */
  @Override
  public Backend.PreparedLinear prepareLinear(Tensor weight, Tensor bias, Activation epilogue, DType storage) {
    if (storage == null || !storage.isInt8() || !useDnnl(storage)) {
      return Backend.super.prepareLinear(weight, bias, epilogue, storage);
    }
    CpuTensor w = cpu(weight);
    CpuTensor b = bias == null ? null : cpu(bias);
    try {
      if (!w.dtype().isFloat()) {
        throw new IllegalArgumentException("An int8 linear is quantized from an f32, bf16 or f16 weight, got "
            + w.dtype().id());
      }
      checkBias(w, b);
      return storage == DType.I8 ? new DnnlW8A8Linear(this, dnnl(), w, b, epilogue, referenceRows)
          : new DnnlLinear(this, dnnl(), w, b, epilogue, DType.I8_WO, referenceRows);
    } catch (RuntimeException e) {
      if (!w.isClosed()) {
        w.close();
      }
      if (b != null && !b.isClosed()) {
        b.close();
      }
      throw e;
    }
  }

  private static void checkBias(CpuTensor w, CpuTensor b) {
    if (b != null && (b.dtype() != DType.F32 || b.numel() != w.rows())) {
      throw new IllegalArgumentException("A linear's bias must be f32 with " + w.rows() + " elements (one per output "
          + "feature), got " + b.shape() + " " + b.dtype().id());
    }
  }

  /** Live oneDNN handles (memory descriptors, memories, primitives, ...) made by this backend. */
  public long liveNativeHandles() {
    Dnnl d;
    synchronized (this) {
      d = dnnl;
    }
    return d == null ? 0 : d.liveHandles();
  }

  /** Counts {@code bytes} of host memory held outside tensors (packed weights); negative to release. */
  void tracked(long bytes) {
    liveBytes.addAndGet(bytes);
  }

  /** Loads OpenBLAS once per JVM; throws {@link UnsatisfiedLinkError} with the cause if it cannot. */
  public static void load() {
    if (!loaded) {
      synchronized (INIT_LOCK) {
        if (!loaded) {
          Loader.load(openblas_full.class);
          loaded = true;
        }
      }
    }
  }

  /** OpenBLAS's build configuration and the CPU core type it chose. */
  public static String describe() {
    load();
    return openblas_full.openblas_get_config().getString()
        + "; core " + openblas_full.openblas_get_corename().getString()
        + "; threads " + openblas_full.openblas_get_num_threads();
  }

  /** The thread count of this backend ({@code spark.tp.cpu.threads}). */
  public int blasThreads() {
    return blasThreads;
  }

  @Override
  public String name() {
    return "cpu";
  }

  @Override
  public CpuTensor allocate(int rows, int cols) {
    return allocate(rows, cols, DType.F32);
  }

  @Override
  public CpuTensor allocate(int rows, int cols, DType dtype) {
    CpuTensor t = empty(rows, cols, dtype);
    Pointer.memset(t.data(), 0, t.bytes());
    return t;
  }

  /**
   * Everything in host memory: tensors of f32, bf16, f16, i32 and int8; GEMMs and elementwise math on f32;
   * linears with f32/bf16/f16 weights, and int8 where oneDNN has a kernel for it here; embeddings and KV caches in
   * any float type.
   */
  @Override
  public boolean supports(BackendOp op, DType dtype) {
    boolean held = dtype == DType.F32 || dtype == DType.BF16 || dtype == DType.F16 || dtype == DType.I32
        || dtype == DType.I8;
    return switch (op) {
      case ALLOCATE, UPLOAD, DOWNLOAD, WRITE, ZERO, COPY_BLOCK, SELECT_ROWS, HOST_BUFFER -> held;
      case COPY_ROWS -> held && dtype.size() > 1;
      case CONVERT, ACCUMULATE, EMBEDDING, EMBEDDING_BAG, CACHED_ATTENTION -> dtype.isFloat();
      case LINEAR -> dtype.isFloat() || dtype.isInt8() && useDnnl(dtype);
      default -> dtype == DType.F32;
    };
  }

  @Override
  public CpuTensor empty(int rows, int cols) {
    return empty(rows, cols, DType.F32);
  }

  /** A new tensor of {@code dtype} whose contents are unspecified. */
  public CpuTensor empty(int rows, int cols, DType dtype) {
    checkOpen();
    if (!supports(BackendOp.ALLOCATE, dtype)) {
      throw new IllegalArgumentException("The CPU backend holds f32, bf16, f16, i32 and int8 tensors, not "
          + dtype.id());
    }
    CpuTensor t = new CpuTensor(this, rows, cols, dtype);
    liveTensors.incrementAndGet();
    liveBytes.addAndGet(t.bytes());
    return t;
  }

  void released(long bytes) {
    liveTensors.decrementAndGet();
    liveBytes.addAndGet(-bytes);
  }

  @Override
  public CpuTensor upload(ByteBuffer data, DType dtype, int rows, int cols) {
    long bytes = (long) rows * cols * dtype.size();
    if (data.remaining() < bytes) {
      throw new IllegalArgumentException("upload of [" + rows + ", " + cols + "] " + dtype.id() + " needs " + bytes
          + " bytes, the buffer has " + data.remaining());
    }
    CpuTensor t = empty(rows, cols, dtype);
    if (data.isDirect() && data.order() == ByteOrder.LITTLE_ENDIAN || data.isDirect() && dtype.size() == 1) {
      Pointer.memcpy(t.data(), new org.bytedeco.javacpp.BytePointer(data.slice()), bytes);
    } else {
      ByteBuffer src = data.slice().order(data.order()).limit((int) bytes);
      t.byteBuffer().put(src);
    }
    data.position(data.position() + (int) bytes);
    return t;
  }

  @Override
  public ByteBuffer hostBuffer(Tensor t) {
    return cpu(t).byteBuffer();
  }

  @Override
  public void write(Tensor t, long byteOffset, ByteBuffer src) {
    CpuTensor c = cpu(t);
    int n = src.remaining();
    c.byteBuffer(byteOffset, n).put(src);
  }

  @Override
  public void download(Tensor src, ByteBuffer dst) {
    CpuTensor s = cpu(src);
    if (dst.remaining() < s.bytes()) {
      throw new IllegalArgumentException("download of " + s.shape() + " " + s.dtype().id() + " needs " + s.bytes()
          + " bytes, the buffer has " + dst.remaining());
    }
    int n = (int) s.bytes();
    dst.slice().put(s.byteBuffer());
    dst.position(dst.position() + n);
  }

  @Override
  public CpuTensor convert(Tensor src, DType dtype) {
    CpuTensor s = cpu(src);
    CpuTensor d = empty(s.rows(), s.cols(), dtype);
    try {
      if (s.dtype() == DType.F32 && dtype == DType.BF16 || s.dtype() == DType.BF16 && dtype == DType.F32) {
        // the activations' round trip at every op boundary: a bulk loop over the pool
        pool.parallelFor((int) Math.min(Integer.MAX_VALUE, (s.numel() + 4095) / 4096), 16,
            (a, b) -> Elementwise.bf16Convert(s, d, 4096L * a, Math.min(s.numel(), 4096L * b)));
        return d;
      }
      long chunk = 1 << 20; // elements per buffer view: no 2 GiB limit on the tensor
      for (long e = 0; e < s.numel(); e += chunk) {
        long c = Math.min(chunk, s.numel() - e);
        dtype.convertFrom(s.dtype(), s.byteBuffer(e * s.dtype().size(), c * s.dtype().size()),
            d.byteBuffer(e * dtype.size(), c * dtype.size()), c);
      }
      return d;
    } catch (RuntimeException ex) {
      d.close();
      throw ex;
    }
  }

  @Override
  public void accumulate(ByteBuffer acc, ByteBuffer src, DType dtype, int count) {
    if (count == 0) {
      return;
    }
    if (dtype == DType.F32) {
      // saxpy with alpha 1 is exact addition
      openblas_full.cblas_saxpy(count, 1f, new org.bytedeco.javacpp.FloatPointer(src.slice().order(
          ByteOrder.nativeOrder()).asFloatBuffer()), 1, new org.bytedeco.javacpp.FloatPointer(acc.slice().order(
          ByteOrder.nativeOrder()).asFloatBuffer()), 1);
      return;
    }
    Backend.super.accumulate(acc, src, dtype, count);
  }

  static CpuTensor cpu(Tensor t) {
    if (!(t instanceof CpuTensor c)) {
      throw new IllegalArgumentException(
          "The CPU backend got a tensor of another backend (" + (t == null ? "null" : t.backend().name()) + ")");
    }
    c.checkOpen();
    return c;
  }

  @Override
  public CpuTensor upload(float[] data, int offset, int rows, int cols) {
    long n = (long) rows * cols;
    if (offset < 0 || offset + n > data.length) {
      throw new IllegalArgumentException("upload of [" + rows + ", " + cols + "] needs " + n
          + " floats from offset " + offset + ", array has " + data.length);
    }
    CpuTensor t = empty(rows, cols);
    t.buffer().put(data, offset, (int) n);
    return t;
  }

  @Override
  public void download(Tensor src, float[] dst, int offset) {
    CpuTensor s = cpu(src);
    if (offset < 0 || offset + s.numel() > dst.length) {
      throw new IllegalArgumentException("download of " + s.shape() + " does not fit in " + dst.length
          + " floats from offset " + offset);
    }
    if (s.dtype() != DType.F32) {
      try (CpuTensor wide = convert(s, DType.F32)) {
        wide.buffer().get(dst, offset, (int) s.numel());
      }
      return;
    }
    s.buffer().get(dst, offset, (int) s.numel());
  }

  @Override
  public void write(Tensor t, int row, float[] data, int offset, int length) {
    CpuTensor c = cpu(t);
    long start = (long) row * c.cols();
    if (row < 0 || start + length > c.numel() || offset < 0 || offset + length > data.length) {
      throw new IndexOutOfBoundsException("write of " + length + " floats at row " + row + " outside " + c.shape());
    }
    c.buffer().position((int) start).put(data, offset, length);
  }

  @Override
  public void zero(Tensor t) {
    CpuTensor c = cpu(t);
    Pointer.memset(c.data(), 0, c.bytes());
  }

  @Override
  public void copyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols) {
    Elementwise.copyBlock(cpu(src), srcRow, srcCol, cpu(dst), dstRow, dstCol, rows, cols);
  }


  @Override
  public void gemm(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c) {
    CpuTensor ta = cpu(a);
    CpuTensor tb = cpu(b);
    CpuTensor tc = cpu(c);
    int[] mnk = Backend.gemmShape(transA, transB, ta, tb, tc);
    int m = mnk[0];
    int n = mnk[1];
    int k = mnk[2];
    if (m == 0 || n == 0) {
      return;
    }
    if (k == 0) {
      // BLAS leaves C untouched for k = 0 only when beta = 1; keep C = beta * C semantics.
      Elementwise.scale(tc.buffer(), beta);
      return;
    }
    CpuGemm.sgemm(pool, transA, transB, m, n, k, alpha, ta, tb, beta, tc);
  }

  @Override
  public void addBias(Tensor x, Tensor bias) {
    biasActivate(x, bias, Activation.IDENTITY);
  }

  @Override
  public void add(Tensor dst, Tensor src) {
    CpuTensor d = cpu(dst);
    CpuTensor s = cpu(src);
    if (d.rows() != s.rows() || d.cols() != s.cols()) {
      throw new IllegalArgumentException("Cannot add " + s.shape() + " to " + d.shape() + ": shapes differ");
    }
    long n = d.numel();
    pool.parallelFor((int) ((n + 4095) / 4096), 16, (a, b) -> {
      long from = 4096L * a;
      long len = Math.min(n, 4096L * b) - from;
      Elementwise.add(d.byteBuffer(4 * from, 4 * len).asFloatBuffer(), s.byteBuffer(4 * from, 4 * len).asFloatBuffer());
    });
  }

  @Override
  public void activate(Tensor x, Activation act) {
    biasActivate(x, null, act);
  }

  @Override
  public void biasActivate(Tensor x, Tensor bias, Activation act) {
    CpuTensor tx = cpu(x);
    float[] b = null;
    if (bias != null) {
      CpuTensor tb = cpu(bias);
      if (tb.numel() != tx.cols()) {
        throw new IllegalArgumentException(
            "Bias has " + tb.numel() + " elements but the activation has " + tx.cols() + " columns");
      }
      b = new float[tx.cols()];
      tb.buffer().get(b);
    }
    if (bias == null && act == Activation.IDENTITY) {
      return;
    }
    float[] fb = b;
    int cols = tx.cols();
    pool.parallelFor(tx.rows(), Elementwise.rowGrain(cols), (r0, r1) -> {
      if (act == Activation.SOFTMAX) {
        if (fb != null) {
          Elementwise.apply(Elementwise.rows(tx, r0, r1), cols, fb, Activation.IDENTITY);
        }
        Elementwise.softmaxRows(Elementwise.rows(tx, r0, r1), r1 - r0, cols);
      } else {
        Elementwise.apply(Elementwise.rows(tx, r0, r1), cols, fb, act);
      }
    });
  }

  @Override
  public void layerNorm(Tensor x, Tensor gamma, Tensor beta, float eps) {
    CpuTensor tx = cpu(x);
    int n = tx.cols();
    CpuTensor g = Elementwise.vectorOf(gamma, n, "layer_norm weight");
    CpuTensor bt = Elementwise.vectorOf(beta, n, "layer_norm bias");
    DnnlRows d = tx.dtype() == DType.F32 ? rowOps() : null;
    if (d != null) {
      pool.bindOpenmp();
      d.layerNorm(tx.data(), tx.rows(), n, g == null ? null : g.data(), bt == null ? null : bt.data(), eps);
      return;
    }
    float[] gv = Elementwise.vector(g);
    float[] bv = Elementwise.vector(bt);
    pool.parallelFor(tx.rows(), Elementwise.rowGrain(n),
        (r0, r1) -> Elementwise.layerNorm(Elementwise.rows(tx, r0, r1), r1 - r0, n, gv, bv, eps));
  }


  @Override
  public void embedding(Tensor table, int idStart, int[] ids, Tensor out) {
    CpuEmbedding.embedding(cpu(table), idStart, ids, cpu(out));
  }

  @Override
  public void embeddingBag(Tensor table, int idStart, int[] ids, int[] offsets, boolean mean, Tensor out) {
    CpuEmbedding.embeddingBag(cpu(table), idStart, ids, offsets, mean, cpu(out));
  }

  @Override
  public void copyRows(Tensor src, boolean transpose, Tensor dst, int dstRow) {
    CpuTensor s = cpu(src);
    CpuTensor d = cpu(dst);
    int outRows = transpose ? s.cols() : s.rows();
    int width = transpose ? s.rows() : s.cols();
    Backend.checkCopyRows(s, d, dstRow, outRows, width);
    long es = s.dtype().size();
    long at = (long) dstRow * d.cols() * es;
    if (!transpose) {
      Pointer.memcpy(d.data().position(d.data().position() + at), s.data(), s.bytes());
      return;
    }
    int r = s.rows();
    int c = s.cols();
    ByteBuffer from = s.byteBuffer();
    ByteBuffer to = d.byteBuffer(at, s.bytes());
    for (int i = 0; i < r; i++) { // source row i becomes column i of the destination rows
      for (int j = 0; j < c; j++) {
        int a = (i * c + j);
        int b = (j * r + i);
        switch ((int) es) {
          case 2 -> to.putShort(b * 2, from.getShort(a * 2));
          case 4 -> to.putInt(b * 4, from.getInt(a * 4));
          default -> throw new IllegalArgumentException("copyRows of " + s.dtype().id() + " elements");
        }
      }
    }
  }

  // --- issue 10: transformer ops (CpuTransformer) ---

  @Override
  public void attention(Tensor qkv, int qCol, int kCol, int vCol, int[] kvOf, int headDim, int[] offsets,
      boolean causal, float scale, Tensor out) {
    CpuTransformer.attention(pool, rowOps(), cpu(qkv), qCol, kCol, vCol, kvOf, headDim, offsets, causal, scale,
        cpu(out));
  }

  @Override
  public void rope(Tensor x, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    CpuTransformer.rope(pool, cpu(x), col, heads, headDim, positions, invFreq);
  }

  @Override
  public void rmsNorm(Tensor x, Tensor gamma, float eps) {
    CpuTensor tx = cpu(x);
    CpuTensor g = Elementwise.vectorOf(gamma, tx.cols(), "rms_norm weight");
    DnnlRows d = tx.dtype() == DType.F32 && g != null ? rowOps() : null;
    if (d != null) {
      pool.bindOpenmp();
      d.rmsNorm(tx.data(), tx.rows(), tx.cols(), g.data(), eps);
      return;
    }
    CpuTransformer.rmsNorm(pool, tx, Elementwise.vector(g), eps);
  }

  @Override
  public void swiglu(Tensor gateUp, Tensor out) {
    CpuTransformer.swiglu(pool, cpu(gateUp), cpu(out));
  }

  // --- issue 12: generation (CpuDecode) ---

  @Override
  public void cachedAttention(Tensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf, int headDim,
      int[] offsets, Tensor[] cache, int[] past, float scale, Tensor out) {
    CpuDecode.cachedAttention(pool, cpu(qkv), qCol, kvCol, kvHeads, kvOf, headDim, offsets, cache, past, scale,
        cpu(out));
  }

  @Override
  public long liveTensors() {
    return liveTensors.get();
  }

  @Override
  public long liveBytes() {
    return liveBytes.get();
  }

  private void checkOpen() {
    if (closed) {
      throw new IllegalStateException("The CPU backend was used after it was closed");
    }
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    pool.close();
    synchronized (this) {
      if (rowOps != null) {
        rowOps.close();
      }
    }
    long live = liveTensors.get();
    long handles = liveNativeHandles();
    Dnnl d;
    synchronized (this) {
      d = dnnl;
    }
    if (d != null) {
      d.close();
    }
    if (live != 0 || handles != 0) {
      throw new IllegalStateException("CPU backend closed with " + live + " live tensor(s) holding "
          + liveBytes.get() + " bytes and " + handles + " live oneDNN handle(s): every tensor and prepared linear "
          + "must be closed by its owner (a leak)");
    }
  }
}
