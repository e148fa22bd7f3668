package org.sparktp.backend.cpu;

import static org.bytedeco.dnnl.global.dnnl.*;
import static org.sparktp.backend.cpu.Dnnl.check;

import org.bytedeco.dnnl.dnnl_exec_arg_t;
import org.bytedeco.dnnl.dnnl_memory;
import org.bytedeco.dnnl.dnnl_memory_desc;
import org.bytedeco.dnnl.dnnl_post_ops;
import org.bytedeco.dnnl.dnnl_primitive;
import org.bytedeco.dnnl.dnnl_primitive_attr;
import org.bytedeco.dnnl.dnnl_primitive_desc;
import org.bytedeco.javacpp.BytePointer;
import org.sparktp.backend.Activation;
import org.sparktp.tensor.Int8Quant;

/**
 * <b>W8A8</b> int8 linear ({@code spark.tp.dtype=int8}, dynamic quantization): {@code y = act(s_x s_w (q_x q_w^T) + b)}.
 * The weight {@code W [N, K]} (PyTorch's layout, any float type) is quantized once, here, per output channel
 * ({@code q_w} s8, {@code s_w [N]} f32, {@link Int8Quant}) and prepacked into oneDNN's layout; at every call the
 * f32 activation {@code x [M, K]} is quantized per row (token), on the fly: {@code s_x[m] = max_k |x[m, k]| / 127},
 * {@code q_x = rint(x / s_x)} in {@code [-127, 127]} ({@link Int8Quant#quantizeActivations}). The matmul multiplies s8
 * by s8 with s32 sums (VNNI {@code vpdpbusd} on AVX512/AVX10 cores, AMX-INT8 tiles where the CPU has them; oneDNN
 * picks the brgemm kernel), and its epilogue, fused in the kernel, does the rest in f32: the per-channel weight
 * scales ({@code DNNL_ARG_WEIGHTS} scales, mask on N), the per-row activation scales (a binary {@code mul} post-op
 * with a {@code [1, M, 1]} tensor), the bias (a {@code sum} post-op: the output is filled with the bias rows
 * before the call) and the activation (eltwise).
 *
 * <p>Why this shape of epilogue (oneDNN 3.11, measured on AMD Zen 5, AVX512-VNNI): its brgemm matmul takes source
 * scales only for the whole tensor (a per-row source scale mask, or groups of {@code [1, K]}, fall back to
 * {@code ref_int8}), and on a 2-D output it refuses a {@code [M, 1]} binary operand the same way; written as
 * {@code [1, M, K] x [1, K, N]} the {@code [1, M, 1]} operand is a broadcast it takes, but then a {@code [1, 1, N]}
 * binary {@code add} of the bias is not, and the {@code bias} argument is added before the post-ops, i.e. before
 * the row scale. Either way oneDNN falls back to {@code gemm:jit}, which ran at 97 GFLOP/s against brgemm's
 * 169 (M 512, K 4096, N 4096, one thread); the {@code sum} post-op keeps brgemm for one extra write of the
 * output.
 *
 * <p>Primitives are cached per {@code (M, with bias)}, at most {@link #MAX_CACHED}, each with its s8
 * source buffer ({@code M K} bytes) and row scales; every handle is counted by the backend's {@link Dnnl} context
 * and destroyed once, by {@link #close()} or on eviction.
 */
final class DnnlW8A8Linear extends DnnlMatmul<DnnlW8A8Linear.Prim> {
  private static final int POST_OP_ARG = DNNL_ARG_ATTR_MULTIPLE_POST_OP_BASE;

  private final CpuTensor scales; // [1, n] f32, one per output channel
  private final dnnl_memory_desc packedMd = new dnnl_memory_desc();
  private final long packedBytes;
  private final BytePointer packed;
  private final dnnl_memory weightMem;
  private final dnnl_memory_desc scalesMd; // [n]
  private final dnnl_memory scalesMem;
  private final String impl;

  /** One matmul for one M: its primitive, its s8 source and row-scale buffers, and its arguments. */
  final class Prim implements DnnlMatmul.Prim {
    final int m;
    dnnl_primitive_desc pd;
    dnnl_primitive prim;
    dnnl_memory src;
    dnnl_memory dst;
    dnnl_memory rowScalesMem;
    final BytePointer q; // [m, k] s8
    final BytePointer rowScales; // [m] f32
    final dnnl_exec_arg_t args;
    final int nargs;
    final String impl;

    final boolean withBias;

