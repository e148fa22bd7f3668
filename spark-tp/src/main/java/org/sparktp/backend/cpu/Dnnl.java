package org.sparktp.backend.cpu;

import static org.bytedeco.dnnl.global.dnnl.*;

import java.util.concurrent.atomic.AtomicLong;
import org.bytedeco.dnnl.dnnl_engine;
import org.bytedeco.dnnl.dnnl_stream;
import org.bytedeco.dnnl.global.dnnl;
import org.bytedeco.javacpp.Loader;

/**
 * oneDNN ({@code org.bytedeco:dnnl}, the C API) for one {@link CpuBackend}: a CPU engine and a stream,
 * and the count of every {@code dnnl_*} handle made through it (memory descriptors, memories, primitive
 * descriptors, primitives, attributes, post-ops), so that the backend's leak check covers them.
 *
 * <p>Threads: this build of oneDNN uses OpenMP ({@code libgomp}, bundled), which reads
 * {@code OMP_NUM_THREADS} once when the library loads; JavaCPP's preset exposes no call that changes it
 * afterwards. {@code bin/spark-tp} exports {@code OMP_NUM_THREADS} from {@code spark.tp.cpu.threads}, and
 * the Spark session sets {@code spark.executorEnv.OMP_NUM_THREADS} the same way; {@link #ompThreads()}
 * reports what the process got.
 */
final class Dnnl implements AutoCloseable {
  private static final Object LOCK = new Object();
  private static volatile String loadError; // null when loaded
  private static volatile boolean tried;

  final dnnl_engine engine = new dnnl_engine();
  final dnnl_stream stream = new dnnl_stream();
  private final AtomicLong handles = new AtomicLong();
  private boolean closed;

  Dnnl() {
    String why = loadError();
    if (why != null) {
      throw new UnsatisfiedLinkError(why);
    }
    check(dnnl_engine_create(engine, dnnl_cpu, 0), "dnnl_engine_create");
    try {
      check(dnnl_stream_create(stream, engine, dnnl_stream_default_flags), "dnnl_stream_create");
    } catch (RuntimeException e) {
      dnnl_engine_destroy(engine);
      throw e;
    }
  }

  /** Loads oneDNN once per JVM; null when it loaded, else why not. */
  static String loadError() {
    if (!tried) {
      synchronized (LOCK) {
        if (!tried) {
          try {
            Loader.load(dnnl.class);
            loadError = null;
          } catch (Throwable t) {
            loadError = "oneDNN (org.bytedeco:dnnl, linux-x86_64 natives) cannot be loaded: " + t;
          }
          tried = true;
        }
      }
    }
    return loadError;
  }

