package org.sparktp.backend.cpu;

import java.nio.FloatBuffer;
import org.sparktp.backend.Activation;
import org.sparktp.tensor.DType;

/**
 * Elementwise kernels over off-heap float buffers. Work goes through a small on-heap chunk (bulk copies
 * in and out) so that the inner loops run over plain arrays. Arithmetic is done in double and rounded
 * once to float.
 */
final class Elementwise {
  private static final int CHUNK = 8192;
  private static final double SQRT_2_OVER_PI = 0.7978845608028654;
  private static final ThreadLocal<float[]> SCRATCH = ThreadLocal.withInitial(() -> new float[CHUNK]);

  private Elementwise() {}

  /**
   * {@code x = act(x + bias)} over a row-major buffer of rows of {@code cols} elements; {@code bias}
   * (length {@code cols}) may be null.
   */
  static void apply(FloatBuffer x, int cols, float[] bias, Activation act) {
    if (bias == null && act == Activation.IDENTITY) {
      return;
    }
    int n = x.capacity();
    int chunk = cols > 0 && cols <= CHUNK ? (CHUNK / cols) * cols : CHUNK;
    float[] buf = chunk <= CHUNK ? SCRATCH.get() : new float[chunk];
    for (int start = 0; start < n; start += chunk) {
      int len = Math.min(chunk, n - start);
      x.position(start);
      x.get(buf, 0, len);
      if (bias != null) {
        addBias(buf, len, start % cols, bias);
      }
      kernel(buf, len, act);
      x.position(start);
      x.put(buf, 0, len);
    }
    x.clear();
  }

  /** {@code buf[i] += bias[(col0 + i) % cols]}, one contiguous row segment at a time (vectorizable). */
  private static void addBias(float[] buf, int len, int col0, float[] bias) {
    int cols = bias.length;
    int i = 0;
    int c = col0;
    while (i < len) {
      int seg = Math.min(cols - c, len - i);
      for (int j = 0; j < seg; j++) {
        buf[i + j] += bias[c + j];
      }
      i += seg;
      c = 0;
    }
  }

  private static void kernel(float[] v, int len, Activation act) {
    switch (act) {
      case IDENTITY -> { }
      case RELU -> {
        for (int i = 0; i < len; i++) {
          v[i] = v[i] > 0f ? v[i] : (v[i] == v[i] ? 0f : v[i]);
        }
      }
      case GELU -> Gelu.apply(v, len);
      case GELU_TANH -> {
        for (int i = 0; i < len; i++) {
          double x = v[i];
          double u = SQRT_2_OVER_PI * (x + 0.044715 * x * x * x);
          // 0.5 (1 + tanh(u)) = 1 / (1 + exp(-2u))
          v[i] = (float) (x / (1.0 + Math.exp(-2.0 * u)));
        }
      }
      case SILU -> {
        for (int i = 0; i < len; i++) {
          double x = v[i];
          v[i] = (float) (x / (1.0 + Math.exp(-x)));
        }
      }
      case SIGMOID -> {
        for (int i = 0; i < len; i++) {
          v[i] = (float) (1.0 / (1.0 + Math.exp(-(double) v[i])));
        }
      }
      case TANH -> {
        for (int i = 0; i < len; i++) {
          v[i] = (float) Math.tanh(v[i]);
        }
      }
      case SOFTMAX -> throw new IllegalArgumentException("softmax is not elementwise");
      default -> throw new IllegalStateException("unhandled activation " + act);
    }
  }

  /** {@code x *= beta} over the whole buffer ({@code beta == 0} writes zeros, as BLAS does, NaNs included). */
  static void scale(FloatBuffer x, float beta) {
    for (int i = 0; i < x.capacity(); i++) {
      x.put(i, beta == 0f ? 0f : x.get(i) * beta);
    }
  }

  static void add(FloatBuffer dst, FloatBuffer src) {
    int n = dst.capacity();
    float[] a = SCRATCH.get();
    float[] b = new float[Math.min(CHUNK, Math.max(1, n))];
    for (int start = 0; start < n; start += CHUNK) {
      int len = Math.min(CHUNK, n - start);
      dst.position(start);
      dst.get(a, 0, len);
      src.position(start);
      src.get(b, 0, len);
      for (int i = 0; i < len; i++) {
        a[i] += b[i];
      }
      dst.position(start);
      dst.put(a, 0, len);
    }
    dst.clear();
    src.clear();
  }

  static void softmaxRows(FloatBuffer x, int rows, int cols) {
    float[] row = new float[cols];
    for (int r = 0; r < rows; r++) {
      x.position(r * cols);
      x.get(row);
      double max = Double.NEGATIVE_INFINITY;
      for (float v : row) {
        max = Math.max(max, v);
      }
      double sum = 0;
      double[] e = new double[cols];
      for (int c = 0; c < cols; c++) {
        e[c] = Math.exp(row[c] - max);
        sum += e[c];
      }
      for (int c = 0; c < cols; c++) {
        row[c] = (float) (e[c] / sum);
      }
      x.position(r * cols);
      x.put(row);
    }
    x.clear();
  }