    Prim(int m, boolean withBias) {
      this.m = m;
      this.withBias = withBias;
      boolean ok = false;
      dnnl_memory_desc srcMd = null;
      dnnl_memory_desc dstMd = null;
      dnnl_memory_desc rowMd = null;
      q = new BytePointer(Math.max(1L, (long) m * k));
      rowScales = new BytePointer(Math.max(4L, 4L * m));
      nargs = 5;
      args = new dnnl_exec_arg_t(nargs);
      try {
        if (q.isNull() || rowScales.isNull()) {
          throw new OutOfMemoryError("Cannot allocate " + ((long) m * k) + " bytes for " + m + " quantized rows");
        }
        backend.tracked((long) m * k + 4L * m);
        srcMd = dnnl.md(new long[] {1, m, k}, dnnl_s8, dnnl_abc);
        dstMd = dnnl.md(new long[] {1, m, n}, dnnl_f32, dnnl_abc);
        rowMd = dnnl.md(new long[] {1, m, 1}, dnnl_f32, dnnl_abc);
        pd = create(srcMd, dstMd, rowMd, withBias);
        impl = Dnnl.implOf(pd);
        prim = new dnnl_primitive();
        check(dnnl_primitive_create(prim, pd), "dnnl_primitive_create (matmul)");
        dnnl.made();
        src = dnnl.memory(srcMd, q);
        dst = dnnl.memory(dstMd, null);
        rowScalesMem = dnnl.memory(rowMd, rowScales);
        args.position(0).arg(DNNL_ARG_SRC).memory(src);
        args.position(1).arg(DNNL_ARG_WEIGHTS).memory(weightMem);
        args.position(2).arg(DNNL_ARG_DST).memory(dst);
        args.position(3).arg(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS).memory(scalesMem);
        args.position(4).arg(POST_OP_ARG | DNNL_ARG_SRC_1).memory(rowScalesMem);
        args.position(0);
        ok = true;
      } finally {
        dnnl.destroy(srcMd);
        dnnl.destroy(dstMd);
        dnnl.destroy(rowMd);
        if (!ok) {
          close();
        }
      }
    }

    @Override
    public void run(CpuTensor x, CpuTensor y) {
      Int8Quant.quantizeActivations(x.buffer(), m, k, q.position(0).limit((long) m * k).asByteBuffer(),
          rowScales.position(0).limit(4L * m).asByteBuffer().order(java.nio.ByteOrder.nativeOrder()).asFloatBuffer());
      if (withBias) { // the sum post-op adds what the output holds: the bias, in every row
        BytePointer to = y.data();
        BytePointer from = bias.data();
        long rowBytes = 4L * n;
        long base = to.position();
        for (int r = 0; r < m; r++) {
          org.bytedeco.javacpp.Pointer.memcpy(to.position(base + r * rowBytes), from, rowBytes);
        }
        to.position(base);
      }
      check(dnnl_memory_set_data_handle(dst, y.data()), "dnnl_memory_set_data_handle");
      check(dnnl_primitive_execute(prim, dnnl.stream, nargs, args), "dnnl_primitive_execute (matmul)");
      check(dnnl_stream_wait(dnnl.stream), "dnnl_stream_wait");
    }

    @Override
    public void close() {
      dnnl.destroy(src);
      dnnl.destroy(dst);
      dnnl.destroy(rowScalesMem);
      dnnl.destroy(prim);
      dnnl.destroy(pd);
      args.close();
      if (!q.isNull() && !rowScales.isNull()) {
        backend.tracked(-((long) m * k + 4L * m));
      }
      q.close();
      rowScales.close();
    }
  }

  /**
   * The largest weight level: 127, or 63 where oneDNN has no VNNI: there it multiplies u8 x s8 pairs into saturating
   * s16 sums ({@code vpmaddubsw}), and 7-bit weights keep every pair sum exact (as FBGEMM's and ONNX Runtime's
   * reduced range do).
   */
  static int weightLevels() {
    return Dnnl.hasVnni() ? 127 : 63;
  }