  /** The instruction set oneDNN uses on this CPU (after {@code ONEDNN_MAX_CPU_ISA}), e.g. {@code avx512_core_amx}. */
  static String isa() {
    if (loadError() != null) {
      return "unavailable";
    }
    int isa = dnnl_get_effective_cpu_isa();
    if ((isa & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx) {
      return "avx512_core_amx";
    }
    if ((isa & dnnl_cpu_isa_avx512_core_fp16) == dnnl_cpu_isa_avx512_core_fp16) {
      return "avx512_core_fp16";
    }
    if ((isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16) {
      return "avx512_core_bf16";
    }
    if ((isa & dnnl_cpu_isa_avx512_core) == dnnl_cpu_isa_avx512_core) {
      return "avx512_core";
    }
    if ((isa & dnnl_cpu_isa_avx2) == dnnl_cpu_isa_avx2) {
      return "avx2";
    }
    return "isa " + isa;
  }

  /** True when oneDNN has native bf16 dot products here (AVX512-BF16 or AMX). */
  static boolean hasBf16() {
    if (loadError() != null) {
      return false;
    }
    int isa = dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core_bf16) == dnnl_cpu_isa_avx512_core_bf16;
  }

  /** True when oneDNN has VNNI int8 dot products here (AVX512-VNNI, AVX-VNNI or AMX). */
  static boolean hasVnni() {
    if (loadError() != null) {
      return false;
    }
    int isa = dnnl_get_effective_cpu_isa();
    return (isa & dnnl_cpu_isa_avx512_core_vnni) == dnnl_cpu_isa_avx512_core_vnni
        || (isa & dnnl_cpu_isa_avx2_vnni) == dnnl_cpu_isa_avx2_vnni;
  }

  /** True when oneDNN runs on AMX tiles here. */
  static boolean hasAmx() {
    return loadError() == null
        && (dnnl_get_effective_cpu_isa() & dnnl_cpu_isa_avx512_core_amx) == dnnl_cpu_isa_avx512_core_amx;
  }

  private static final java.util.Map<org.sparktp.tensor.DType, Boolean> SUPPORTED =
      new java.util.concurrent.ConcurrentHashMap<>();

  /**
   * True when this CPU's oneDNN has a matmul for weights of {@code dtype} with f32 activations and output
   * (f16 needs AVX512-FP16 or AMX-FP16; bf16 runs on any AVX512 core); probed once per dtype.
   */
  static boolean supports(org.sparktp.tensor.DType dtype) {
    if (loadError() != null) {
      return false;
    }
    if (dtype == org.sparktp.tensor.DType.I8_WO) {
      return SUPPORTED.computeIfAbsent(dtype, d -> !int8Impl().startsWith("ref") && !int8Impl().startsWith("none"));
    }
    if (dtype == org.sparktp.tensor.DType.I8) {
      return SUPPORTED.computeIfAbsent(dtype, d -> !w8a8Impl().startsWith("ref") && !w8a8Impl().startsWith("none"));
    }
    return SUPPORTED.computeIfAbsent(dtype, d -> {
      try (Dnnl probe = new Dnnl()) {
        int t = DnnlLinear.type(d);
        org.bytedeco.dnnl.dnnl_memory_desc src = new org.bytedeco.dnnl.dnnl_memory_desc();
        org.bytedeco.dnnl.dnnl_memory_desc wei = new org.bytedeco.dnnl.dnnl_memory_desc();
        org.bytedeco.dnnl.dnnl_memory_desc dst = new org.bytedeco.dnnl.dnnl_memory_desc();
        org.bytedeco.dnnl.dnnl_primitive_desc pd = new org.bytedeco.dnnl.dnnl_primitive_desc();
        try {
          check(dnnl_memory_desc_create_with_tag(src, 2, new long[] {8, 64}, t, dnnl_ab), "md");
          check(dnnl_memory_desc_create_with_tag(wei, 2, new long[] {64, 64}, t, dnnl_format_tag_any), "md");
          check(dnnl_memory_desc_create_with_tag(dst, 2, new long[] {8, 64}, dnnl_f32, dnnl_ab), "md");
          return dnnl_matmul_primitive_desc_create(pd, probe.engine, src, wei, null, dst, null) == dnnl_success;
        } finally {
          if (!pd.isNull()) {
            dnnl_primitive_desc_destroy(pd);
          }
          for (org.bytedeco.dnnl.dnnl_memory_desc m : new org.bytedeco.dnnl.dnnl_memory_desc[] {src, wei, dst}) {
            if (!m.isNull()) {
              dnnl_memory_desc_destroy(m);
            }
          }
        }
      }
    });
  }

  private static volatile String int8Impl;
  private static volatile String w8a8Impl;

  /**
   * The implementation oneDNN picks here for a W8A8 matmul as {@link DnnlW8A8Linear} builds it (s8 x s8, weight
   * scales per output channel, row scales as a binary post-op, the bias as a sum post-op, 3-D); {@code none} when it
   * has none.
   * Probed once at a shape of the size a model's linear has (M 64, K 512, N 512; tiny ones get {@code gemm:jit}).
   */
  static String w8a8Impl() {
    if (loadError() != null) {
      return "none (oneDNN unavailable)";
    }
    String got = w8a8Impl;
    if (got == null) {
      try (Dnnl d = new Dnnl()) {
        org.bytedeco.dnnl.dnnl_memory_desc src = d.md(new long[] {1, 64, 512}, dnnl_s8, dnnl_abc);
        org.bytedeco.dnnl.dnnl_memory_desc wei = d.md(new long[] {1, 512, 512}, dnnl_s8, dnnl_format_tag_any);
        org.bytedeco.dnnl.dnnl_memory_desc dst = d.md(new long[] {1, 64, 512}, dnnl_f32, dnnl_abc);
        org.bytedeco.dnnl.dnnl_memory_desc rows = d.md(new long[] {1, 64, 1}, dnnl_f32, dnnl_abc);
        org.bytedeco.dnnl.dnnl_primitive_attr attr = new org.bytedeco.dnnl.dnnl_primitive_attr();
        org.bytedeco.dnnl.dnnl_post_ops po = new org.bytedeco.dnnl.dnnl_post_ops();
        org.bytedeco.dnnl.dnnl_primitive_desc pd = new org.bytedeco.dnnl.dnnl_primitive_desc();
        try {
          check(dnnl_primitive_attr_create(attr), "dnnl_primitive_attr_create");
          check(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_WEIGHTS, 1 << 2), "dnnl_primitive_attr_set_scales_mask");
          check(dnnl_post_ops_create(po), "dnnl_post_ops_create");
          check(dnnl_post_ops_append_binary(po, dnnl_binary_mul, rows), "dnnl_post_ops_append_binary");
          check(dnnl_post_ops_append_sum(po, 1f, 0, dnnl_data_type_undef), "dnnl_post_ops_append_sum");
          check(dnnl_post_ops_append_eltwise(po, dnnl_eltwise_gelu_erf, 0f, 0f), "dnnl_post_ops_append_eltwise");
          check(dnnl_primitive_attr_set_post_ops(attr, po), "dnnl_primitive_attr_set_post_ops");
          int st = dnnl_matmul_primitive_desc_create(pd, d.engine, src, wei, null, dst, attr);
          got = st == dnnl_success ? implOf(pd) : "none (" + statusName(st) + ")";
        } finally {
          if (!pd.isNull()) {
            dnnl_primitive_desc_destroy(pd);
          }
          if (!po.isNull()) {
            dnnl_post_ops_destroy(po);
          }
          if (!attr.isNull()) {
            dnnl_primitive_attr_destroy(attr);
          }
          for (org.bytedeco.dnnl.dnnl_memory_desc m : new org.bytedeco.dnnl.dnnl_memory_desc[] {src, wei, dst, rows}) {
            d.destroy(m);
          }
        }
      }
      w8a8Impl = got;
    }
    return got;
  }

