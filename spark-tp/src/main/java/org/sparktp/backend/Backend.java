package org.sparktp.backend;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.sparktp.tensor.DType;

/**
 * Memory and math for one rank: allocates {@link Tensor}s and computes on them. A CPU backend keeps
 * tensors in off-heap host memory and runs GEMMs through OpenBLAS; a GPU backend keeps them in device
 * memory. Every tensor passed to a backend must have been made by that backend.
 *
 * <p>A backend is {@link AutoCloseable}: it counts the tensors it has handed out and still live, and
 * {@link #close()} fails with the count when some were never closed (a leak), after freeing what it
 * owns itself.
 */
public interface Backend extends AutoCloseable {

  /** A short name: {@code cpu}, {@code cuda}. */
  String name();

  /** A new float32 tensor filled with zeros. */
  Tensor allocate(int rows, int cols);

  /**
   * A new tensor of {@code dtype} filled with zeros. A backend that holds only float32 tensors keeps this
   * default, which refuses other types with a message naming the backend.
   */
  default Tensor allocate(int rows, int cols, DType dtype) {
    requireF32(dtype, "allocate");
    return allocate(rows, cols);
  }

  /** True when this backend can hold tensors of {@code dtype}: {@code supports(ALLOCATE, dtype)}. */
  default boolean supports(DType dtype) {
    // the int8 weight-only storage is held as int8 tensors, as W8A8's is
    return supports(BackendOp.ALLOCATE, dtype == DType.I8_WO ? DType.I8 : dtype);
  }

  /**
   * True when this backend runs {@code op} on {@code dtype} natively: in its own memory, with no trip through the
   * host ({@code dtype}: the tensors' element type; for {@link BackendOp#LINEAR} the weights' storage, {@code I8}
   * for int8 W8A8, {@code I8_WO} for int8 weight-only). Where it is false, the op's methods refuse with a message naming the backend and dtype, or
   * run {@code Backend}'s generic code through the host, logged once and counted ({@link Fallbacks}). A backend
   * that says true overrides the op's generic methods ({@link BackendOp}). This default is what the generic methods
   * offer: f32 for ops that compose abstract methods; nothing for those that go through the host.
   */
  default boolean supports(BackendOp op, DType dtype) {
    return switch (op) {
      case COPY_ROWS, CONVERT, HOST_BUFFER, RMS_NORM, ATTENTION, ROPE, SWIGLU, CACHED_ATTENTION -> false;
      case ACCUMULATE -> dtype.isFloat();
      default -> dtype == DType.F32;
    };
  }

  /**
   * A new tensor of {@code dtype} holding {@code rows * cols} elements read from {@code data} at its position
   * (little-endian, the layout of safetensors); the position advances past them.
   */
  default Tensor upload(ByteBuffer data, DType dtype, int rows, int cols) {
    requireF32(dtype, "upload");
    float[] f = new float[Math.multiplyExact(rows, cols)];
    data.slice().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(f);
    data.position(data.position() + 4 * f.length);
    return upload(f, rows, cols);
  }

  /**
   * Writes {@code src}'s remaining bytes (elements of {@code t}'s dtype, little-endian) into {@code t} from
   * byte {@code byteOffset}; the position of {@code src} advances.
   */
  default void write(Tensor t, long byteOffset, ByteBuffer src) {
    requireF32(t.dtype(), "write");
    if (byteOffset % 4 != 0 || src.remaining() % 4 != 0) {
      throw new IllegalArgumentException("f32 writes must cover whole elements");
    }
    float[] f = new float[src.remaining() / 4];
    src.slice().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(f);
    src.position(src.limit());
    int row = Math.toIntExact(byteOffset / 4 / Math.max(1, t.cols()));
    if (byteOffset / 4 % Math.max(1, t.cols()) != 0) {
      throw new IllegalArgumentException("This backend writes whole rows");
    }
    write(t, row, f, 0, f.length);
  }

  /**
   * The tensor's memory as a native-order host buffer of exactly {@link Tensor#bytes()} bytes, for host
   * communicators that move bytes through the CPU; a device backend keeps this default, which refuses.
   */
  default ByteBuffer hostBuffer(Tensor t) {
    throw new UnsupportedOperationException("The " + name() + " backend's tensors are not in host memory; use that "
        + "backend's communicator");
  }