  /**
   * Takes ownership of {@code weight} ({@code [n, k]}, f32/bf16/f16; quantized, packed, then closed) and
   * {@code bias} ({@code [1, n]} f32 or null, kept). On a failure the caller still owns both.
   */
  DnnlW8A8Linear(CpuBackend backend, Dnnl dnnl, CpuTensor weight, CpuTensor bias, Activation act, int referenceRows) {
    super("oneDNN int8 linear", backend, dnnl, weight, bias, act);
    boolean ok = false;
    BytePointer quantized = null;
    BytePointer mem = null;
    long size = 0;
    CpuTensor sc = null;
    dnnl_memory_desc sMd = null;
    dnnl_memory sMem = null;
    dnnl_memory wMem = null;
    String got = null;
    try {
      sc = backend.empty(1, n);
      quantized = DnnlLinear.quantize(weight, sc, weightLevels());
      sMd = dnnl.md(new long[] {n}, dnnl_f32, dnnl_a);
      sMem = dnnl.memory(sMd, sc.data());
      this.scalesMd = sMd;
      // the weight layout oneDNN prefers for a typical M, asked with the whole epilogue
      int rows = Math.max(1, referenceRows);
      dnnl_memory_desc srcMd = dnnl.md(new long[] {1, rows, k}, dnnl_s8, dnnl_abc);
      dnnl_memory_desc dstMd = dnnl.md(new long[] {1, rows, n}, dnnl_f32, dnnl_abc);
      dnnl_memory_desc rowMd = dnnl.md(new long[] {1, rows, 1}, dnnl_f32, dnnl_abc);
      dnnl_primitive_desc pd = null;
      try {
        pd = create(srcMd, dstMd, rowMd, bias != null);
        got = Dnnl.implOf(pd);
        check(dnnl_memory_desc_clone(packedMd, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)),
            "dnnl_memory_desc_clone");
        dnnl.made();
      } finally {
        dnnl.destroy(pd);
        dnnl.destroy(srcMd);
        dnnl.destroy(dstMd);
        dnnl.destroy(rowMd);
      }
      size = dnnl_memory_desc_get_size(packedMd);
      mem = new BytePointer(Math.max(1L, size));
      if (mem.isNull()) {
        throw new OutOfMemoryError("Cannot allocate " + size + " bytes for a packed [" + n + ", " + k + "] weight");
      }
      backend.tracked(size);
      wMem = dnnl.memory(packedMd, mem);
      // W [n, k] row-major is W^T [1, k, n] in layout acb
      dnnl_memory_desc user = dnnl.md(new long[] {1, k, n}, dnnl_s8, dnnl_acb);
      try {
        dnnl.reorder(user, quantized, packedMd, wMem);
      } finally {
        dnnl.destroy(user);
      }
      ok = true;
    } finally {
      if (quantized != null) {
        quantized.close();
      }
      if (!ok) {
        dnnl.destroy(wMem);
        if (mem != null) {
          mem.close();
          backend.tracked(-size);
        }
        dnnl.destroy(sMem);
        dnnl.destroy(sMd);
        dnnl.destroy(packedMd);
        if (sc != null) {
          sc.close();
        }
      }
    }
    this.scales = sc;
    this.scalesMem = sMem;
    this.weightMem = wMem;
    this.packed = mem;
    this.packedBytes = size;
    this.impl = got;
    weight.close();
  }

  /** The matmul primitive descriptor for these descriptors with the whole epilogue (counted; the caller destroys). */
  private dnnl_primitive_desc create(dnnl_memory_desc srcMd, dnnl_memory_desc dstMd, dnnl_memory_desc rowMd,
      boolean withBias) {
    dnnl_primitive_attr attr = new dnnl_primitive_attr();
    dnnl_post_ops po = new dnnl_post_ops();
    dnnl_memory_desc wAny = null;
    check(dnnl_primitive_attr_create(attr), "dnnl_primitive_attr_create");
    dnnl.made();
    try {
      check(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_WEIGHTS, 1 << 2), "dnnl_primitive_attr_set_scales_mask");
      check(dnnl_post_ops_create(po), "dnnl_post_ops_create");
      dnnl.made();
      check(dnnl_post_ops_append_binary(po, dnnl_binary_mul, rowMd), "dnnl_post_ops_append_binary (row scales)");
      if (withBias) {
        check(dnnl_post_ops_append_sum(po, 1f, 0, dnnl_data_type_undef), "dnnl_post_ops_append_sum (bias)");
      }
      int alg = DnnlLinear.eltwise(epilogue);
      if (alg >= 0) {
        check(dnnl_post_ops_append_eltwise(po, alg, epilogue == Activation.SILU ? 1f : 0f, 0f),
            "dnnl_post_ops_append_eltwise");
      }
      check(dnnl_primitive_attr_set_post_ops(attr, po), "dnnl_primitive_attr_set_post_ops");
      wAny = packedMd.isNull() ? dnnl.md(new long[] {1, k, n}, dnnl_s8, dnnl_format_tag_any) : null;
      dnnl_primitive_desc pd = new dnnl_primitive_desc();
      check(dnnl_matmul_primitive_desc_create(pd, dnnl.engine, srcMd, wAny != null ? wAny : packedMd, null, dstMd,
          attr), "dnnl_matmul_primitive_desc_create (int8 W8A8)");
      dnnl.made();
      return pd;
    } finally {
      dnnl.destroy(wAny);
      if (!po.isNull()) {
        dnnl_post_ops_destroy(po); // the attribute keeps its own copy
        dnnl.destroyed();
      }
      dnnl.destroy(attr);
    }
  }

  @Override
  Prim newPrim(int m, boolean withBias) {
    return new Prim(m, withBias);
  }

  @Override
  public long bytes() {
    return packedBytes + scales.bytes() + (bias == null ? 0 : bias.bytes());
  }

  @Override
  public String kernel() {
    return "onednn " + impl + " (int8 W8A8: s8 activations per row, s8 weights per channel)";
  }

  @Override
  void release() {
    dnnl.destroy(weightMem);
    dnnl.destroy(scalesMem);
    dnnl.destroy(scalesMd);
    dnnl.destroy(packedMd);
    scales.close();
    packed.close();
    backend.tracked(-packedBytes);
  }
}
