package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.nn.LinearKernel;
import org.sparktp.nn.RankWeights;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * One rank's weight slices ({@link RankWeights}, keyed by {@link Slice#id()}: host blocks, or tensors already
 * on the backend in the dtype they were read in) and what the ops make of them: the linears
 * ({@link #linear}, stored in the resolved {@link #storage()} dtype through {@link LinearKernel#create}) and
 * the tensors ops read directly ({@link #tensor}: embedding tables in the storage dtype, norm weights in f32).
 * Everything made here is owned here and closed by {@link #close()}. A slice two ops read (a tied embedding
 * and LM head) is read once: the first op's use is shared, the second gets a copy made on the backend when its
 * kernel repacks its weight (oneDNN), else the same tensor (f32 on OpenBLAS).
 */
public final class Weights implements AutoCloseable {
  private final RankWeights blocks;
  private final Backend backend;
  private final DType storage;
  private final Map<String, Integer> uses;
  private final Map<String, Tensor> shared = new HashMap<>();
  private final List<LinearKernel> kernels = new ArrayList<>();

  /**
   * @param storage the linears' and embedding tables' storage dtype (one the backend {@link Backend#supports})
   * @param uses how many ops of the rank read each slice id
   */
  public Weights(RankWeights blocks, Backend backend, DType storage, Map<String, Integer> uses) {
    this.blocks = blocks;
    this.backend = backend;
    this.storage = storage;
    this.uses = uses;
  }

  /** Rank {@code rank}'s distinct slices of {@code ops} (and their bodies), keyed by {@link Slice#id()}, in op order. */
  public static Map<String, Slice> slices(List<Op> ops, int p, int rank) {
    Map<String, Slice> m = new java.util.LinkedHashMap<>();
    for (Op o : ops) {
      for (Slice s : o.slices(p, rank)) {
        m.putIfAbsent(s.id(), s);
      }
    }
    return m;
  }

  /** How many ops of {@code ops} read each slice of rank {@code rank} (two for a tied embedding and head). */
  public static Map<String, Integer> uses(List<Op> ops, int p, int rank) {
    Map<String, Integer> uses = new HashMap<>();
    for (Op o : ops) {
      for (Slice sl : o.slices(p, rank)) {
        uses.merge(sl.id(), 1, Integer::sum);
      }
    }
    return uses;
  }

  /** Reads {@code slices} from {@code src} as host blocks (only those byte ranges for a checkpoint). */
  public static RankWeights read(java.util.Collection<Slice> slices, org.sparktp.nn.WeightSource src, int rank,
      int p) {
    if (rank < 0 || rank >= p) {
      throw new IllegalArgumentException("Rank " + rank + " outside [0, " + p + ")");
    }
    RankWeights w = new RankWeights(rank, p);
    for (Slice s : slices) {
      float[] data = switch (s.read()) {
        case ROWS -> src.rows(s.tensor(), s.start(), s.count());
        case COLUMNS -> src.columns(s.tensor(), s.start(), s.count());
        case ALL -> src.all(s.tensor());
      };
      if (data.length != s.elements()) {
        throw new IllegalArgumentException("Tensor '" + s.tensor() + "': read " + data.length + " values for "
            + s.id() + ", expected [" + s.blockRows() + ", " + s.blockCols() + "]");
      }
      w.put(s.id(), new RankWeights.Block(s.blockRows(), s.blockCols(), data));
    }
    return w;
  }

  /**
   * Reads {@code slices} from {@code src} straight into tensors on {@code be} (a checkpoint's own bytes, no float32
   * copy on the heap): 2-D tensors (linear weights, embedding tables) in {@code storage} (int8 linears in the float
   * type they were read in, quantized as their kernel is prepared), 1-D ones (norm weights, biases) in f32. The
   * caller closes the result (it frees what no rank model took).
   */
  public static RankWeights read(java.util.Collection<Slice> slices, org.sparktp.nn.WeightSource src, int rank,
      int p, Backend be, DType storage) {
    if (rank < 0 || rank >= p) {
      throw new IllegalArgumentException("Rank " + rank + " outside [0, " + p + ")");
    }
    RankWeights w = new RankWeights(rank, p);
    try {
      for (Slice s : slices) {
        DType loaded = src.dtype(s.tensor());
        DType land = s.kind() == Slice.Kind.VECTOR ? DType.F32
            : storage.weightTensorType(loaded.isFloat() && be.supports(loaded) ? loaded : DType.F32);
        Tensor t = switch (s.read()) {
          case ROWS, ALL -> src.rows(s.tensor(), s.start(), s.count(), s.cols(), land, be);
          case COLUMNS -> src.columns(s.tensor(), s.start(), s.count(), s.rows(), land, be);
        };
        if (t.rows() != s.blockRows() || t.cols() != s.blockCols()) {
          String got = t.shape();
          t.close();
          throw new IllegalArgumentException("Tensor '" + s.tensor() + "': read " + got + " for " + s.id()
              + ", expected [" + s.blockRows() + ", " + s.blockCols() + "]");
        }
        w.putTensor(s.id(), t);
      }
      return w;
    } catch (RuntimeException | Error e) {
      w.close();
      throw e;
    }
  }

  /** The storage dtype of the linears ({@code int8}: quantized per output channel by the backend). */
  public DType storage() {
    return storage;
  }

  /** The dtype of the tensors ops read directly as tables (embeddings) on this rank: {@link #tableDtype(DType)}. */
  public DType tableDtype() {
    DType t = tableDtype(storage);
    return backend.supports(t) ? t : DType.F32;
  }

  /**
   * The storage dtype of embedding tables (token, position, token-type) for linears stored as {@code linear}: that
   * float type; bf16 for int8 weight-only linears (a table is gathered, never multiplied, so it is not quantized;
   * bf16 halves it and its rounding, about 4e-3 relative, is below int8's own 1e-2). One rule for every model.
   */
  public static DType tableDtype(DType linear) {
    return linear.isFloat() ? linear : DType.BF16;
  }

  public Backend backend() {
    return backend;
  }

  /** The slice as a new tensor the caller owns, in the dtype it was read in (host blocks: f32). */
  private Tensor load(Slice s) {
    Tensor t = blocks.take(s.id());
    if (t == null) {
      RankWeights.Block b = blocks.get(s.id());
      t = backend.upload(b.data(), b.rows(), b.cols());
    }
    if (t.rows() != s.blockRows() || t.cols() != s.blockCols()) {
      String got = t.shape();
      t.close();
      throw new IllegalArgumentException("Tensor '" + s.tensor() + "': read " + got + " for " + s.id()
          + ", expected [" + s.blockRows() + ", " + s.blockCols() + "]");
    }
    return t;
  }

  private Tensor as(Tensor t, DType dtype) {
    if (t.dtype() == dtype) {
      return t;
    }
    try (t) {
      return backend.convert(t, dtype);
    }
  }

  /** The slice on the backend in {@code dtype}, owned here and shared by every op that asks (made once). */
  public Tensor tensor(Slice s, DType dtype) {
    Tensor t = shared.get(s.id());
    if (t == null) {
      t = as(load(s), dtype);
      shared.put(s.id(), t);
    } else if (t.dtype() != dtype) {
      throw new IllegalStateException("Slice " + s.id() + " is used as " + t.dtype().id() + " and " + dtype.id());
    }
    return t;
  }

  /** A float32 tensor read directly by an op (norm weights); shared. */
  public Tensor tensor(Slice s) {
    return tensor(s, DType.F32);
  }

  /**
   * The slice as a tensor the caller owns (in the dtype it was read in): taken when only this op reads it, else
   * a copy (on the backend) of the shared tensor.
   */
  public Tensor take(Slice s) {
    if (uses.getOrDefault(s.id(), 1) <= 1 && !shared.containsKey(s.id())) {
      return load(s);
    }
    Tensor sh = shared.get(s.id());
    if (sh == null) {
      sh = load(s);
      shared.put(s.id(), sh);
    }
    return backend.convert(sh, sh.dtype());
  }

  /** A small slice (a bias) as float32 values on the heap. */
  public float[] floats(Slice s) {
    try (Tensor t = take(s)) {
      return backend.download(t);
    }
  }

  /**
   * {@code act(x W^T + b)} with {@code weight} ({@code [out, in]}, any float dtype) stored in {@link #storage()}
   * and {@code bias} f32 or null; takes ownership of both (closed here, also when this fails).
   */
  public LinearKernel linear(Tensor weight, Tensor bias, Activation act) {
    LinearKernel k = LinearKernel.create(weight, bias, act, storage);
    kernels.add(k);
    return k;
  }

  /**
   * The linear of a slice read whole as its weight ({@code [out, in]}, no bias): an LM head. When another op
   * reads the same slice (a tied embedding) and this backend keeps an f32 weight as it is (OpenBLAS), both
   * use one tensor; a kernel that repacks its weight (oneDNN, bf16/f16) gets its own copy.
   */
  public LinearKernel linear(Slice s, Activation act) {
    boolean tied = uses.getOrDefault(s.id(), 1) > 1;
    if (tied && storage == DType.F32 && !backend.kernel(DType.F32).startsWith("onednn")) {
      // the generic/OpenBLAS linear keeps the tensor unchanged: share it (closed with the shared tensors;
      // this kernel holds nothing else, so it is not closed itself)
      return new LinearKernel(tensor(s, DType.F32), null, act);
    }
    return linear(take(s), null, act);
  }

  /** Bytes held on the backend: the linears as stored (packed) and the shared tensors. */
  public long bytes() {
    long b = 0;
    for (LinearKernel k : kernels) {
      b += k.bytes();
    }
    for (Tensor t : shared.values()) {
      b += t.bytes();
    }
    return b;
  }

  /** The kernel of the linears ({@link LinearKernel#kernel()} of the first; all share the dtype). */
  public String kernel() {
    return kernels.isEmpty() ? backend.kernel(storage) : kernels.get(0).kernel();
  }

  @Override
  public void close() {
    RuntimeException first = null;
    for (LinearKernel k : kernels) {
      try {
        k.close();
      } catch (RuntimeException e) {
        if (first == null) {
          first = e;
        } else {
          first.addSuppressed(e);
        }
      }
    }
    kernels.clear();
    for (Tensor t : shared.values()) {
      t.close();
    }
    shared.clear();
    if (first != null) {
      throw first;
    }
  }
}