  /** Copies the tensor's elements, in its own dtype and little-endian, into {@code dst} at its position. */
  default void download(Tensor src, ByteBuffer dst) {
    requireF32(src.dtype(), "download");
    float[] f = download(src);
    ByteBuffer d = dst.slice().order(ByteOrder.LITTLE_ENDIAN);
    d.asFloatBuffer().put(f);
    dst.position(dst.position() + 4 * f.length);
  }

  /**
   * A new tensor with the elements of {@code src} converted to {@code dtype} (float32 to bf16/f16 rounds to
   * nearest even; the other way is exact); a copy when the types are the same.
   */
  default Tensor convert(Tensor src, DType dtype) {
    requireF32(src.dtype(), "convert");
    requireF32(dtype, "convert");
    Fallbacks.note(this, BackendOp.CONVERT, dtype);
    return upload(download(src), src.rows(), src.cols());
  }

  private void requireF32(DType dtype, String op) {
    if (dtype != DType.F32) {
      throw new UnsupportedOperationException("The " + name() + " backend holds only f32 tensors (" + op + " of a "
          + dtype.id() + " tensor); use spark.tp.dtype=f32 with it");
    }
  }

  /**
   * The GEMM kernel that {@link #prepareLinear} uses for weights stored in {@code dtype}, as explain and
   * doctor show it ({@code openblas}, {@code onednn amx}, {@code onednn avx512}, ...).
   */
  default String kernel(DType dtype) {
    return name() + " gemm";
  }

  /**
   * Prepares {@code act(x W^T + b)} for repeated use, taking ownership of {@code weight} ({@code [out, in]},
   * PyTorch's layout, any float dtype this backend holds) and {@code bias} ({@code [1, out]} f32, or null):
   * a backend may repack the weight into its preferred layout once here. This default keeps the tensors and
   * runs {@link #gemm} then {@link #biasActivate} (float32 weights only).
   */
  default PreparedLinear prepareLinear(Tensor weight, Tensor bias, Activation epilogue) {
    Backend be = this;
    Activation act = epilogue == null ? Activation.IDENTITY : epilogue;
    requireF32(weight.dtype(), "prepareLinear");
    return new PreparedLinear() {
      @Override
      public Tensor apply(Tensor x, boolean withBias) {
        Tensor y = be.empty(x.rows(), weight.rows());
        try {
          be.gemm(false, true, 1f, x, weight, 0f, y);
          be.biasActivate(y, withBias ? bias : null, act);
          return y;
        } catch (RuntimeException e) {
          y.close();
          throw e;
        }
      }

      @Override
      public long bytes() {
        return weight.bytes() + (bias == null ? 0 : bias.bytes());
      }

      @Override
      public String kernel() {
        return be.kernel(DType.F32);
      }

      @Override
      public void close() {
        weight.close();
        if (bias != null) {
          bias.close();
        }
      }
    };
  }

