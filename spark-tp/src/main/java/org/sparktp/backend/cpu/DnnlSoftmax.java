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
 * Softmax over the last axis of an f32 {@code [rows, len]} block, in place, on oneDNN's JIT kernel (the accurate
 * algorithm: the row's maximum subtracted first; {@code -inf} entries become 0). Prefill attention's score blocks go
 * through it: HotSpot calls {@code Math.exp} one element at a time, and a BERT-base layer's 48 blocks of 128 x 128
 * took 4.4 to 8.4 ms in Java (which, varied from one JVM to the next with how C2 compiled the loop) against 0.28 ms
 * here (AMD EPYC Zen 5, one thread).
 *
 * <p>Primitives are cached per shape, at most {@link #MAX_CACHED}, the least recently used destroyed; each is made
 * once (a few ms: oneDNN generates its kernel) and its handles are counted by the backend's {@link Dnnl}, so the
 * backend's leak check covers them. Runs on the calling thread's OpenMP team; one call at a time.
 */
final class DnnlSoftmax implements AutoCloseable {
  static final int MAX_CACHED = 16;
  private final Dnnl dnnl;
  private final Map<Long, Prim> cache = new LinkedHashMap<>(32, 0.75f, true);
  private boolean closed;

  DnnlSoftmax(Dnnl dnnl) {
    this.dnnl = dnnl;
  }

  /** Softmax of each of the {@code rows} rows of {@code len} floats at {@code data}, in place. */
  synchronized void apply(Pointer data, int rows, int len) {
    if (closed) {
      throw new IllegalStateException("The oneDNN softmax was used after its backend was closed");
    }
    if (rows <= 0 || len <= 0) {
      return;
    }
    long key = ((long) rows << 32) | len;
    Prim p = cache.get(key);
    if (p == null) {
      p = new Prim(rows, len);
      cache.put(key, p);
      if (cache.size() > MAX_CACHED) {
        Iterator<Map.Entry<Long, Prim>> it = cache.entrySet().iterator();
        Prim old = it.next().getValue();
        it.remove();
        old.close();
      }
    }
    p.run(data);
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

  /** One shape: the primitive and a memory whose data handle is set before each run (source and destination). */
  private final class Prim {
    final dnnl_primitive_desc pd = new dnnl_primitive_desc();
    final dnnl_primitive prim = new dnnl_primitive();
    dnnl_memory_desc md;
    dnnl_memory mem;
    final dnnl_exec_arg_t args = new dnnl_exec_arg_t(2);

    Prim(int rows, int len) {
      boolean ok = false;
      try {
        md = dnnl.md(new long[] {rows, len}, dnnl_f32, dnnl_ab);
        Dnnl.check(dnnl_softmax_forward_primitive_desc_create(pd, dnnl.engine, dnnl_forward_inference,
            dnnl_softmax_accurate, md, md, 1, null), "dnnl_softmax_forward_primitive_desc_create");
        dnnl.made();
        Dnnl.check(dnnl_primitive_create(prim, pd), "dnnl_primitive_create (softmax)");
        dnnl.made();
        mem = dnnl.memory(md, null);
        args.position(0).arg(DNNL_ARG_SRC).memory(mem);
        args.position(1).arg(DNNL_ARG_DST).memory(mem);
        args.position(0);
        ok = true;
      } finally {
        if (!ok) {
          close();
        }
      }
    }

    void run(Pointer data) {
      Dnnl.check(dnnl_memory_set_data_handle(mem, data), "dnnl_memory_set_data_handle");
      Dnnl.check(dnnl_primitive_execute(prim, dnnl.stream, 2, args), "dnnl_primitive_execute (softmax)");
      Dnnl.check(dnnl_stream_wait(dnnl.stream), "dnnl_stream_wait");
    }

    void close() {
      args.close();
      dnnl.destroy(prim);
      dnnl.destroy(pd);
      dnnl.destroy(mem);
      dnnl.destroy(md);
    }
  }
}
