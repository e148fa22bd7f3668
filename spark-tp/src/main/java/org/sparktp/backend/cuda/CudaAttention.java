package org.sparktp.backend.cuda;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.sparktp.backend.Backend;
import org.sparktp.backend.Tensor;
import org.sparktp.tensor.DType;

/**
 * The CUDA backend's transformer ops that {@code Backend} otherwise runs through the host: attention over a ragged
 * token batch (prefill, causal or bidirectional), attention of a decode step against device-resident KV caches
 * (f32, bf16 or f16 storage), SwiGLU, {@code copyRows} (stacking and transposing weight blocks) and the LM head's
 * per-row max / arg-max / log-sum-exp. Each call uploads its small metadata (offsets, the query heads' KV heads,
 * cache positions and addresses) in one host-to-device copy and launches one or two kernels; no activation leaves
 * the device.
 *
 * <p>Attention kernels ({@code tp_attention}, {@code tp_cached_attention_*}) run one block per (token, KV head):
 * the query heads of one KV head share its K and V reads (grouped-query attention), keys go by tiles with an online
 * softmax, so shared memory is fixed whatever the sequence length ({@link AttentionLaunch}).
 */
final class CudaAttention {
  private final CudaBackend backend;

  CudaAttention(CudaBackend backend) {
    this.backend = backend;
  }

  void attention(Tensor qkv, int qCol, int kCol, int vCol, int[] kvOf, int headDim, int[] offsets,
      boolean causal, float scale, Tensor out) {
    CudaTensor x = CudaBackend.f32(qkv, "attention");
    CudaTensor o = CudaBackend.f32(out, "attention");
    AttentionLaunch l = AttentionLaunch.prefill(x.rows(), x.cols(), qCol, kCol, vCol, kvOf, headDim, offsets,
        o.rows(), o.cols());
    if (l.tokens() == 0) {
      return;
    }
    long meta = upload(l.meta(null), new long[0]);
    try {
      backend.launch2d("tp_attention", l.tokens(), l.kvHeads(), x.address(), x.cols(), qCol, kCol, vCol,
          kvOf.length, headDim, meta, l.sequences(), causal ? 1 : 0, scale, o.address());
    } finally {
      backend.freeAsync(meta);
    }
  }

  void cachedAttention(Tensor qkv, int qCol, int kvCol, int kvHeads, int[] kvOf, int headDim, int[] offsets,
      Tensor[] cache, int[] past, float scale, Tensor out) {
    CudaTensor x = CudaBackend.f32(qkv, "cachedAttention");
    CudaTensor o = CudaBackend.f32(out, "cachedAttention");
    long[] addr = new long[cache.length];
    DType dt = cache.length == 0 ? DType.F32 : CudaBackend.cuda(cache[0]).dtype();
    int[] capacity = new int[cache.length];
    for (int s = 0; s < cache.length; s++) {
      CudaTensor c = CudaBackend.cuda(cache[s]);
      if (c.dtype() != dt) {
        throw new IllegalArgumentException("cachedAttention: the KV caches have different storage types ("
            + dt.id() + " and " + c.dtype().id() + " at sequence " + s + ")");
      }
      if (c.cols() != 2 * kvHeads * headDim) {
        throw new IllegalArgumentException("cachedAttention: cache " + c.shape() + " of sequence " + s
            + " is not " + (2 * kvHeads * headDim) + " wide (2 x " + kvHeads + " KV heads x " + headDim + ")");
      }
      addr[s] = c.address();
      capacity[s] = c.rows();
    }
    AttentionLaunch l = AttentionLaunch.decode(x.rows(), x.cols(), qCol, kvCol, kvHeads, kvOf, headDim, offsets,
        capacity, past, o.rows(), o.cols());
    if (l.tokens() == 0) {
      return;
    }
    String suffix = dt.id(); // f32, bf16, f16
    int[] ints = l.meta(past);
    long meta = upload(ints, addr);
    long caches = meta + AttentionLaunch.alignedIntBytes(ints.length);
    try {
      int kvw = 2 * kvHeads * headDim;
      backend.launch("tp_kv_store_" + suffix, backend.grid((long) l.tokens() * kvw), 0, x.address(), x.cols(),
          kvCol, kvw, meta, l.sequences(), kvOf.length, caches, l.tokens());
      backend.launch2d("tp_cached_attention_" + suffix, l.tokens(), kvHeads, x.address(), x.cols(), qCol, kvHeads,
          kvOf.length, headDim, meta, l.sequences(), caches, scale, o.address());
    } finally {
      backend.freeAsync(meta);
    }
  }

