package org.sparktp.backend.cuda;

import org.sparktp.backend.Activation;
import org.sparktp.backend.TransformerMath;
import org.sparktp.backend.Tensor;
import org.sparktp.tensor.DType;
import org.bytedeco.cuda.global.cudart;

/**
 * The CUDA backend's elementwise ops, norms, RoPE and embeddings on f32 tensors: each checks its tensors and
 * launches one NVRTC kernel ({@link CudaKernels}) on the backend's compute stream; ids and positions go to the device
 * through the staging ring. {@link CudaBackend} delegates to it.
 */
final class CudaOps {
  private final CudaBackend backend;

  CudaOps(CudaBackend backend) {
    this.backend = backend;
  }

  /** {@link CudaBackend#cast}. */
  CudaTensor cast(Tensor src, DType dtype) {
    CudaTensor s = CudaBackend.cuda(src);
    CudaTensor out = backend.empty(s.rows(), s.cols(), dtype);
    try {
      long n = s.numel();
      if (s.dtype() == dtype) {
        backend.check(cudart.cudaMemcpyAsync(new Ptr(out.address()), new Ptr(s.address()), s.bytes(),
            cudart.cudaMemcpyDeviceToDevice, backend.computeStream()), "cudaMemcpyAsync(device to device)");
      } else if (s.dtype() == DType.F32) {
        backend.launch(dtype == DType.BF16 ? "tp_cast_f32_bf16" : "tp_cast_f32_f16", backend.grid(n), 0, s.address(),
            out.address(), n);
      } else if (dtype == DType.F32) {
        backend.launch(s.dtype() == DType.BF16 ? "tp_cast_bf16_f32" : "tp_cast_f16_f32", backend.grid(n), 0, s.address(),
            out.address(), n);
      } else {
        try (CudaTensor mid = cast(s, DType.F32)) {
          out.close();
          return cast(mid, dtype);
        }
      }
    } catch (RuntimeException | Error e) {
      out.close();
      throw e;
    }
    return out;
  }

  /** {@link CudaBackend#write(Tensor, long, java.nio.ByteBuffer)}: any storage type, whole elements. */
  void writeBytes(Tensor t, long byteOffset, java.nio.ByteBuffer src) {
    CudaTensor c = CudaBackend.cuda(t);
    backend.enter();
    int es = c.dtype().size();
    if (byteOffset < 0 || byteOffset % es != 0 || src.remaining() % es != 0
        || byteOffset + src.remaining() > c.bytes()) {
      throw new IndexOutOfBoundsException("write of " + src.remaining() + " bytes at byte " + byteOffset
          + " into " + c.shape() + ": whole elements inside the tensor");
    }
    backend.copyIn(c.address() + byteOffset, src.remaining(), CudaStaging.bytes(src));
    src.position(src.limit());
  }

  /** {@link CudaBackend#download(Tensor, java.nio.ByteBuffer)}: the tensor's own storage type. */
  void downloadBytes(Tensor src, java.nio.ByteBuffer dst) {
    CudaTensor s = CudaBackend.cuda(src);
    backend.enter();
    if (dst.remaining() < s.bytes()) {
      throw new IllegalArgumentException("download of " + s.shape() + " needs " + s.bytes() + " bytes, the buffer"
          + " has " + dst.remaining());
    }
    backend.copyOut(s.address(), s.bytes(), CudaStaging.drainBytes(dst));
    dst.position(dst.position() + (int) s.bytes());
  }

  void add(Tensor dst, Tensor src) {
    CudaTensor d = CudaBackend.f32(dst, "add");
    CudaTensor s = CudaBackend.f32(src, "add");
    if (d.rows() != s.rows() || d.cols() != s.cols()) {
      throw new IllegalArgumentException("Cannot add " + s.shape() + " to " + d.shape() + ": shapes differ");
    }
    if (d.numel() > 0) {
      backend.launch("tp_add", backend.grid(d.numel()), 0, d.address(), s.address(), d.numel());
    }
  }

  void biasActivate(Tensor x, Tensor bias, Activation act) {
    CudaTensor tx = CudaBackend.f32(x, "biasActivate");
    CudaTensor tb = null;
    if (bias != null) {
      tb = CudaBackend.f32(bias, "bias");
      if (tb.numel() != tx.cols()) {
        throw new IllegalArgumentException(
            "Bias has " + tb.numel() + " elements but the activation has " + tx.cols() + " columns");
      }
    }
    if (tx.numel() == 0) {
      return;
    }
    if (act == Activation.SOFTMAX) {
      if (tb != null) {
        backend.launch("tp_bias_act", backend.grid(tx.numel()), 0, tx.address(), tb.address(), tx.rows(), tx.cols(),
            CudaKernels.actCode(Activation.IDENTITY));
      }
      attentionSoftmax(tx, 1f, false, 1);
    } else if (tb != null || act != Activation.IDENTITY) {
      backend.launch("tp_bias_act", backend.grid(tx.numel()), 0, tx.address(), addr(tb), tx.rows(), tx.cols(),
          CudaKernels.actCode(act));
    }
  }

  /**
   * Softmax over each row of {@code scale * x}, in place; with {@code causal}, rows are attention scores of
   * {@code qLen} queries per head against {@code x.cols()} keys and query {@code q} (row mod qLen) sees keys
   * {@code j <= q + cols - qLen}.
   */
  void attentionSoftmax(Tensor x, float scale, boolean causal, int qLen) {
    CudaTensor tx = CudaBackend.f32(x, "softmax");
    if (causal && (qLen <= 0 || qLen > tx.cols())) {
      throw new IllegalArgumentException("Causal softmax needs 0 < qLen <= keys, got qLen " + qLen + " for "
          + tx.shape());
    }
    if (tx.rows() > 0) {
      backend.launch("tp_softmax_rows", 0, tx.rows(), tx.address(), tx.rows(), tx.cols(), scale, causal ? 1 : 0,
          Math.max(1, qLen));
    }
  }

