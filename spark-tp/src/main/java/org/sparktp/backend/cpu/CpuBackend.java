package org.sparktp.backend.cpu;

import static org.bytedeco.openblas.global.openblas_full.CblasNoTrans;
import static org.bytedeco.openblas.global.openblas_full.CblasRowMajor;
import static org.bytedeco.openblas.global.openblas_full.CblasTrans;

import java.nio.FloatBuffer;
import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.openblas.global.openblas_full;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.Tensor;

/**
 * The CPU backend: tensors in off-heap host memory, GEMMs through OpenBLAS {@code cblas_sgemm}
 * ({@code org.bytedeco:openblas}), elementwise work in Java over chunks of the buffers.
 *
 * <p>OpenBLAS keeps one thread count per process. Each rank uses one BLAS thread by default (ranks of a
 * group running in one JVM would otherwise oversubscribe the cores); {@link #CpuBackend(int)} sets
 * another count, which then applies to the whole process.
 */
public final class CpuBackend implements Backend {
  private static final Object INIT_LOCK = new Object();
  private static volatile boolean loaded;

  private final AtomicLong liveTensors = new AtomicLong();
  private final AtomicLong liveBytes = new AtomicLong();
  private final int blasThreads;
  private volatile boolean closed;

  /** A backend with one BLAS thread. */
  public CpuBackend() {
    this(1);
  }

  /** A backend that sets OpenBLAS to {@code blasThreads} threads (process-wide). */
  public CpuBackend(int blasThreads) {
    if (blasThreads <= 0) {
      throw new IllegalArgumentException(
          "BLAS thread count must be positive, got " + blasThreads + " (spark.tp.cpu.blas-threads)");
    }
    load();
    this.blasThreads = blasThreads;
    openblas_full.openblas_set_num_threads(blasThreads);
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

  public int blasThreads() {
    return blasThreads;
  }

  @Override
  public String name() {
    return "cpu";
  }

  @Override
  public CpuTensor allocate(int rows, int cols) {
    CpuTensor t = empty(rows, cols);
    org.bytedeco.javacpp.Pointer.memset(t.pointer(), 0, t.numel() * 4);
    return t;
  }

  @Override
  public CpuTensor empty(int rows, int cols) {
    checkOpen();
    CpuTensor t = new CpuTensor(this, rows, cols);
    liveTensors.incrementAndGet();
    liveBytes.addAndGet(t.numel() * 4);
    return t;
  }

  void released(long numel) {
    liveTensors.decrementAndGet();
    liveBytes.addAndGet(-numel * 4);
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
    org.bytedeco.javacpp.Pointer.memset(c.pointer(), 0, c.numel() * 4);
  }

  @Override
  public void copyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols) {
    CpuTensor s = cpu(src);
    CpuTensor d = cpu(dst);
    if (srcRow < 0 || srcCol < 0 || srcRow + rows > s.rows() || srcCol + cols > s.cols()
        || dstRow < 0 || dstCol < 0 || dstRow + rows > d.rows() || dstCol + cols > d.cols()) {
      throw new IndexOutOfBoundsException("copyBlock of " + rows + "x" + cols + " from " + s.shape() + " at ("
          + srcRow + ", " + srcCol + ") to " + d.shape() + " at (" + dstRow + ", " + dstCol + ")");
    }
    if (rows == 0 || cols == 0) {
      return;
    }
    FloatBuffer sb = s.buffer();
    FloatBuffer db = d.buffer();
    if (cols == s.cols() && cols == d.cols()) {
      db.position(dstRow * cols).put(sb.position(srcRow * cols).limit((srcRow + rows) * cols));
      return;
    }
    for (int r = 0; r < rows; r++) {
      int so = (srcRow + r) * s.cols() + srcCol;
      int dO = (dstRow + r) * d.cols() + dstCol;
      db.position(dO).put(sb.limit(so + cols).position(so));
      sb.limit(sb.capacity());
    }
  }