  /** Uploads {@code ints} followed (8-byte aligned) by the {@code longs} (device addresses) in one copy. */
  private long upload(int[] ints, long[] longs) {
    long head = AttentionLaunch.alignedIntBytes(ints.length);
    ByteBuffer b = ByteBuffer.allocate((int) (head + 8L * longs.length)).order(ByteOrder.nativeOrder());
    b.asIntBuffer().put(ints);
    b.position((int) head);
    b.asLongBuffer().put(longs);
    b.position(0);
    long d = backend.mallocAsync(b.capacity());
    try {
      backend.copyIn(d, b.capacity(), CudaStaging.bytes(b));
    } catch (RuntimeException | Error e) {
      backend.freeAsync(d);
      throw e;
    }
    return d;
  }

  /** {@code out[:, j] = silu(gateUp[:, j]) * gateUp[:, half + j]}. */
  void swiglu(Tensor gateUp, Tensor out) {
    CudaTensor g = CudaBackend.f32(gateUp, "swiglu");
    CudaTensor o = CudaBackend.f32(out, "swiglu");
    int half = g.cols() / 2;
    if (g.cols() % 2 != 0 || o.rows() != g.rows() || o.cols() != half) {
      throw new IllegalArgumentException("swiglu needs gateUp [rows, 2 * half] and out [rows, half], got "
          + g.shape() + " and " + o.shape());
    }
    if (o.numel() > 0) {
      backend.launch("tp_swiglu", backend.grid(o.numel()), 0, g.address(), g.rows(), half, o.address());
    }
  }

  /** {@link Backend#copyRows} on the device: a device-to-device copy, or a transpose kernel by element size. */
  void copyRows(Tensor src, boolean transpose, Tensor dst, int dstRow) {
    CudaTensor s = CudaBackend.cuda(src);
    CudaTensor d = CudaBackend.cuda(dst);
    int outRows = transpose ? s.cols() : s.rows();
    int width = transpose ? s.rows() : s.cols();
    Backend.checkCopyRows(s, d, dstRow, outRows, width);
    if (s.numel() == 0) {
      return;
    }
    CudaTensor target = d.rows(dstRow, outRows);
    if (!transpose) {
      backend.copyBlock(s, 0, 0, target, 0, 0, s.rows(), s.cols());
      return;
    }
    String k = switch (s.dtype().size()) {
      case 1 -> "tp_transpose_u8";
      case 2 -> "tp_transpose_u16";
      case 4 -> "tp_transpose_u32";
      default -> throw new IllegalArgumentException("copyRows cannot transpose " + s.dtype().id() + " elements");
    };
    backend.launch(k, backend.grid(s.numel()), 0, s.address(), s.rows(), s.cols(), target.address());
  }

  /**
   * Per row of {@code logits} {@code [rows, cols]} (a vocabulary slice starting at id {@code idStart}): a new
   * {@code [rows, 3]} f32 tensor of {max, id of the first max, log(sum(exp(x - max)))}.
   */
  CudaTensor rowMaxLse(Tensor logits, int idStart) {
    CudaTensor x = CudaBackend.f32(logits, "rowMaxLse");
    if (x.cols() == 0) {
      throw new IllegalArgumentException("rowMaxLse needs at least one column, got " + x.shape());
    }
    CudaTensor out = backend.empty(x.rows(), 3, DType.F32);
    if (x.rows() > 0) {
      try {
        backend.launch("tp_row_max_lse", 0, x.rows(), x.address(), x.rows(), x.cols(), idStart, out.address());
      } catch (RuntimeException | Error e) {
        out.close();
        throw e;
      }
    }
    return out;
  }

  /** {@link org.sparktp.backend.Backend#argMaxRows} from {@link #rowMaxLse}: 3 floats per row come back. */
  float[] argMaxRows(Tensor logits, int idStart) {
    try (CudaTensor r = rowMaxLse(logits, idStart)) {
      float[] m = backend.download(r);
      float[] best = new float[2 * r.rows()];
      for (int i = 0; i < r.rows(); i++) {
        best[2 * i] = m[3 * i];
        best[2 * i + 1] = Float.intBitsToFloat((int) m[3 * i + 1]);
      }
      return best;
    }
  }
}