  /**
   * As {@link #prepareLinear(Tensor, Tensor, Activation)} with the weight stored as {@code storage}: a float
   * type converts the weight first (on this backend); {@code I8_WO} (int8 weight-only, {@code spark.tp.dtype=int8-wo})
   * quantizes it once, here, per output channel ({@link org.sparktp.tensor.Int8Quant}); {@code I8} (W8A8,
   * {@code int8}) does the same and also quantizes each input row at every call. This default quantizes and
   * dequantizes back to float32 (the numerics of int8, not its memory or speed); the CPU backend overrides it
   * with oneDNN int8 kernels. Takes ownership of {@code weight} and {@code bias}; on a failure
   * both are closed.
   */
  default PreparedLinear prepareLinear(Tensor weight, Tensor bias, Activation epilogue, DType storage) {
    Tensor w = weight;
    try {
      if (storage != null && storage.isInt8()) {
        Fallbacks.note(this, BackendOp.LINEAR, storage);
        boolean w8a8 = storage == DType.I8;
        float[] f;
        if (weight.dtype() == DType.F32) {
          f = download(weight);
        } else {
          try (Tensor wide = convert(weight, DType.F32)) {
            f = download(wide);
          }
        }
        org.sparktp.tensor.Int8Quant.roundTrip(f, weight.rows(), weight.cols(), "A linear's weight");
        w = upload(f, weight.rows(), weight.cols());
        weight.close();
        PreparedLinear p = prepareLinear(w, bias, epilogue);
        return new PreparedLinear() {
          @Override
          public Tensor apply(Tensor x, boolean withBias) {
            if (!w8a8) {
              return p.apply(x, withBias);
            }
            float[] a = download(x); // W8A8: the rows quantized per token, as the int8 kernels do
            org.sparktp.tensor.Int8Quant.roundTripActivations(a, x.rows(), x.cols());
            try (Tensor q = upload(a, x.rows(), x.cols())) {
              return p.apply(q, withBias);
            }
          }

          @Override
          public long bytes() {
            return p.bytes();
          }

          @Override
          public String kernel() {
            return p.kernel() + (w8a8 ? " (int8 W8A8 emulated: weights and activations quantized, dequantized to f32)"
                : " (int8 weights dequantized to f32)");
          }

          @Override
          public void close() {
            p.close();
          }
        };
      }
      if (storage != null && storage != weight.dtype()) {
        w = convert(weight, storage);
        weight.close();
      }
      return prepareLinear(w, bias, epilogue);
    } catch (RuntimeException e) {
      if (!w.isClosed()) {
        w.close();
      }
      if (w != weight && !weight.isClosed()) {
        weight.close();
      }
      if (bias != null && !bias.isClosed()) {
        bias.close();
      }
      throw e;
    }
  }

  /** A linear layer's weights made ready for a backend's GEMM (see {@link #prepareLinear}). */
  interface PreparedLinear extends AutoCloseable {
    /** {@code act(x W^T + b)} for an f32 {@code x [rows, in]}: a new f32 tensor {@code [rows, out]}. */
    Tensor apply(Tensor x, boolean withBias);

    /** Bytes held for the weight and bias. */
    long bytes();

    /** The kernel that runs it, as {@link Backend#kernel} names it. */
    String kernel();

    @Override
    void close();
  }

  /**
   * {@code acc[i] += src[i]} for {@code count} elements: {@code acc} float32 (native order), {@code src} of
   * {@code dtype} (native order) from its position; the reduction kernel of communicators that sum partial
   * results in host memory (bf16/f16 partial sums accumulate in float32 and are rounded once, by the caller).
   */
  default void accumulate(ByteBuffer acc, ByteBuffer src, DType dtype, int count) {
    ByteBuffer a = acc.duplicate().order(ByteOrder.nativeOrder());
    ByteBuffer s = src.duplicate().order(ByteOrder.nativeOrder());
    int ap = a.position();
    int sp = s.position();
    for (int i = 0; i < count; i++) {
      float v = switch (dtype) {
        case F32 -> s.getFloat(sp + 4 * i);
        case BF16, F16 -> dtype.toFloat(s.getShort(sp + 2 * i));
        default -> throw new IllegalArgumentException("Cannot sum " + dtype + " elements");
      };
      a.putFloat(ap + 4 * i, a.getFloat(ap + 4 * i) + v);
    }
  }

