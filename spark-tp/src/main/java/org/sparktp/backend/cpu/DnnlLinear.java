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
import org.bytedeco.javacpp.Pointer;
import org.sparktp.backend.Activation;
import org.sparktp.tensor.DType;

/**
 * {@code y = act(x W^T + b)} through a oneDNN matmul: {@code x [M, K]} f32, {@code W [N, K]} (PyTorch's
 * layout) stored in {@code compute} (bf16, f16 or f32) and <b>prepacked once</b>, here, into the layout
 * oneDNN prefers ({@code format_tag any} + one reorder), {@code b} f32, {@code y} f32 with fp32
 * accumulation. The bias and the activation (erf/tanh GeLU, ReLU, SiLU = swish(1), tanh, sigmoid) are
 * post-ops of the matmul. With bf16/f16 weights the f32 activation is converted to {@code compute} by a
 * reorder into a scratch buffer first: oneDNN 3.11's in-kernel conversion ({@code fpmath_mode} with f32
 * activations) computes wrong sums here for K above 512, see the constructor.
 *
 * <p><b>int8 weight-only</b> ({@code compute = I8_WO}, {@code spark.tp.dtype=int8-wo}; W8A8 is
 * {@link DnnlW8A8Linear}): the weight (any float type) is quantized here, once, per
 * output channel ({@link org.sparktp.tensor.Int8Quant}: one f32 scale per row of {@code W}), packed as
 * {@code s8} and kept with its scales ({@code N} floats); the matmul decompresses it inside the kernel
 * ("weights decompression": scales on {@code DNNL_ARG_WEIGHTS} with the N mask, {@code fpmath_mode} with
 * {@code apply_to_int}): f32 activations with f32 math (measured brgemm {@code brg_matmul:avx512_core} on
 * AVX512 cores), or, where that reaches an AMX kernel the f32 one does not, activations converted to bf16
 * first with bf16 math. Bias and activation are post-ops applied after the scales, as above.
 *
 * <p>Primitives are cached per {@code (M, with bias)} (M varies per micro-batch: the batch size and the
 * last, shorter batch), at most {@link #MAX_CACHED} of them; a static M lets oneDNN pick its brgemm
 * kernels (AMX where the CPU has it), which runtime dimensions do not. Every handle is counted by the
 * backend's {@link Dnnl} context and destroyed once, by {@link #close()} or on eviction.
 */
final class DnnlLinear extends DnnlMatmul<DnnlLinear.Prim> {
  /** Tests only: forces the activation conversion path (true) or the in-kernel one (false); null = choose. */
  static volatile Boolean forceConvert;

  private final DType compute;
  private final dnnl_memory_desc packedMd = new dnnl_memory_desc();
  private final long packedBytes;
  private final BytePointer packed;
  private final dnnl_memory weightMem = new dnnl_memory();
  private dnnl_memory biasMem;
  private dnnl_memory_desc biasMd;
  private CpuTensor scales; // int8: [1, n] f32, one per output feature; else null
  private dnnl_memory_desc scalesMd;
  private dnnl_memory scalesMem;
  private boolean convertFirst; // activations converted to `compute` by a reorder before the matmul
  private String impl = "";

  /** One matmul for one M: its primitive and the memories whose data handles are set per call. */
  final class Prim implements DnnlMatmul.Prim {
    final dnnl_primitive_desc pd = new dnnl_primitive_desc();
    final dnnl_primitive prim = new dnnl_primitive();
    final dnnl_memory src = new dnnl_memory();
    final dnnl_memory dst = new dnnl_memory();
    final dnnl_exec_arg_t args;
    final int nargs;
    final String impl;
    final int scalesArg; // index of the weight scales in args, or -1
    // the fallback that converts x to `compute` before the matmul
    dnnl_primitive convert;
    dnnl_memory convertFrom;
    BytePointer scratch;
    dnnl_exec_arg_t convertArgs;