  /**
   * The implementation oneDNN picks here for an int8 weight-only matmul (s8 weights with per-output-channel
   * scales, decompressed in the kernel) with f32 activations and f32 math, else with bf16 activations and bf16
   * math; {@code none} when neither exists. Probed once (M 8, K 64, N 64).
   */
  static String int8Impl() {
    if (loadError() != null) {
      return "none (oneDNN unavailable)";
    }
    String got = int8Impl;
    if (got == null) {
      String f32 = int8Probe(dnnl_f32, dnnl_fpmath_mode_strict);
      got = f32 != null && !f32.startsWith("ref") ? f32 : int8Probe(dnnl_bf16, dnnl_fpmath_mode_bf16);
      if (got == null) {
        got = f32 != null ? f32 : "none";
      }
      int8Impl = got;
    }
    return got;
  }

  private static String int8Probe(int srcType, int mode) {
    try (Dnnl probe = new Dnnl()) {
      org.bytedeco.dnnl.dnnl_memory_desc src = new org.bytedeco.dnnl.dnnl_memory_desc();
      org.bytedeco.dnnl.dnnl_memory_desc wei = new org.bytedeco.dnnl.dnnl_memory_desc();
      org.bytedeco.dnnl.dnnl_memory_desc dst = new org.bytedeco.dnnl.dnnl_memory_desc();
      org.bytedeco.dnnl.dnnl_primitive_desc pd = new org.bytedeco.dnnl.dnnl_primitive_desc();
      org.bytedeco.dnnl.dnnl_primitive_attr attr = new org.bytedeco.dnnl.dnnl_primitive_attr();
      try {
        check(dnnl_primitive_attr_create(attr), "dnnl_primitive_attr_create");
        check(dnnl_primitive_attr_set_fpmath_mode_v2(attr, mode, 1), "dnnl_primitive_attr_set_fpmath_mode_v2");
        check(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_WEIGHTS, 1 << 1), "dnnl_primitive_attr_set_scales_mask");
        check(dnnl_memory_desc_create_with_tag(src, 2, new long[] {8, 64}, srcType, dnnl_ab), "md");
        check(dnnl_memory_desc_create_with_tag(wei, 2, new long[] {64, 64}, dnnl_s8, dnnl_format_tag_any), "md");
        check(dnnl_memory_desc_create_with_tag(dst, 2, new long[] {8, 64}, dnnl_f32, dnnl_ab), "md");
        if (dnnl_matmul_primitive_desc_create(pd, probe.engine, src, wei, null, dst, attr) != dnnl_success) {
          return null;
        }
        try (org.bytedeco.javacpp.PointerPointer<org.bytedeco.javacpp.BytePointer> pp =
            new org.bytedeco.javacpp.PointerPointer<>(1)) {
          check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, pp), "dnnl_primitive_desc_query");
          return pp.getString(0);
        }
      } finally {
        if (!pd.isNull()) {
          dnnl_primitive_desc_destroy(pd);
        }
        if (!attr.isNull()) {
          dnnl_primitive_attr_destroy(attr);
        }
        for (org.bytedeco.dnnl.dnnl_memory_desc m : new org.bytedeco.dnnl.dnnl_memory_desc[] {src, wei, dst}) {
          if (!m.isNull()) {
            dnnl_memory_desc_destroy(m);
          }
        }
      }
    }
  }

  /** The kernel family name shown by explain and doctor: {@code onednn amx} or {@code onednn avx512}. */
  static String kernelName() {
    return hasAmx() ? "onednn amx" : isa().startsWith("avx512") ? "onednn avx512" : "onednn " + isa();
  }

  /** {@code OMP_NUM_THREADS} of this process (what oneDNN's OpenMP runtime uses), or null when unset. */
  static String ompThreads() {
    return System.getenv("OMP_NUM_THREADS");
  }

  /** Throws {@link DnnlException} naming the call and the status when {@code status} is not success. */
  static void check(int status, String call) {
    if (status != dnnl_success) {
      throw new DnnlException(call, status);
    }
  }

  /** Counts a handle made through this context. */
  void made() {
    handles.incrementAndGet();
  }

  /** Counts a handle destroyed. */
  void destroyed() {
    handles.decrementAndGet();
  }

  /** A plain (dense, row-major for {@code tag} {@code ab}/{@code abc}) memory descriptor, counted. */
  org.bytedeco.dnnl.dnnl_memory_desc md(long[] dims, int type, int tag) {
    org.bytedeco.dnnl.dnnl_memory_desc d = new org.bytedeco.dnnl.dnnl_memory_desc();
    check(dnnl_memory_desc_create_with_tag(d, dims.length, dims, type, tag), "dnnl_memory_desc_create_with_tag");
    made();
    return d;
  }

  /** A memory over {@code data} (null: the data handle is set before each execution), counted. */
  org.bytedeco.dnnl.dnnl_memory memory(org.bytedeco.dnnl.dnnl_memory_desc d, org.bytedeco.javacpp.Pointer data) {
    org.bytedeco.dnnl.dnnl_memory m = new org.bytedeco.dnnl.dnnl_memory();
    check(dnnl_memory_create(m, d, engine, data == null ? new org.bytedeco.javacpp.Pointer() : data),
        "dnnl_memory_create");
    made();
    return m;
  }

  /** Destroys and uncounts a descriptor once (null or already destroyed: nothing). */
  void destroy(org.bytedeco.dnnl.dnnl_memory_desc d) {
    if (d != null && !d.isNull()) {
      dnnl_memory_desc_destroy(d);
      destroyed();
      d.setNull();
    }
  }

  /** Destroys and uncounts a memory once. */
  void destroy(org.bytedeco.dnnl.dnnl_memory m) {
    if (m != null && !m.isNull()) {
      dnnl_memory_destroy(m);
      destroyed();
      m.setNull();
    }
  }

  /** Destroys and uncounts a primitive once. */
  void destroy(org.bytedeco.dnnl.dnnl_primitive p) {
    if (p != null && !p.isNull()) {
      dnnl_primitive_destroy(p);
      destroyed();
      p.setNull();
    }
  }

  /** Destroys and uncounts a primitive descriptor once. */
  void destroy(org.bytedeco.dnnl.dnnl_primitive_desc p) {
    if (p != null && !p.isNull()) {
      dnnl_primitive_desc_destroy(p);
      destroyed();
      p.setNull();
    }
  }

  /** Destroys and uncounts an attribute once. */
  void destroy(org.bytedeco.dnnl.dnnl_primitive_attr a) {
    if (a != null && !a.isNull()) {
      dnnl_primitive_attr_destroy(a);
      destroyed();
      a.setNull();
    }
  }

  /**
   * Reorders {@code data} (described by {@code from}) into the memory {@code to} of descriptor {@code toMd} (a
   * weight packed into oneDNN's layout), and waits.
   */
  void reorder(org.bytedeco.dnnl.dnnl_memory_desc from, org.bytedeco.javacpp.Pointer data,
      org.bytedeco.dnnl.dnnl_memory_desc toMd, org.bytedeco.dnnl.dnnl_memory to) {
    org.bytedeco.dnnl.dnnl_memory src = null;
    org.bytedeco.dnnl.dnnl_primitive_desc rpd = new org.bytedeco.dnnl.dnnl_primitive_desc();
    org.bytedeco.dnnl.dnnl_primitive r = new org.bytedeco.dnnl.dnnl_primitive();
    org.bytedeco.dnnl.dnnl_exec_arg_t a = new org.bytedeco.dnnl.dnnl_exec_arg_t(2);
    try {
      src = memory(from, data);
      check(dnnl_reorder_primitive_desc_create(rpd, from, engine, toMd, engine, null),
          "dnnl_reorder_primitive_desc_create");
      made();
      check(dnnl_primitive_create(r, rpd), "dnnl_primitive_create (reorder)");
      made();
      a.position(0).arg(DNNL_ARG_FROM).memory(src);
      a.position(1).arg(DNNL_ARG_TO).memory(to);
      a.position(0);
      check(dnnl_primitive_execute(r, stream, 2, a), "dnnl_primitive_execute (reorder)");
      check(dnnl_stream_wait(stream), "dnnl_stream_wait");
    } finally {
      a.close();
      destroy(r);
      destroy(rpd);
      destroy(src);
    }
  }

  /** The implementation name of a primitive descriptor ({@code brg_matmul:avx512_core_vnni}, ...). */
  static String implOf(org.bytedeco.dnnl.dnnl_primitive_desc pd) {
    try (org.bytedeco.javacpp.PointerPointer<org.bytedeco.javacpp.BytePointer> pp =
        new org.bytedeco.javacpp.PointerPointer<>(1)) {
      check(dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, pp), "dnnl_primitive_desc_query");
      return pp.getString(0);
    }
  }

  /** Handles made and not yet destroyed. */
  long liveHandles() {
    return handles.get();
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    int s1 = dnnl_stream_destroy(stream);
    int s2 = dnnl_engine_destroy(engine);
    check(s1, "dnnl_stream_destroy");
    check(s2, "dnnl_engine_destroy");
  }

  /** A oneDNN call that returned an error status. */
  static final class DnnlException extends RuntimeException {
    private static final long serialVersionUID = 1L;
    final int status;

    DnnlException(String call, int status) {
      super(call + " failed: " + statusName(status) + " (" + status + ")");
      this.status = status;
    }
  }

  static String statusName(int s) {
    return switch (s) {
      case 0 -> "dnnl_success";
      case 1 -> "dnnl_out_of_memory";
      case 2 -> "dnnl_invalid_arguments";
      case 3 -> "dnnl_unimplemented";
      case 4 -> "dnnl_last_impl_reached";
      case 5 -> "dnnl_runtime_error";
      case 6 -> "dnnl_not_required";
      default -> "dnnl status";
    };
  }
}
