package org.sparktp.nn.gen;

import java.util.ArrayList;
import java.util.IdentityHashMap;
import java.util.List;
import java.util.Map;
import org.sparktp.backend.Backend;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * One rank's KV cache, sharded by heads like the attention weights: for every attention layer a
 * sequence's slot holds {@code [capacity, 2 * kvHeads_r * headDim]} (keys then values of the KV heads
 * this rank holds, replicas included), off-heap on the rank's backend. A slot is reserved whole when its
 * row joins the batch ({@code capacity} = prompt + max_new_tokens - 1 tokens), so admission is decided
 * once and a running row never runs out of cache.
 *
 * <p>The budget is counted with the bytes per token of the group's largest rank (the same number on
 * every rank), so every rank admits the same rows. Closing the cache closes every live slot.
 *
 * <p>Keys and values are stored in the activation dtype when it is bf16/f16 ({@code spark.tp.activation-dtype};
 * half the bytes per token) and widened to f32 for the attention math; else in f32.
 */
public final class KvCache implements AutoCloseable {

  /** An attention layer's cache width on this rank. */
  record Layer(String name, int width) {}

  /** One sequence's tensors, one per layer. */
  public final class Slot {
    final Tensor[] tensors;
    final long bytes;

    private Slot(Tensor[] tensors, long bytes) {
      this.tensors = tensors;
      this.bytes = bytes;
    }
  }

  private final Backend backend;
  private final DType dtype;
  private final List<Layer> layers;
  private final long bytesPerToken;
  private final long maxBytes;
  private final Map<Slot, Boolean> live = new IdentityHashMap<>();
  private long used;
  private long peak;
  private boolean closed;

  KvCache(Backend backend, List<Layer> layers, long bytesPerToken, long maxBytes) {
    this(backend, layers, bytesPerToken, maxBytes, DType.F32);
  }

  KvCache(Backend backend, List<Layer> layers, long bytesPerToken, long maxBytes, DType dtype) {
    this.backend = backend;
    this.dtype = dtype;
    this.layers = List.copyOf(layers);
    this.bytesPerToken = bytesPerToken;
    this.maxBytes = maxBytes;
  }

  /** The cache of rank {@code rank} for {@code plan}'s attention layers, in f32. */
  public static KvCache forPlan(ModelPlan plan, int rank, Backend backend, long maxBytes) {
    return forPlan(plan, rank, backend, maxBytes, DType.F32);
  }

  /**
   * The cache of rank {@code rank} for {@code plan}'s attention layers, its keys and values stored in
   * {@link #storage storage(activations)} (bf16/f16 when the activations are, else f32).
   */
  public static KvCache forPlan(ModelPlan plan, int rank, Backend backend, long maxBytes, DType activations) {
    DType d = storage(activations, backend);
    return new KvCache(backend, layers(plan, rank), bytesPerToken(plan, d), maxBytes, d);
  }

  /** The type the cache stores for activations of {@code activations}: the same when it is bf16/f16 (and held). */
  public static DType storage(DType activations, Backend backend) {
    return activations != null && activations.isHalf() && backend.supports(activations) ? activations : DType.F32;
  }

  /** Cache bytes one token takes on the group's largest rank (float32 keys and values of every layer). */
  public static long bytesPerToken(ModelPlan plan) {
    return bytesPerToken(plan, DType.F32);
  }

  /** Cache bytes one token takes on the group's largest rank, keys and values stored as {@code dtype}. */
  public static long bytesPerToken(ModelPlan plan, DType dtype) {
    return plan.kvBytesPerToken(dtype);
  }

  static List<Layer> layers(ModelPlan plan, int rank) {
    List<Layer> out = new ArrayList<>();
    collect(plan.ops(), plan.tpSize(), rank, out);
    return out;
  }

  private static void collect(List<Op> ops, int p, int rank, List<Layer> out) {
    for (Op o : ops) {
      int width = o.kvFloatsPerToken(p, rank);
      if (width > 0) {
        out.add(new Layer(o.name(), width));
      }
      collect(o.children(), p, rank, out);
    }
  }

  List<Layer> layerList() {
    return layers;
  }

  public long bytesPerToken() {
    return bytesPerToken;
  }

  /** The type keys and values are stored in. */
  public DType dtype() {
    return dtype;
  }

  public long maxBytes() {
    return maxBytes;
  }

  /** Budget bytes a slot of {@code tokens} takes. */
  public long bytesFor(int tokens) {
    return bytesPerToken * tokens;
  }

  public boolean fits(int tokens) {
    return used + bytesFor(tokens) <= maxBytes;
  }

  /** Budget bytes of the live slots. */
  public long usedBytes() {
    return used;
  }

  /** Most budget bytes live at once. */
  public long peakBytes() {
    return peak;
  }

  public int liveSlots() {
    return live.size();
  }

  /** A slot for {@code tokens} tokens; the caller checked {@link #fits}. */
  Slot reserve(int tokens) {
    if (closed) {
      throw new IllegalStateException("The KV cache was used after it was closed");
    }
    if (!fits(tokens)) {
      throw new IllegalStateException("KV cache slot of " + tokens + " tokens (" + bytesFor(tokens)
          + " bytes) does not fit: " + used + " of " + maxBytes + " bytes in use");
    }
    Tensor[] t = new Tensor[layers.size()];
    try {
      for (int i = 0; i < t.length; i++) {
        t[i] = backend.allocate(tokens, layers.get(i).width(), dtype);
      }
    } catch (RuntimeException e) {
      for (Tensor x : t) {
        if (x != null) {
          x.close();
        }
      }
      throw e;
    }
    Slot s = new Slot(t, bytesFor(tokens));
    live.put(s, Boolean.TRUE);
    used += s.bytes;
    peak = Math.max(peak, used);
    return s;
  }

  void release(Slot s) {
    if (live.remove(s) != null) {
      used -= s.bytes;
      for (Tensor t : s.tensors) {
        t.close();
      }
    }
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (Slot s : new ArrayList<>(live.keySet())) {
      release(s);
    }
  }
}
