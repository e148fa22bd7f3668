package org.sparktp.backend.cpu;

import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.backend.Tensor;
import org.sparktp.tensor.DType;

/**
 * What oneDNN's prepared linears share ({@link DnnlLinear}, {@link DnnlW8A8Linear}): the weight's shape, the
 * activation split into a post-op of the matmul ({@link #epilogue}) or a pass after it ({@link #after}: softmax),
 * the f32 bias, and the matmul primitives cached per {@code (M, with bias)} (M varies per micro-batch), at most
 * {@link #MAX_CACHED}, the least recently used evicted, each closed once (on eviction or by {@link #close()}).
 * {@link #apply} checks the input, runs the primitive on oneDNN's OpenMP team bound to {@code spark.tp.cpu.threads}
 * and closes the output on a failure. A subclass makes the primitive for one M and frees its weight-side handles.
 *
 * @param <P> the subclass's primitive for one M
 */
abstract class DnnlMatmul<P extends DnnlMatmul.Prim> implements Backend.PreparedLinear {
  static final int MAX_CACHED = 8;

  /** One matmul for one M. */
  interface Prim {
    /** {@code y = act(x W^T + b)} into {@code y}, {@code x [M, K]} f32. */
    void run(CpuTensor x, CpuTensor y);

    /** Destroys its handles; once. */
    void close();
  }

  final CpuBackend backend;
  final Dnnl dnnl;
  final int n;
  final int k;
  final Activation epilogue; // an eltwise post-op, or identity
  final Activation after; // applied after the matmul when oneDNN has no post-op for it (softmax)
  final CpuTensor bias; // [1, n] f32 or null
  private final String what;
  private final Map<Long, P> cache = new LinkedHashMap<>(16, 0.75f, true);
  private boolean closed;

  /** {@code what} names it in errors ({@code oneDNN linear}); takes ownership of {@code bias} (closed last). */
  DnnlMatmul(String what, CpuBackend backend, Dnnl dnnl, CpuTensor weight, CpuTensor bias, Activation act) {
    this.what = what;
    this.backend = backend;
    this.dnnl = dnnl;
    this.n = weight.rows();
    this.k = weight.cols();
    Activation a = act == null ? Activation.IDENTITY : act;
    this.epilogue = DnnlLinear.eltwise(a) >= 0 ? a : Activation.IDENTITY;
    this.after = this.epilogue == a ? Activation.IDENTITY : a;
    this.bias = bias;
  }

  /** A new primitive for {@code m} rows. */
  abstract P newPrim(int m, boolean withBias);

  /** Frees the weight-side handles and buffers (the primitives are closed already, the bias is closed after). */
  abstract void release();

  /** The cached primitive for {@code m} rows, made (and the least recently used evicted) when there is none. */
  final P prim(int m, boolean withBias) {
    long key = ((long) m << 1) | (withBias ? 1 : 0);
    P p = cache.get(key);
    if (p == null) {
      p = newPrim(m, withBias);
      cache.put(key, p);
      if (cache.size() > MAX_CACHED) {
        Iterator<Map.Entry<Long, P>> it = cache.entrySet().iterator();
        P old = it.next().getValue();
        it.remove();
        old.close();
      }
    }
    return p;
  }

  @Override
  public final synchronized Tensor apply(Tensor x, boolean withBias) {
    if (closed) {
      throw new IllegalStateException("A " + what + " [" + n + ", " + k + "] was used after it was closed");
    }
    CpuTensor tx = CpuBackend.cpu(x);
    if (tx.dtype() != DType.F32 || tx.cols() != k) {
      throw new IllegalArgumentException(what + " [" + n + ", " + k + "] needs an f32 input of width " + k
          + ", got " + tx.shape() + " " + tx.dtype().id());
    }
    CpuTensor y = backend.empty(tx.rows(), n);
    try {
      if (tx.rows() > 0) {
        backend.pool().bindOpenmp(); // oneDNN's OpenMP team: spark.tp.cpu.threads on this thread
        prim(tx.rows(), withBias && bias != null).run(tx, y);
      }
      if (after != Activation.IDENTITY) {
        backend.activate(y, after);
      }
      return y;
    } catch (RuntimeException e) {
      y.close();
      throw e;
    }
  }

  /** Primitives cached now (for tests). */
  final synchronized int cachedPrimitives() {
    return cache.size();
  }

  @Override
  public final synchronized void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (P p : cache.values()) {
      p.close();
    }
    cache.clear();
    try {
      release();
    } finally {
      if (bias != null) {
        bias.close();
      }
    }
  }
}