  /**
   * Writes {@code src} {@code [r, c]}, or with {@code transpose} its transpose {@code [c, r]}, into rows
   * {@code [dstRow, ...)} of {@code dst} (same dtype, same width): stacks fused weight blocks (q/k/v, gate/up)
   * and turns GPT-2's {@code Conv1D} blocks {@code [in, out]} into PyTorch's {@code [out, in]}, in the
   * tensors' own dtype. This default goes through one host copy of {@code src} (one tensor, not a shard);
   * the CPU backend copies in place.
   */
  default void copyRows(Tensor src, boolean transpose, Tensor dst, int dstRow) {
    int outRows = transpose ? src.cols() : src.rows();
    int width = transpose ? src.rows() : src.cols();
    checkCopyRows(src, dst, dstRow, outRows, width);
    Fallbacks.note(this, BackendOp.COPY_ROWS, src.dtype());
    int es = src.dtype().size();
    ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(src.bytes())).order(ByteOrder.LITTLE_ENDIAN);
    download(src, b);
    b.flip();
    if (transpose) {
      ByteBuffer t = ByteBuffer.allocate(b.capacity()).order(ByteOrder.LITTLE_ENDIAN);
      int r = src.rows();
      int c = src.cols();
      for (int i = 0; i < r; i++) {
        for (int j = 0; j < c; j++) {
          for (int k = 0; k < es; k++) {
            t.put((j * r + i) * es + k, b.get((i * c + j) * es + k));
          }
        }
      }
      b = t;
    }
    write(dst, (long) dstRow * dst.cols() * es, b);
  }

  /** The checks of {@link #copyRows}, with the message a backend's override gives too. */
  static void checkCopyRows(Tensor src, Tensor dst, int dstRow, int outRows, int width) {
    if (src.dtype() != dst.dtype() || width != dst.cols() || dstRow < 0 || (long) dstRow + outRows > dst.rows()) {
      throw new IllegalArgumentException("Cannot copy " + src.shape() + " " + src.dtype().id() + " as " + outRows
          + " rows of width " + width + " into rows " + dstRow + ".. of " + dst.shape() + " " + dst.dtype().id());
    }
  }

  /**
   * {@code {m, n, k}} of {@link #gemm}'s {@code op(A) [m, k] x op(B) [k, n] -> C [m, n]}; throws, with the message
   * every backend gives, when the shapes do not agree.
   */
  static int[] gemmShape(boolean transA, boolean transB, Tensor a, Tensor b, Tensor c) {
    int m = transA ? a.cols() : a.rows();
    int k = transA ? a.rows() : a.cols();
    int kb = transB ? b.cols() : b.rows();
    int n = transB ? b.rows() : b.cols();
    if (k != kb || c.rows() != m || c.cols() != n) {
      throw new IllegalArgumentException("GEMM shapes do not agree: op(A) is [" + m + ", " + k + "], op(B) is ["
          + kb + ", " + n + "], C is " + c.shape());
    }
    return new int[] {m, n, k};
  }

  /** A new tensor whose contents are unspecified (for outputs that are overwritten whole). */
  default Tensor empty(int rows, int cols) {
    return allocate(rows, cols);
  }

  /** A new tensor holding {@code data[offset .. offset + rows*cols)} in row-major order. */
  Tensor upload(float[] data, int offset, int rows, int cols);

  default Tensor upload(float[] data, int rows, int cols) {
    return upload(data, 0, rows, cols);
  }

  /** Copies the whole tensor, row-major, into {@code dst[offset ..]}. */
  void download(Tensor src, float[] dst, int offset);

  default float[] download(Tensor src) {
    float[] out = new float[Math.toIntExact(src.numel())];
    download(src, out, 0);
    return out;
  }

  /** Writes {@code data} into rows {@code [row, row + data.length / t.cols())} of {@code t}. */
  void write(Tensor t, int row, float[] data, int offset, int length);

  /** Sets every element to zero. */
  void zero(Tensor t);

  /**
   * Copies the block {@code src[srcRow .. srcRow+rows, srcCol .. srcCol+cols]} into {@code dst} at
   * {@code (dstRow, dstCol)}.
   */
  void copyBlock(Tensor src, int srcRow, int srcCol, Tensor dst, int dstRow, int dstCol, int rows, int cols);

  /**
   * {@code C = alpha * op(A) * op(B) + beta * C}, where {@code op(X)} is {@code X} or its transpose.
   * With {@code transB = true} and {@code B} a PyTorch {@code [out, in]} weight, this is {@code X W^T}
   * with no copy of the weight.
   */
  void gemm(boolean transA, boolean transB, float alpha, Tensor a, Tensor b, float beta, Tensor c);

  /** {@code x[r, :] += bias[0, :]} for every row. */
  void addBias(Tensor x, Tensor bias);

  /** {@code dst += src}, element by element (same shape). */
  void add(Tensor dst, Tensor src);

  /** {@code x = act(x)} in place; {@link Activation#SOFTMAX} works over each row. */
  void activate(Tensor x, Activation act);

  /** Fused {@code x = act(x + bias)}; {@code bias} may be null. */
  default void biasActivate(Tensor x, Tensor bias, Activation act) {
    if (bias != null) {
      addBias(x, bias);
    }
    if (act != Activation.IDENTITY) {
      activate(x, act);
    }
  }

  /**
   * Layer normalisation over each row, in place:
   * {@code y = (x - mean) / sqrt(var + eps) * gamma + beta}, with the biased variance (PyTorch's).
   */
  void layerNorm(Tensor x, Tensor gamma, Tensor beta, float eps);

  /**
   * Embedding lookup for a shard of a table that holds ids {@code [idStart, idStart + table.rows())}:
   * {@code out[r, :] = table[ids[r] - idStart, :]} when the id is in range, else zeros.
   */
  void embedding(Tensor table, int idStart, int[] ids, Tensor out);

  /**
   * Embedding bag over a table shard: row {@code r} of {@code out} is the sum ({@code mean = false})
   * or the sum divided by the bag size ({@code mean = true}) of the rows of the ids
   * {@code ids[offsets[r] .. offsets[r+1])} that the shard holds (ids outside the shard add zero, but
   * still count in the bag size, so the partial sums over ranks add up to the true mean).
   */
  void embeddingBag(Tensor table, int idStart, int[] ids, int[] offsets, boolean mean, Tensor out);

  // --- transformer ops: generic implementations through the host here (logged, see supports) ---

  /**
   * Scaled dot-product attention per sequence and head, {@code O_h = softmax(Q_h K_h^T * scale + M) V_h},
   * over a ragged token batch: sequence {@code s} is tokens {@code [offsets[s], offsets[s+1])}, and
   * {@code M} is the causal mask ({@code -inf} above the diagonal) when {@code causal}, else zero.
   * {@code qkv} is {@code [tokens, *]}: query head {@code h} is columns {@code qCol + h*headDim ..},
   * its key and value heads are {@code kvOf[h]} at {@code kCol + kvOf[h]*headDim} and
   * {@code vCol + kvOf[h]*headDim}. {@code out} is {@code [tokens, qHeads*headDim]}, overwritten.
   */
  default void attention(Tensor qkv, int qCol, int kCol, int vCol, int[] kvOf, int headDim, int[] offsets,
      boolean causal, float scale, Tensor out) {
    Fallbacks.note(this, BackendOp.ATTENTION, qkv.dtype());
    float[] x = download(qkv);
    float[] o = TransformerMath.attention(x, qkv.cols(), qCol, kCol, vCol, kvOf, headDim, offsets, causal, scale);
    write(out, 0, o, 0, o.length);
  }

  /**
   * Rotary position embedding in place, HF's {@code rotate_half} convention, on {@code heads} heads of
   * {@code headDim} columns starting at column {@code col}: with {@code a = positions[t] * invFreq[i]},
   * {@code x[i] <- x[i] cos a - x[i + d/2] sin a} and {@code x[i + d/2] <- x[i + d/2] cos a + x[i] sin a}.
   */
  default void rope(Tensor x, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    TransformerMath.checkRope(x.rows(), x.cols(), col, heads, headDim, positions, invFreq);
    Fallbacks.note(this, BackendOp.ROPE, x.dtype());
    float[] v = download(x);
    TransformerMath.rope(v, x.cols(), col, heads, headDim, positions, invFreq);
    write(x, 0, v, 0, v.length);
  }

  /** RMS normalisation over each row, in place: {@code y = x / sqrt(mean(x^2) + eps) * gamma}. */
  default void rmsNorm(Tensor x, Tensor gamma, float eps) {
    Fallbacks.note(this, BackendOp.RMS_NORM, x.dtype());
    float[] v = download(x);
    TransformerMath.rmsNorm(v, x.cols(), download(gamma), eps);
    write(x, 0, v, 0, v.length);
  }

  /**
   * SwiGLU: {@code out[:, j] = silu(gateUp[:, j]) * gateUp[:, half + j]} for {@code j < half}, where
   * {@code gateUp} is {@code [rows, 2*half]} and {@code out} is {@code [rows, half]}.
   */
  default void swiglu(Tensor gateUp, Tensor out) {
    Fallbacks.note(this, BackendOp.SWIGLU, gateUp.dtype());
    float[] v = download(gateUp);
    float[] o = TransformerMath.swiglu(v, gateUp.rows(), gateUp.cols() / 2);
    write(out, 0, o, 0, o.length);
  }

  /**
   * The greedy choice of each row of {@code logits} {@code [rows, cols]}, a vocabulary slice from id
   * {@code idStart}: {@code float[2 * rows]} holding per row its largest logit and, as the bits of a float
   * ({@link Float#intBitsToFloat}), the id of that logit's first column (the LM head's vocab-parallel greedy
   * reduction; the ranks then compare their rows' maxima). This default downloads the slice and scans it; a device
   * backend reduces on the device and copies back only these.
   */
  default float[] argMaxRows(Tensor logits, int idStart) {
    float[] l = download(logits);
    int rows = logits.rows();
    int cols = logits.cols();
    float[] best = new float[2 * rows];
    for (int i = 0; i < rows; i++) {
      float bv = Float.NEGATIVE_INFINITY;
      int bi = -1;
      for (int j = 0; j < cols; j++) {
        float v = l[i * cols + j];
        if (bi < 0 || v > bv) {
          bv = v;
          bi = idStart + j;
        }
      }
      best[2 * i] = bi < 0 ? Float.NEGATIVE_INFINITY : bv;
      best[2 * i + 1] = Float.intBitsToFloat(bi);
    }
    return best;
  }

  /** {@code dst[i, :] = src[rows[i], :]} for every {@code i}. */
  default void selectRows(Tensor src, int[] rows, Tensor dst) {
    for (int i = 0; i < rows.length; i++) {
      copyBlock(src, rows[i], 0, dst, i, 0, 1, src.cols());
    }
  }

  // --- generation: a generic implementation through the host here (logged, see supports) ---

  /**
   * Causal attention of a step's new tokens against each sequence's KV cache. Sequence {@code s}'s new
   * tokens are rows {@code [offsets[s], offsets[s+1])} of {@code qkv}, at positions {@code past[s], ..}.
   * First their keys and values (columns {@code kvCol .. kvCol + 2*kvHeads*headDim} of {@code qkv}: the
   * K heads, then the V heads) are written into {@code cache[s]} ({@code [capacity, 2*kvHeads*headDim]})
   * at rows {@code past[s] ..}; then query head {@code h} (columns {@code qCol + h*headDim ..}) of new
   * token {@code i} attends to cache rows {@code [0, past[s] + i]}:
   * {@code O = softmax(q K^T * scale) V} with {@code K} the cache's columns {@code kvOf[h]*headDim ..} and
   * {@code V} its columns {@code (kvHeads + kvOf[h])*headDim ..}. {@code out} is
   * {@code [tokens, kvOf.length*headDim]}, overwritten.
   */
  default void cachedAttention(Tensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf, int headDim,
      int[] offsets, Tensor[] cache, int[] past, float scale, Tensor out) {
    if (HalfKv.needed(cache)) { // issue 9b: a bf16/f16 cache, widened for the math
      HalfKv.cachedAttention(this, qkv, qCol, kvCol, kvHeads, kvOf, headDim, offsets, cache, past, scale, out);
      return;
    }
    Fallbacks.note(this, BackendOp.CACHED_ATTENTION, DType.F32);
    int w = kvOf.length * headDim;
    int kvw = 2 * kvHeads * headDim;
    for (int s = 0; s < cache.length; s++) {
      int o = offsets[s];
      int n = offsets[s + 1] - o;
      if (n == 0) {
        continue;
      }
      copyBlock(qkv, o, kvCol, cache[s], past[s], 0, n, kvw);
      float[] q = download(qkv.rows(o, n));
      float[] kv = download(cache[s].rows(0, past[s] + n));
      float[] y = DecodeMath.cachedAttention(q, qkv.cols(), qCol, kv, kvw, kvHeads, kvOf, headDim, n, past[s],
          scale);
      write(out, o, y, 0, n * w);
    }
  }

  /** Live tensors made by this backend and not yet closed. */
  long liveTensors();

  /** Bytes held by live tensors. */
  long liveBytes();

  /** Frees the backend; throws {@link IllegalStateException} naming the count of leaked tensors. */
  @Override
  void close();
}