  void layerNorm(Tensor x, Tensor gamma, Tensor beta, float eps) {
    CudaTensor tx = CudaBackend.f32(x, "layerNorm");
    CudaTensor g = vector(gamma, tx.cols(), "layer_norm weight");
    CudaTensor b = vector(beta, tx.cols(), "layer_norm bias");
    if (tx.rows() > 0) {
      backend.launch("tp_layer_norm", 0, tx.rows(), tx.address(), addr(g), addr(b), tx.rows(), tx.cols(), eps);
    }
  }

  /** RMSNorm over each row, in place: {@code x / sqrt(mean(x^2) + eps) * gamma} ({@code gamma} may be null). */
  void rmsNorm(Tensor x, Tensor gamma, float eps) {
    CudaTensor tx = CudaBackend.f32(x, "rmsNorm");
    CudaTensor g = vector(gamma, tx.cols(), "rms_norm weight");
    if (tx.rows() > 0) {
      backend.launch("tp_rms_norm", 0, tx.rows(), tx.address(), addr(g), tx.rows(), tx.cols(), eps);
    }
  }

  void rope(Tensor x, int col, int heads, int headDim, int[] positions, float[] invFreq) {
    CudaTensor tx = CudaBackend.f32(x, "rope");
    TransformerMath.checkRope(tx.rows(), tx.cols(), col, heads, headDim, positions, invFreq);
    if (tx.rows() == 0 || heads == 0) {
      return;
    }
    int half = headDim / 2;
    // positions and inverse frequencies in one host-to-device copy
    java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(4 * (positions.length + half))
        .order(java.nio.ByteOrder.nativeOrder());
    b.asIntBuffer().put(positions);
    b.position(4 * positions.length);
    b.asFloatBuffer().put(invFreq, 0, half);
    b.position(0);
    long pos = backend.mallocAsync(b.capacity());
    try {
      backend.copyIn(pos, b.capacity(), CudaStaging.bytes(b));
      backend.launch("tp_rope", backend.grid((long) tx.rows() * heads * half), 0,
          tx.address(), tx.rows(), tx.cols(), col, heads, headDim, pos, pos + 4L * positions.length);
    } finally {
      backend.freeAsync(pos);
    }
  }

  private long deviceInts(int[] values) {
    long d = backend.mallocAsync((long) values.length * 4);
    try {
      backend.copyIn(d, (long) values.length * 4, CudaStaging.ints(values));
    } catch (RuntimeException | Error e) {
      backend.freeAsync(d);
      throw e;
    }
    return d;
  }

  void embedding(Tensor table, int idStart, int[] ids, Tensor out) {
    CudaTensor t = CudaBackend.cuda(table);
    CudaTensor o = CudaBackend.f32(out, "embedding");
    if (o.cols() != t.cols() || o.rows() < ids.length) {
      throw new IllegalArgumentException("Embedding output " + o.shape() + " cannot hold " + ids.length
          + " rows of width " + t.cols());
    }
    backend.zero(o);
    if (ids.length == 0 || t.cols() == 0) {
      return;
    }
    long d = deviceInts(ids);
    try {
      backend.launch("tp_embedding" + suffix(t), backend.grid((long) ids.length * t.cols()), 0,
          t.address(), t.rows(), t.cols(), idStart, d,
          ids.length, o.address());
    } finally {
      backend.freeAsync(d);
    }
  }

  void embeddingBag(Tensor table, int idStart, int[] ids, int[] offsets, boolean mean, Tensor out) {
    CudaTensor t = CudaBackend.cuda(table);
    CudaTensor o = CudaBackend.f32(out, "embeddingBag");
    int bags = offsets.length - 1;
    if (o.cols() != t.cols() || o.rows() < bags) {
      throw new IllegalArgumentException("Embedding-bag output " + o.shape() + " cannot hold " + bags
          + " rows of width " + t.cols());
    }
    for (int i = 0; i < bags; i++) {
      if (offsets[i] < 0 || offsets[i] > offsets[i + 1] || offsets[i + 1] > ids.length) {
        throw new IllegalArgumentException("Embedding-bag offsets must rise within [0, " + ids.length + "], got "
            + offsets[i] + ", " + offsets[i + 1] + " at bag " + i);
      }
    }
    backend.zero(o);
    if (bags <= 0 || t.cols() == 0) {
      return;
    }
    long dIds = deviceInts(ids.length == 0 ? new int[1] : ids);
    long dOff = 0;
    try {
      dOff = deviceInts(offsets);
      backend.launch("tp_embedding_bag" + suffix(t), backend.grid((long) bags * t.cols()), 0,
          t.address(), t.rows(), t.cols(), idStart, dIds,
          dOff, bags, mean ? 1 : 0, o.address());
    } finally {
      backend.freeAsync(dIds);
      backend.freeAsync(dOff);
    }
  }

  /** The kernel suffix of a table's storage: none for f32, {@code _bf16}, {@code _f16}. */
  private static String suffix(CudaTensor table) {
    return table.dtype() == DType.F32 ? "" : "_" + table.dtype().id();
  }

  private static long addr(CudaTensor t) {
    return t == null ? 0L : t.address();
  }

  private static CudaTensor vector(Tensor t, int n, String what) {
    if (t == null) {
      return null;
    }
    CudaTensor c = CudaBackend.f32(t, what);
    if (c.numel() != n) {
      throw new IllegalArgumentException(what + " has " + c.numel() + " elements, expected " + n);
    }
    return c;
  }
}