    Prim(int m, boolean withBias) {
      boolean ok = false;
      dnnl_memory_desc srcF32 = md(m, k, dnnl_f32);
      dnnl_memory_desc dstMd = null;
      dnnl_memory_desc srcLow = null;
      try {
        dstMd = md(m, n, dnnl_f32);
        String got;
        if (convertFirst) {
          srcLow = md(m, k, lowType());
          got = create(srcLow, dstMd, withBias, false);
          scratch = new BytePointer(Math.max(1L, (long) m * k * (compute == DType.I8_WO ? 2 : compute.size())));
          dnnl_primitive_desc rpd = new dnnl_primitive_desc();
          check(dnnl_reorder_primitive_desc_create(rpd, srcF32, dnnl.engine, srcLow, dnnl.engine, null),
              "dnnl_reorder_primitive_desc_create");
          try {
            convert = new dnnl_primitive();
            check(dnnl_primitive_create(convert, rpd), "dnnl_primitive_create (reorder)");
            dnnl.made();
          } finally {
            dnnl_primitive_desc_destroy(rpd);
          }
          convertFrom = memory(srcF32, null);
          dnnl_memory convertTo = memory(srcLow, scratch);
          check(dnnl_memory_set_data_handle(src, scratch), "dnnl_memory_set_data_handle");
          convertArgs = new dnnl_exec_arg_t(2);
          convertArgs.position(0).arg(DNNL_ARG_FROM).memory(convertFrom);
          convertArgs.position(1).arg(DNNL_ARG_TO).memory(convertTo);
          convertArgs.position(0);
          toDestroy = convertTo; // destroyed with src
        } else {
          got = create(srcF32, dstMd, withBias, true);
        }
        this.impl = got;
        nargs = (withBias ? 4 : 3) + (scalesMem != null ? 1 : 0);
        args = new dnnl_exec_arg_t(nargs);
        args.position(0).arg(DNNL_ARG_SRC).memory(src);
        args.position(1).arg(DNNL_ARG_WEIGHTS).memory(weightMem);
        args.position(2).arg(DNNL_ARG_DST).memory(dst);
        if (withBias) {
          args.position(3).arg(DNNL_ARG_BIAS).memory(biasMem);
        }
        scalesArg = scalesMem != null ? nargs - 1 : -1;
        if (scalesMem != null) {
          args.position(scalesArg).arg(DNNL_ARG_ATTR_SCALES | DNNL_ARG_WEIGHTS).memory(scalesMem);
        }
        args.position(0);
        ok = true;
      } finally {
        destroyMd(srcF32);
        destroyMd(dstMd);
        destroyMd(srcLow);
        if (!ok) {
          close();
        }
      }
    }

    private dnnl_memory toDestroy;

    private String create(dnnl_memory_desc srcMd, dnnl_memory_desc dstMd, boolean withBias, boolean mixed) {
      dnnl_primitive_attr attr = attr(mixed);
      try {
        check(dnnl_matmul_primitive_desc_create(pd, dnnl.engine, srcMd, packedMd, withBias ? biasMd : null, dstMd,
            attr), "dnnl_matmul_primitive_desc_create");
        dnnl.made();
      } finally {
        destroyAttr(attr);
      }
      String got = implOf(pd);
      check(dnnl_primitive_create(prim, pd), "dnnl_primitive_create (matmul)");
      dnnl.made();
      memoryInto(src, srcMd, null);
      memoryInto(dst, dstMd, null);
      return got;
    }

    private void destroyPd() {
      if (!pd.isNull()) {
        dnnl_primitive_desc_destroy(pd);
        dnnl.destroyed();
        pd.setNull();
      }
    }

    @Override
    public void run(CpuTensor x, CpuTensor y) {
      if (convert != null) {
        check(dnnl_memory_set_data_handle(convertFrom, x.data()), "dnnl_memory_set_data_handle");
        check(dnnl_primitive_execute(convert, dnnl.stream, 2, convertArgs), "dnnl_primitive_execute (reorder)");
      } else {
        check(dnnl_memory_set_data_handle(src, x.data()), "dnnl_memory_set_data_handle");
      }
      check(dnnl_memory_set_data_handle(dst, y.data()), "dnnl_memory_set_data_handle");
      check(dnnl_primitive_execute(prim, dnnl.stream, nargs, args), "dnnl_primitive_execute (matmul)");
      check(dnnl_stream_wait(dnnl.stream), "dnnl_stream_wait");
    }

    @Override
    public void close() {
      destroyMemory(src);
      destroyMemory(dst);
      destroyMemory(convertFrom);
      destroyMemory(toDestroy);
      if (!prim.isNull()) {
        dnnl_primitive_destroy(prim);
        dnnl.destroyed();
        prim.setNull();
      }
      if (convert != null && !convert.isNull()) {
        dnnl_primitive_destroy(convert);
        dnnl.destroyed();
        convert.setNull();
      }
      destroyPd();
      if (args != null) {
        args.close();
      }
      if (convertArgs != null) {
        convertArgs.close();
      }
      if (scratch != null) {
        scratch.close();
      }
    }
  }