  @Override
  public void gemm(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c) {
    CpuTensor ta = cpu(a);
    CpuTensor tb = cpu(b);
    CpuTensor tc = cpu(c);
    int m = transA ? ta.cols() : ta.rows();
    int k = transA ? ta.rows() : ta.cols();
    int kb = transB ? tb.cols() : tb.rows();
    int n = transB ? tb.rows() : tb.cols();
    if (k != kb || tc.rows() != m || tc.cols() != n) {
      throw new IllegalArgumentException("GEMM shapes do not agree: op(A) is [" + m + ", " + k + "], op(B) is ["
          + kb + ", " + n + "], C is " + tc.shape());
    }
    if (m == 0 || n == 0) {
      return;
    }
    if (k == 0) {
      // BLAS leaves C untouched for k = 0 only when beta = 1; keep C = beta * C semantics.
      scale(tc, beta);
      return;
    }
    openblas_full.cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans,
        transB ? CblasTrans : CblasNoTrans, m, n, k, alpha, ta.pointer(), Math.max(1, ta.cols()),
        tb.pointer(), Math.max(1, tb.cols()), beta, tc.pointer(), Math.max(1, tc.cols()));
  }

  private static void scale(CpuTensor t, float beta) {
    FloatBuffer b = t.buffer();
    for (int i = 0; i < b.capacity(); i++) {
      b.put(i, beta == 0f ? 0f : b.get(i) * beta);
    }
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
    Elementwise.add(d.buffer(), s.buffer());
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
    if (act == Activation.SOFTMAX) {
      if (b != null) {
        Elementwise.apply(tx.buffer(), tx.cols(), b, Activation.IDENTITY);
      }
      Elementwise.softmaxRows(tx.buffer(), tx.rows(), tx.cols());
    } else {
      Elementwise.apply(tx.buffer(), tx.cols(), b, act);
    }
  }

  @Override
  public void layerNorm(Tensor x, Tensor gamma, Tensor beta, float eps) {
    CpuTensor tx = cpu(x);
    int n = tx.cols();
    float[] g = vector(gamma, n, "layer_norm weight");
    float[] bt = vector(beta, n, "layer_norm bias");
    Elementwise.layerNorm(tx.buffer(), tx.rows(), n, g, bt, eps);
  }

  private static float[] vector(Tensor t, int n, String what) {
    if (t == null) {
      return null;
    }
    CpuTensor c = cpu(t);
    if (c.numel() != n) {
      throw new IllegalArgumentException(what + " has " + c.numel() + " elements, expected " + n);
    }
    float[] out = new float[n];
    c.buffer().get(out);
    return out;
  }

  @Override
  public void embedding(Tensor table, int idStart, int[] ids, Tensor out) {
    CpuTensor t = cpu(table);
    CpuTensor o = cpu(out);
    if (o.cols() != t.cols() || o.rows() < ids.length) {
      throw new IllegalArgumentException("Embedding output " + o.shape() + " cannot hold " + ids.length
          + " rows of width " + t.cols());
    }
    zero(o);
    FloatBuffer tb = t.buffer();
    FloatBuffer ob = o.buffer();
    int d = t.cols();
    for (int r = 0; r < ids.length; r++) {
      int local = ids[r] - idStart;
      if (local >= 0 && local < t.rows()) {
        ob.position(r * d).put(tb.limit((local + 1) * d).position(local * d));
        tb.limit(tb.capacity());
      }
    }
  }

  @Override
  public void embeddingBag(Tensor table, int idStart, int[] ids, int[] offsets, boolean mean, Tensor out) {
    CpuTensor t = cpu(table);
    CpuTensor o = cpu(out);
    int bags = offsets.length - 1;
    if (o.cols() != t.cols() || o.rows() < bags) {
      throw new IllegalArgumentException("Embedding-bag output " + o.shape() + " cannot hold " + bags
          + " rows of width " + t.cols());
    }
    zero(o);
    FloatBuffer tb = t.buffer();
    FloatBuffer ob = o.buffer();
    int d = t.cols();
    float[] acc = new float[d];
    for (int r = 0; r < bags; r++) {
      java.util.Arrays.fill(acc, 0f);
      int from = offsets[r];
      int to = offsets[r + 1];
      for (int i = from; i < to; i++) {
        int local = ids[i] - idStart;
        if (local >= 0 && local < t.rows()) {
          int base = local * d;
          for (int c = 0; c < d; c++) {
            acc[c] += tb.get(base + c);
          }
        }
      }
      if (mean && to > from) {
        float inv = 1f / (to - from);
        for (int c = 0; c < d; c++) {
          acc[c] *= inv;
        }
      }
      ob.position(r * d).put(acc);
    }
  }

  // --- issue 10: transformer ops (CpuTransformer) ---

  @Override
  public void attention(Tensor qkv, int qCol, int kCol, int vCol, int[] kvOf, int headDim, int[] offsets,
      boolean causal, float scale, Tensor out) {
    CpuTransformer.attention(cpu(qkv), qCol, kCol, vCol, kvOf, headDim, offsets, causal, scale, cpu(out));
  }

  @Override
  public void rmsNorm(Tensor x, Tensor gamma, float eps) {
    CpuTensor tx = cpu(x);
    CpuTransformer.rmsNorm(tx, vector(gamma, tx.cols(), "rms_norm weight"), eps);
  }

  @Override
  public void swiglu(Tensor gateUp, Tensor out) {
    CpuTransformer.swiglu(cpu(gateUp), cpu(out));
  }

  // --- issue 12: generation (CpuDecode) ---

  @Override
  public void cachedAttention(Tensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf, int headDim,
      int[] offsets, Tensor[] cache, int[] past, float scale, Tensor out) {
    CpuTensor[] c = new CpuTensor[cache.length];
    for (int i = 0; i < c.length; i++) {
      c[i] = cpu(cache[i]);
    }
    CpuDecode.cachedAttention(this, cpu(qkv), qCol, kvCol, kvHeads, kvOf, headDim, offsets, c, past, scale,
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
    long live = liveTensors.get();
    if (live != 0) {
      throw new IllegalStateException("CPU backend closed with " + live + " live tensor(s) holding "
          + liveBytes.get() + " bytes: every tensor must be closed by its owner (a leak)");
    }
  }
}