  static void layerNorm(FloatBuffer x, int rows, int cols, float[] gamma, float[] beta, float eps) {
    float[] row = new float[cols];
    for (int r = 0; r < rows; r++) {
      x.position(r * cols);
      x.get(row);
      double mean = 0;
      for (float v : row) {
        mean += v;
      }
      mean /= cols;
      double var = 0;
      for (float v : row) {
        double d = v - mean;
        var += d * d;
      }
      var /= cols;
      double inv = 1.0 / Math.sqrt(var + eps);
      for (int c = 0; c < cols; c++) {
        double y = (row[c] - mean) * inv;
        if (gamma != null) {
          y *= gamma[c];
        }
        if (beta != null) {
          y += beta[c];
        }
        row[c] = (float) y;
      }
      x.position(r * cols);
      x.put(row);
    }
    x.clear();
  }

  /**
   * f32 to bf16 (round to nearest, ties to even; NaN stays NaN, as {@link org.sparktp.tensor.HalfFloats#floatToBf16})
   * or bf16 to f32 (exact), through heap chunks with plain int loops the JIT vectorizes.
   */
  static void bf16Convert(CpuTensor s, CpuTensor d) {
    bf16Convert(s, d, 0, s.numel());
  }

  /** {@link #bf16Convert(CpuTensor, CpuTensor)} of elements {@code [from, to)} (a part on one thread of a pool). */
  static void bf16Convert(CpuTensor s, CpuTensor d, long from, long to) {
    int chunk = (int) Math.min(1 << 16, Math.max(1, to - from));
    int[] wide = new int[chunk];
    short[] half = new short[chunk];
    boolean narrow = s.dtype() == DType.F32;
    for (long e = from; e < to; e += chunk) {
      int c = (int) Math.min(chunk, to - e);
      if (narrow) {
        s.byteBuffer(e * 4, c * 4L).asIntBuffer().get(wide, 0, c);
        for (int i = 0; i < c; i++) {
          int bits = wide[i];
          int rounded = (bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16;
          half[i] = (short) ((bits & 0x7fffffff) > 0x7f800000 ? (bits >>> 16) | 0x40 : rounded);
        }
        d.byteBuffer(e * 2, c * 2L).asShortBuffer().put(half, 0, c);
      } else {
        s.byteBuffer(e * 2, c * 2L).asShortBuffer().get(half, 0, c);
        for (int i = 0; i < c; i++) {
          wide[i] = half[i] << 16;
        }
        d.byteBuffer(e * 4, c * 4L).asIntBuffer().put(wide, 0, c);
      }
    }
  }

  /** Rows {@code [r0, r1)} of an f32 tensor as a buffer of their own. */
  static FloatBuffer rows(CpuTensor t, int r0, int r1) {
    return t.byteBuffer(4L * r0 * t.cols(), 4L * (r1 - r0) * t.cols()).asFloatBuffer();
  }

  /** Rows of work per chunk so that a chunk holds about 16k elements. */
  static int rowGrain(int cols) {
    return Math.max(1, (1 << 14) / Math.max(1, cols));
  }

  /** {@link org.sparktp.backend.Backend#copyBlock} on host memory. */
  static void copyBlock(CpuTensor s, int srcRow, int srcCol, CpuTensor d, int dstRow, int dstCol, int rows, int cols) {
    if (srcRow < 0 || srcCol < 0 || srcRow + rows > s.rows() || srcCol + cols > s.cols()
        || dstRow < 0 || dstCol < 0 || dstRow + rows > d.rows() || dstCol + cols > d.cols()) {
      throw new IndexOutOfBoundsException("copyBlock of " + rows + "x" + cols + " from " + s.shape() + " at ("
          + srcRow + ", " + srcCol + ") to " + d.shape() + " at (" + dstRow + ", " + dstCol + ")");
    }
    if (rows == 0 || cols == 0) {
      return;
    }
    if (s.dtype() != d.dtype()) {
      throw new IllegalArgumentException("copyBlock from a " + s.dtype().id() + " tensor into a " + d.dtype().id()
          + " one; convert first");
    }
    if (s.dtype() != DType.F32) {
      // any element size: row by row, byte copies
      long es = s.dtype().size();
      for (int r = 0; r < rows; r++) {
        long so = ((long) (srcRow + r) * s.cols() + srcCol) * es;
        long dO = ((long) (dstRow + r) * d.cols() + dstCol) * es;
        d.byteBuffer(dO, cols * es).put(s.byteBuffer(so, cols * es));
      }
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

  /** A norm's f32 weight or bias of {@code n} elements (null stays null). */
  static CpuTensor vectorOf(org.sparktp.backend.Tensor t, int n, String what) {
    if (t == null) {
      return null;
    }
    CpuTensor c = CpuBackend.cpu(t);
    if (c.numel() != n || c.dtype() != DType.F32) {
      throw new IllegalArgumentException(what + " has " + c.numel() + " " + c.dtype().id() + " elements, expected "
          + n + " f32");
    }
    return c;
  }

  /** A vector's elements on the heap (null stays null). */
  static float[] vector(CpuTensor c) {
    if (c == null) {
      return null;
    }
    float[] out = new float[(int) c.numel()];
    c.buffer().get(out);
    return out;
  }
}