  /**
   * Takes ownership of {@code weight} ({@code [n, k]}, f32/bf16/f16; packed into {@code compute} and then
   * closed; {@code compute = I8}: quantized per output channel first) and {@code bias} ({@code [1, n]} f32 or
   * null, kept).
   */
  DnnlLinear(CpuBackend backend, Dnnl dnnl, CpuTensor weight, CpuTensor bias, Activation epilogue, DType compute,
      int referenceRows) {
    super("oneDNN linear", backend, dnnl, weight, bias, epilogue);
    this.compute = compute;
    boolean ok = false;
    BytePointer mem = null;
    BytePointer quantized = null;
    long size = 0;
    try {
      if (bias != null) {
        biasMd = md(1, n, dnnl_f32);
        biasMem = memory(biasMd, bias.data());
      }
      if (compute == DType.I8_WO) {
        scales = backend.empty(1, n);
        quantized = quantize(weight, scales);
        scalesMd = new dnnl_memory_desc();
        check(dnnl_memory_desc_create_with_tag(scalesMd, 1, new long[] {n}, dnnl_f32, dnnl_a),
            "dnnl_memory_desc_create_with_tag");
        dnnl.made();
        scalesMem = memory(scalesMd, scales.data());
      }
      // ask oneDNN for its preferred weight layout for a typical M. bf16/f16 weights: the f32 activations are
      // converted by a reorder into bf16/f16 first. The in-kernel conversion (fpmath_mode bf16/f16 with f32
      // activations), though faster, gives wrong sums in oneDNN 3.11 here once K > 512 (measured relative
      // errors 0.4 at K 544 to 1.3 at K 4096, brg_matmul:avx512_core, with and without ONEDNN_MAX_CPU_ISA), so
      // it is used only when a test forces it. int8 weights: f32 activations with f32 math (correct at every K
      // measured, and faster on AVX512 cores), unless bf16 activations reach an AMX kernel the f32 path does
      // not, or the f32 path is oneDNN's reference code
      int rows = Math.max(1, referenceRows);
      if (compute == DType.I8_WO) {
        String mixed = packedLayout(rows, true, null);
        String low;
        try {
          low = packedLayout(rows, false, null);
        } catch (Dnnl.DnnlException e) {
          if (e.status != dnnl_unimplemented) {
            throw e;
          }
          low = "ref (unimplemented)"; // int8 with bf16 activations needs AVX512-BF16
        }
        convertFirst = mixed.startsWith("ref") && !low.startsWith("ref")
            || (low.contains("amx") && !mixed.contains("amx"));
      } else if (compute != DType.F32) {
        convertFirst = true;
      }
      Boolean f = forceConvert;
      if (f != null && compute != DType.F32) {
        convertFirst = f;
      }
      packedLayout(rows, !convertFirst, packedMd);
      size = dnnl_memory_desc_get_size(packedMd);
      mem = new BytePointer(Math.max(1L, size));
      if (mem.isNull()) {
        throw new OutOfMemoryError("Cannot allocate " + size + " bytes for a packed [" + n + ", " + k + "] weight");
      }
      backend.tracked(size);
      memoryInto(weightMem, packedMd, mem);
      if (quantized != null) {
        reorderWeight(quantized, dnnl_s8);
      } else {
        reorderWeight(weight.data(), type(weight.dtype()));
      }
      ok = true;
    } finally {
      if (quantized != null) {
        quantized.close();
      }
      if (!ok) {
        if (mem != null) {
          destroyMemory(weightMem);
          mem.close();
          backend.tracked(-size);
        }
        destroyMemory(biasMem);
        destroyMd(biasMd);
        destroyMemory(scalesMem);
        destroyMd(scalesMd);
        if (scales != null) {
          scales.close();
        }
        destroyMd(packedMd);
        // the caller still owns weight and bias on failure
      }
    }
    this.packed = mem;
    this.packedBytes = size;
    weight.close();
    try {
      this.impl = prim(Math.max(1, referenceRows), bias != null).impl;
    } catch (RuntimeException e) {
      close();
      throw e;
    }
  }

