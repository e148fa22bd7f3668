package org.sparktp.backend.cpu;

import static org.bytedeco.dnnl.global.dnnl.*;

import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import org.bytedeco.dnnl.dnnl_exec_arg_t;
import org.bytedeco.dnnl.dnnl_memory;
import org.bytedeco.dnnl.dnnl_memory_desc;
import org.bytedeco.dnnl.dnnl_primitive;
import org.bytedeco.dnnl.dnnl_primitive_desc;
import org.bytedeco.javacpp.Pointer;

/**
 * Row-wise ops on oneDNN's JIT kernels over an f32 {@code [rows, cols]} block, in place: softmax over each row (the
 * accurate algorithm: the row's maximum subtracted first; {@code -inf} entries become 0), layer norm and RMSNorm with
 * an optional f32 {@code [cols]} scale (gamma) and shift (beta). HotSpot runs the Java versions of these one element at
 * a time ({@code Math.exp} is a stub call per element; float sums are not vectorized): a BERT-base layer's 48 score
 * blocks of 128 x 128 took 4.4 to 8.4 ms in Java (which of the two, varied from one JVM to the next with how C2
 * compiled the loop) against 0.28 ms here, and a layer norm of 512 x 768 0.9 ms against 0.14 ms (AMD EPYC Zen 5, one
 * thread).
 *
 * <p>Primitives are cached per op and shape, at most {@link #MAX_CACHED}, the least recently used destroyed; each is
 * made once (a few ms: oneDNN generates its kernel) and its handles are counted by the backend's {@link Dnnl}, so the
 * backend's leak check covers them. Runs on the calling thread's OpenMP team; one call at a time.
 */
final class DnnlRows implements AutoCloseable {
  static final int MAX_CACHED = 16;
  private static final int SOFTMAX = 0;
  private static final int LAYER_NORM = 1;
  private static final int RMS_NORM = 2;
  private final Dnnl dnnl;
  private final Map<Key, Prim> cache = new LinkedHashMap<>(32, 0.75f, true);
  private boolean closed;

  private record Key(int op, int rows, int cols, boolean scale, boolean shift, float eps) {}

  DnnlRows(Dnnl dnnl) {
    this.dnnl = dnnl;
  }

  /** Softmax of each of the {@code rows} rows of {@code cols} floats at {@code data}, in place. */
  void softmax(Pointer data, int rows, int cols) {
    run(new Key(SOFTMAX, rows, cols, false, false, 0f), data, null, null);
  }

  /** Layer norm of each row at {@code data}, in place, times {@code gamma} and plus {@code beta} where not null. */
  void layerNorm(Pointer data, int rows, int cols, Pointer gamma, Pointer beta, float eps) {
    run(new Key(LAYER_NORM, rows, cols, gamma != null, beta != null, eps), data, gamma, beta);
  }

  /** RMSNorm of each row at {@code data}, in place, times {@code gamma}. */
  void rmsNorm(Pointer data, int rows, int cols, Pointer gamma, float eps) {
    run(new Key(RMS_NORM, rows, cols, gamma != null, false, eps), data, gamma, null);
  }

  private synchronized void run(Key key, Pointer data, Pointer scale, Pointer shift) {
    if (closed) {
      throw new IllegalStateException("oneDNN's row ops were used after their backend was closed");
    }
    if (key.rows() <= 0 || key.cols() <= 0) {
      return;
    }
    Prim p = cache.get(key);
    if (p == null) {
      p = new Prim(key);
      cache.put(key, p);
      if (cache.size() > MAX_CACHED) {
        Iterator<Map.Entry<Key, Prim>> it = cache.entrySet().iterator();
        Prim old = it.next().getValue();
        it.remove();
        old.close();
      }
    }
    p.run(data, scale, shift);
  }

  /** Primitives cached now (for tests). */
  synchronized int cached() {
    return cache.size();
  }

  @Override
  public synchronized void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (Prim p : cache.values()) {
      p.close();
    }
    cache.clear();
  }

  /** One op and shape: the primitive and memories whose data handles are set before each run. */
  private final class Prim {
    final dnnl_primitive_desc pd = new dnnl_primitive_desc();
    final dnnl_primitive prim = new dnnl_primitive();
    dnnl_memory_desc md;
    dnnl_memory_desc vectorMd;
    dnnl_memory mem;
    dnnl_memory scaleMem;
    dnnl_memory shiftMem;
    final dnnl_exec_arg_t args;
    final int nargs;

    Prim(Key key) {
      nargs = 2 + (key.scale() ? 1 : 0) + (key.shift() ? 1 : 0);
      args = new dnnl_exec_arg_t(nargs);
      boolean ok = false;
      try {
        md = dnnl.md(new long[] {key.rows(), key.cols()}, dnnl_f32, dnnl_ab);
        if (key.op() == SOFTMAX) {
          Dnnl.check(dnnl_softmax_forward_primitive_desc_create(pd, dnnl.engine, dnnl_forward_inference,
              dnnl_softmax_accurate, md, md, 1, null), "dnnl_softmax_forward_primitive_desc_create");
        } else {
          int flags = (key.scale() ? dnnl_use_scale : 0) | (key.shift() ? dnnl_use_shift : 0)
              | (key.op() == RMS_NORM ? dnnl_rms_norm : 0);
          Dnnl.check(dnnl_layer_normalization_forward_primitive_desc_create(pd, dnnl.engine, dnnl_forward_inference,
              md, md, null, key.eps(), flags, null), "dnnl_layer_normalization_forward_primitive_desc_create");
        }
        dnnl.made();
        Dnnl.check(dnnl_primitive_create(prim, pd), "dnnl_primitive_create (row op)");
        dnnl.made();
        mem = dnnl.memory(md, null);
        args.position(0).arg(DNNL_ARG_SRC).memory(mem);
        args.position(1).arg(DNNL_ARG_DST).memory(mem);
        int at = 2;
        if (key.scale() || key.shift()) {
          vectorMd = dnnl.md(new long[] {key.cols()}, dnnl_f32, dnnl_a);
        }
        if (key.scale()) {
          scaleMem = dnnl.memory(vectorMd, null);
          args.position(at++).arg(DNNL_ARG_SCALE).memory(scaleMem);
        }
        if (key.shift()) {
          shiftMem = dnnl.memory(vectorMd, null);
          args.position(at).arg(DNNL_ARG_SHIFT).memory(shiftMem);
        }
        args.position(0);
        ok = true;
      } finally {
        if (!ok) {
          close();
        }
      }
    }

    void run(Pointer data, Pointer scale, Pointer shift) {
      Dnnl.check(dnnl_memory_set_data_handle(mem, data), "dnnl_memory_set_data_handle");
      if (scaleMem != null) {
        Dnnl.check(dnnl_memory_set_data_handle(scaleMem, scale), "dnnl_memory_set_data_handle");
      }
      if (shiftMem != null) {
        Dnnl.check(dnnl_memory_set_data_handle(shiftMem, shift), "dnnl_memory_set_data_handle");
      }
      Dnnl.check(dnnl_primitive_execute(prim, dnnl.stream, nargs, args), "dnnl_primitive_execute (row op)");
      Dnnl.check(dnnl_stream_wait(dnnl.stream), "dnnl_stream_wait");
    }

    void close() {
      args.close();
      dnnl.destroy(prim);
      dnnl.destroy(pd);
      dnnl.destroy(mem);
      dnnl.destroy(scaleMem);
      dnnl.destroy(shiftMem);
      dnnl.destroy(md);
      dnnl.destroy(vectorMd);
    }
  }
}
