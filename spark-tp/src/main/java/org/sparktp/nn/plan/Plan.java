package org.sparktp.nn.plan;

import java.util.List;
import java.util.Map;
import org.sparktp.backend.Backend;
import org.sparktp.nn.Layout;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.Planner;
import org.sparktp.nn.ops.Slice;
import org.sparktp.nn.ops.Weights;
import org.sparktp.shard.Split;
import org.sparktp.tensor.DType;

/**
 * A model planned for a group of {@code p} ranks, whatever format it came from: its {@link ModelGraph}'s ops as the
 * {@link Planner} placed them (how each weight is split, the layout of every activation, and a
 * {@link org.sparktp.nn.ops.LayoutChangeOp} where a layout changes). Everything here iterates over the ops: the
 * slices each rank reads ({@link #shard}: a slice two ops share, such as a tied embedding and LM head, once), the
 * weight bytes and {@link #explain}.
 *
 * <p>The output is left in whatever layout the last op produces; the runner returns each row to the rank that owns
 * it (reduce-scatter for {@code PARTIAL}, all-to-all for {@code SHARDED}, a local slice for {@code REPLICATED}).
 */
public final class Plan implements ModelPlan {
  private static final long serialVersionUID = 3L;

  private final ModelGraph graph;
  private final int tpSize;
  private final List<Op> ops;
  private final Layout outputLayout;
  private final Split outputSplit;

  private Plan(ModelGraph graph, int tpSize, Planner.Result r) {
    this.graph = graph;
    this.tpSize = tpSize;
    this.ops = r.ops();
    this.outputLayout = r.layout();
    this.outputSplit = r.split();
  }

  /** Plans {@code graph} for a group of {@code p} ranks; every rank's split is checked here, before any task runs. */
  public static Plan build(ModelGraph graph, int p) {
    if (p <= 0) {
      throw new IllegalArgumentException("Tensor-parallel size must be positive, got " + p);
    }
    Plan plan = new Plan(graph, p, Planner.plan(graph.ops(), p, graph.inputWidth()));
    for (int r = 0; r < p; r++) {
      plan.slices(r); // a split that cannot be made (p larger than the heads, ...) fails here
    }
    return plan;
  }

  @Override
  public ModelGraph graph() {
    return graph;
  }

  /** The transformer this plan runs (its model, task and truncation); an error for other models. */
  public TransformerGraph transformer() {
    return graph.transformer();
  }

  @Override
  public int tpSize() {
    return tpSize;
  }

  @Override
  public List<Op> ops() {
    return ops;
  }

  @Override
  public Layout outputLayout() {
    return outputLayout;
  }

  /** The column split of a sharded output, else null. */
  public Split outputSplit() {
    return outputSplit;
  }

  /** Number of collectives per forward pass (inside the model; not counting the row exchange). */
  public int collectiveCount() {
    int n = 0;
    for (Op o : ops) {
      n += o.collectives(tpSize);
    }
    return n;
  }

  /** Rank {@code rank}'s distinct slices, keyed by {@link Slice#id()}, in op order. */
  @Override
  public Map<String, Slice> slices(int rank) {
    return Weights.slices(ops, tpSize, rank);
  }

  /** Cuts rank {@code rank}'s weight slices out of {@code src} as host blocks (only those byte ranges). */
  @Override
  public RankWeights shard(WeightSource src, int rank) {
    return Weights.read(slices(rank).values(), src, rank, tpSize);
  }

  /**
   * Reads rank {@code rank}'s slices from {@code src} straight into tensors on {@code be} ({@link Weights#read}: a
   * checkpoint's bf16 bytes land in off-heap memory without a float32 copy). The caller closes the result.
   */
  @Override
  public RankWeights shard(WeightSource src, int rank, Backend be, DType storage) {
    return Weights.read(slices(rank).values(), src, rank, tpSize, be, storage);
  }

  /** Bytes of weights rank {@code rank} holds in float32: {@link #weightBytes(int, DType)} at f32. */
  public long weightBytes(int rank) {
    return weightBytes(rank, DType.F32);
  }

  /**
   * Bytes of weights rank {@code rank} holds with linear weights stored in {@code dtype}, from the plan alone: the
   * one count that explain, the shard cache and the CLI report. Each distinct slice of the rank once (a replicated
   * tensor on every rank, a bias once per linear, a norm or table two ops read once), in the dtype the engine stores
   * its kind in ({@link Slice#bytes}: linear weights in {@code dtype}, embedding tables in
   * {@link Weights#tableDtype tableDtype(dtype)}, biases and norms f32), int8 weights with one f32 scale per row of
   * their block; and where a linear reads a slice another op reads too (an LM head tied to the embedding table), its
   * own stored copy, except at f32, where the kernel keeps the shared tensor as it is ({@link Weights#linear(Slice,
   * org.sparktp.backend.Activation)}; oneDNN's f32 GEMM, asked for with {@code spark.tp.cpu.gemm=onednn}, copies).
   * Kernels that pad their packed layout (oneDNN rounds small widths up to its blocks) hold a little more.
   */
  @Override
  public long weightBytes(int rank, DType dtype) {
    java.util.Set<String> seen = new java.util.HashSet<>();
    long b = 0;
    for (Op o : ops) { // an op's slices include its body's
      for (Slice s : o.slices(tpSize, rank)) {
        boolean first = seen.add(s.id());
        boolean ownCopy = !first && s.kind() == Slice.Kind.WEIGHT && dtype != DType.F32;
        if (first) {
          b += s.bytes(dtype);
        } else if (ownCopy) {
          b += (long) dtype.size() * s.elements();
        }
        if ((first || ownCopy) && dtype.isInt8() && s.kind() == Slice.Kind.WEIGHT) {
          b += 4L * s.blockRows(); // int8: one f32 scale per output row of the block
        }
      }
    }
    return b;
  }

  /** A stable text that identifies the plan (for caches): a hash of the explain text. */
  @Override
  public String fingerprint() {
    return Integer.toHexString(explain().hashCode());
  }

  /** The plan as text: every op with its layouts and collectives, the row exchange and the weight bytes per rank. */
  @Override
  public String explain() {
    return graph.explain(this);
  }

  /** The precision lines of explain, the activations stored in f32. */
  public String explainPrecision(DType dtype, String kernel) {
    return explainPrecision(dtype, kernel, DType.F32);
  }

  /**
   * The precision lines of explain: the linear weights' storage dtype, the GEMM kernel, the weight bytes per rank in
   * that dtype (what stays f32 said) and the activations' dtype.
   */
  public String explainPrecision(DType dtype, String kernel, DType activations) {
    return graph.explainPrecision(this, dtype, kernel, activations);
  }

  @Override
  public String toString() {
    return explain();
  }
}