  /**
   * Creates the matmul for {@code rows} rows with weights in {@code format_tag any}, f32 activations
   * ({@code mixed}) or activations of the compute type; returns its implementation name and, when
   * {@code into} is not null, clones its weight layout into it.
   */
  private String packedLayout(int rows, boolean mixed, dnnl_memory_desc into) {
    dnnl_memory_desc any = new dnnl_memory_desc();
    dnnl_memory_desc srcMd = md(rows, k, mixed ? dnnl_f32 : lowType());
    dnnl_memory_desc dstMd = md(rows, n, dnnl_f32);
    dnnl_primitive_desc pd = new dnnl_primitive_desc();
    dnnl_primitive_attr attr = attr(mixed);
    try {
      check(dnnl_memory_desc_create_with_tag(any, 2, new long[] {k, n}, type(compute), dnnl_format_tag_any),
          "dnnl_memory_desc_create_with_tag");
      dnnl.made();
      check(dnnl_matmul_primitive_desc_create(pd, dnnl.engine, srcMd, any, biasMd, dstMd, attr),
          "dnnl_matmul_primitive_desc_create");
      dnnl.made();
      if (into != null) {
        check(dnnl_memory_desc_clone(into, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0)),
            "dnnl_memory_desc_clone");
        dnnl.made();
      }
      return implOf(pd);
    } finally {
      if (!pd.isNull()) {
        dnnl_primitive_desc_destroy(pd);
        dnnl.destroyed();
      }
      destroyAttr(attr);
      destroyMd(any);
      destroyMd(srcMd);
      destroyMd(dstMd);
    }
  }

  /**
   * Quantizes {@code weight [n, k]} (any float type) per output channel into a new row-major s8 buffer (the
   * caller closes it), writing the row scales into {@code into [1, n]}.
   */
  static BytePointer quantize(CpuTensor weight, CpuTensor into) {
    return quantize(weight, into, 127);
  }

  /** As {@link #quantize(CpuTensor, CpuTensor)} with values in {@code [-qmax, qmax]}. */
  static BytePointer quantize(CpuTensor weight, CpuTensor into, int qmax) {
    int n = weight.rows();
    int k = weight.cols();
    long bytes = (long) n * k;
    BytePointer q = new BytePointer(Math.max(1L, bytes));
    if (q.isNull()) {
      throw new OutOfMemoryError("Cannot allocate " + bytes + " bytes to quantize a [" + n + ", " + k + "] weight");
    }
    try {
      float[] row = new float[k];
      byte[] qr = new byte[k];
      java.nio.FloatBuffer sc = into.buffer();
      DType from = weight.dtype();
      java.nio.ByteBuffer wide = from == DType.F32 ? null
          : java.nio.ByteBuffer.allocate(k * 4).order(java.nio.ByteOrder.nativeOrder());
      for (int r = 0; r < n; r++) {
        long off = (long) r * k * from.size();
        java.nio.ByteBuffer src = weight.byteBuffer(off, (long) k * from.size());
        if (wide == null) {
          src.asFloatBuffer().get(row);
        } else {
          wide.clear();
          DType.F32.convertFrom(from, src, wide, k);
          wide.flip();
          wide.asFloatBuffer().get(row);
        }
        sc.put(r, org.sparktp.tensor.Int8Quant.quantizeRow(row, k, qr, 0,
            "The [" + n + ", " + k + "] weight's row " + r, qmax));
        q.position((long) r * k).put(qr, 0, k);
      }
      q.position(0);
      return q;
    } catch (RuntimeException e) {
      q.close();
      throw e;
    }
  }

  /** The activation type of the convert-first path: the compute type, bf16 for int8 weights. */
  private int lowType() {
    return compute == DType.I8_WO ? dnnl_bf16 : type(compute);
  }

  /** Copies a weight {@code [n, k]} (row-major, i.e. {@code W^T} as {@code [k, n]} in layout {@code ba}) into the packed layout. */
  private void reorderWeight(Pointer data, int dataType) {
    dnnl_memory_desc user = md(k, n, dataType, dnnl_ba);
    try {
      dnnl.reorder(user, data, packedMd, weightMem);
    } finally {
      destroyMd(user);
    }
  }

  @Override
  Prim newPrim(int m, boolean withBias) {
    return new Prim(m, withBias);
  }

  @Override
  public long bytes() {
    return packedBytes + (scales == null ? 0 : scales.bytes()) + (bias == null ? 0 : bias.bytes());
  }

  @Override
  public String kernel() {
    return "onednn " + impl + (compute == DType.I8_WO ? " (int8 weights, " + (convertFirst ? "bf16" : "f32")
        + " activations)" : convertFirst ? " (activations converted first)" : "");
  }

  @Override
  void release() {
    destroyMemory(weightMem);
    destroyMemory(biasMem);
    destroyMd(biasMd);
    destroyMemory(scalesMem);
    destroyMd(scalesMd);
    if (scales != null) {
      scales.close();
    }
    destroyMd(packedMd);
    if (packed != null) {
      packed.close();
      backend.tracked(-packedBytes);
    }
  }

  // --- helpers; each counts what it makes and destroys ---

  private dnnl_primitive_attr attr(boolean mixedInput) {
    dnnl_primitive_attr attr = new dnnl_primitive_attr();
    dnnl_post_ops po = new dnnl_post_ops();
    check(dnnl_primitive_attr_create(attr), "dnnl_primitive_attr_create");
    dnnl.made();
    try {
      if (compute == DType.I8_WO) {
        // weights decompression: s8 weights widened in the kernel (f32 math for f32 activations, bf16 math for
        // bf16 ones), scaled per output feature (the N dimension of W^T [K, N]: mask bit 1)
        check(dnnl_primitive_attr_set_fpmath_mode_v2(attr, mixedInput ? dnnl_fpmath_mode_strict
            : dnnl_fpmath_mode_bf16, 1), "dnnl_primitive_attr_set_fpmath_mode_v2");
        check(dnnl_primitive_attr_set_scales_mask(attr, DNNL_ARG_WEIGHTS, 1 << 1), "dnnl_primitive_attr_set_scales_mask");
      } else if (mixedInput && compute != DType.F32) {
        check(dnnl_primitive_attr_set_fpmath_mode(attr, compute == DType.BF16 ? dnnl_fpmath_mode_bf16
            : dnnl_fpmath_mode_f16), "dnnl_primitive_attr_set_fpmath_mode");
      }
      int alg = eltwise(epilogue);
      if (alg >= 0) {
        check(dnnl_post_ops_create(po), "dnnl_post_ops_create");
        dnnl.made();
        check(dnnl_post_ops_append_eltwise(po, alg, epilogue == Activation.SILU ? 1f : 0f, 0f),
            "dnnl_post_ops_append_eltwise");
        check(dnnl_primitive_attr_set_post_ops(attr, po), "dnnl_primitive_attr_set_post_ops");
      }
      return attr;
    } catch (RuntimeException e) {
      destroyAttr(attr);
      throw e;
    } finally {
      if (!po.isNull()) {
        dnnl_post_ops_destroy(po); // the attribute keeps its own copy
        dnnl.destroyed();
      }
    }
  }

  private void destroyAttr(dnnl_primitive_attr attr) {
    dnnl.destroy(attr);
  }

  /** The oneDNN eltwise algorithm of an activation, or -1 when it has none (identity, softmax). */
  static int eltwise(Activation a) {
    return switch (a) {
      case GELU -> dnnl_eltwise_gelu_erf;
      case GELU_TANH -> dnnl_eltwise_gelu_tanh;
      case RELU -> dnnl_eltwise_relu;
      case SILU -> dnnl_eltwise_swish;
      case TANH -> dnnl_eltwise_tanh;
      case SIGMOID -> dnnl_eltwise_logistic;
      default -> -1;
    };
  }

  static int type(DType t) {
    return switch (t) {
      case F32 -> dnnl_f32;
      case BF16 -> dnnl_bf16;
      case F16 -> dnnl_f16;
      case I8, I8_WO -> dnnl_s8;
      default -> throw new IllegalArgumentException("oneDNN matmuls take f32, bf16, f16 or int8 weights, not " + t.id());
    };
  }

  private dnnl_memory_desc md(long rows, long cols, int type) {
    return md(rows, cols, type, dnnl_ab);
  }

  private dnnl_memory_desc md(long rows, long cols, int type, int tag) {
    return dnnl.md(new long[] {rows, cols}, type, tag);
  }

  private void destroyMd(dnnl_memory_desc d) {
    dnnl.destroy(d);
  }

  private dnnl_memory memory(dnnl_memory_desc d, Pointer data) {
    return dnnl.memory(d, data);
  }

  private void memoryInto(dnnl_memory m, dnnl_memory_desc d, Pointer data) {
    // DNNL_MEMORY_NONE: the data handle is set before each execution
    check(dnnl_memory_create(m, d, dnnl.engine, data == null ? new Pointer() : data), "dnnl_memory_create");
    dnnl.made();
  }

  private void destroyMemory(dnnl_memory m) {
    dnnl.destroy(m);
  }

  private static String implOf(dnnl_primitive_desc pd) {
    return Dnnl.implOf(pd);
  }
}
