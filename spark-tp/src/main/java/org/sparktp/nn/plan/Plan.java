package org.sparktp.nn.plan;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.sparktp.backend.Backend;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.Layout;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.ops.ActivationOp;
import org.sparktp.nn.ops.EmbeddingOp;
import org.sparktp.nn.ops.LinearOp;
import org.sparktp.nn.ops.NormOp;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.Planner;
import org.sparktp.nn.ops.ResidualOp;
import org.sparktp.nn.ops.Slice;
import org.sparktp.nn.ops.Weights;
import org.sparktp.shard.Split;
import org.sparktp.tensor.DType;

/**
 * How a model of rows (a spark-tp layer list: vectors, one id or a bag of ids per row) runs on a tensor-parallel
 * group of {@code p} ranks: its ops as the {@link Planner} placed them (how each weight is split, the layout of
 * every activation, and a {@link org.sparktp.nn.ops.LayoutChangeOp} where a layout changes). Everything here
 * iterates over the ops: the slices each rank reads ({@link #shard}), the weight bytes, and {@link #explain}.
 *
 * <p>The output is left in whatever layout the last op produces; the runner returns each row to the rank that owns
 * it (reduce-scatter for {@code PARTIAL}, all-to-all for {@code SHARDED}, a local slice for {@code REPLICATED}).
 */
public final class Plan implements ModelPlan {
  private static final long serialVersionUID = 2L;

  private final int tpSize;
  private final int inputDim;
  private final int outputDim;
  private final boolean takesIds;
  private final boolean takesBags;
  private final List<Op> ops;
  private final Layout outputLayout;
  private final Split outputSplit;

  private Plan(int tpSize, ModelSpec spec, Planner.Result r) {
    this.tpSize = tpSize;
    this.inputDim = spec.inputDim();
    this.outputDim = spec.outputDim();
    this.takesIds = spec.takesIds();
    this.takesBags = spec.takesBags();
    this.ops = r.ops();
    this.outputLayout = r.layout();
    this.outputSplit = r.split();
  }

  /** Plans {@code spec} for a group of {@code p} ranks. */
  public static Plan build(ModelSpec spec, int p) {
    if (p <= 0) {
      throw new IllegalArgumentException("Tensor-parallel size must be positive, got " + p);
    }
    checkNames(spec.layers(), new HashSet<>(), new LayerSpec.Embedding[1]);
    return new Plan(p, spec, Planner.plan(ops(spec.layers()), p, spec.inputDim()));
  }

  /** The layer list as ops (unplanned), each tensor named {@code <layer>.weight} / {@code <layer>.bias}. */
  static List<Op> ops(List<LayerSpec> layers) {
    List<Op> out = new ArrayList<>();
    int i = 0;
    for (LayerSpec l : layers) {
      if (l instanceof LayerSpec.Linear x) {
        out.add(LinearOp.of(x.name(), x.in(), x.out(), x.bias() != null, x.parallel()));
      } else if (l instanceof LayerSpec.Act a) {
        out.add(ActivationOp.of(a.activation(), a.width()));
      } else if (l instanceof LayerSpec.LayerNorm n) {
        out.add(new NormOp(n.name(), false, n.width(), n.gamma() == null ? null : n.name() + ".weight",
            n.beta() == null ? null : n.name() + ".bias", n.eps()));
      } else if (l instanceof LayerSpec.Embedding e) {
        out.add(EmbeddingOp.rows(e.name(), e.vocab(), e.dim(), !e.bag() ? EmbeddingOp.Lookup.ID
            : e.mean() ? EmbeddingOp.Lookup.MEAN : EmbeddingOp.Lookup.SUM));
      } else {
        out.add(new ResidualOp("residual." + i, ops(((LayerSpec.Residual) l).body()), true));
      }
      i++;
    }
    return out;
  }

  /** Names are unique, except a linear tied to the embedding (the same {@code [vocab, dim]} table). */
  private static void checkNames(List<LayerSpec> layers, Set<String> names, LayerSpec.Embedding[] emb) {
    for (LayerSpec l : layers) {
      String n = l.name();
      if (l instanceof LayerSpec.Embedding e) {
        emb[0] = e;
      }
      boolean tied = l instanceof LayerSpec.Linear x && emb[0] != null && !emb[0].bag() && x.name().equals(emb[0].name())
          && x.out() == emb[0].vocab() && x.in() == emb[0].dim() && x.bias() == null;
      if (n != null && !names.add(n) && !tied) {
        throw new IllegalArgumentException("Two layers are named '" + n + "'; layer names must be unique");
      }
      checkNames(l.children(), names, emb);
    }
  }

  @Override
  public InputBatch.Kind inputKind() {
    return takesBags ? InputBatch.Kind.BAGS : takesIds ? InputBatch.Kind.IDS : InputBatch.Kind.DENSE;
  }

  @Override
  public int tpSize() {
    return tpSize;
  }

  public int inputDim() {
    return inputDim;
  }

  public int outputDim() {
    return outputDim;
  }

  public boolean takesIds() {
    return takesIds;
  }

  public boolean takesBags() {
    return takesBags;
  }

  /** The planned ops, layout changes included. */
  public List<Op> ops() {
    return ops;
  }

  /** The layout of the model's output. */
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
  public java.util.Map<String, Slice> slices(int rank) {
    return Weights.slices(ops, tpSize, rank);
  }

  /** Cuts rank {@code rank}'s weight shards out of {@code src} as host blocks. */
  public RankWeights shard(WeightSource src, int rank) {
    return Weights.read(slices(rank).values(), src, rank, tpSize);
  }

  /**
   * Reads rank {@code rank}'s shards from {@code src} straight into tensors on {@code be} ({@link Weights#read}: a
   * checkpoint's bf16 bytes land in off-heap memory without a float32 copy). The caller closes the result.
   */
  public RankWeights shard(WeightSource src, int rank, Backend be, DType linearDtype) {
    return Weights.read(slices(rank).values(), src, rank, tpSize, be, linearDtype);
  }

  /** Bytes of weights rank {@code rank} holds in float32, computed from the plan alone. */
  public long weightBytes(int rank) {
    return weightBytes(rank, DType.F32);
  }

  /**
   * Bytes of weights rank {@code rank} holds with linear weights stored in {@code linearDtype} and embedding tables
   * in {@link #tableDtype tableDtype(linearDtype)} (biases and norms f32; int8 adds one f32 scale per row of each
   * weight shard). Each op's weights count on their own (a head tied to the embedding holds its own copy).
   */
  public long weightBytes(int rank, DType linearDtype) {
    long b = 0;
    for (Op o : ops) {
      b += weightBytes(o, rank, linearDtype);
    }
    return b;
  }

  private long weightBytes(Op o, int rank, DType dt) {
    long b = 0;
    for (Op c : o.children()) {
      b += weightBytes(c, rank, dt);
    }
    if (!o.children().isEmpty()) {
      return b;
    }
    for (Slice s : o.slices(tpSize, rank)) {
      // int8 keeps one f32 scale per output row of a linear's weight block (per input block for a row shard)
      b += s.bytes(dt) + (dt.isInt8() && s.kind() == Slice.Kind.WEIGHT ? 4L * s.blockRows() : 0);
    }
    return b;
  }

  /** The storage type of embedding tables for linear weights stored as {@code linear}: {@link Weights#tableDtype}. */
  public static DType tableDtype(DType linear) {
    return Weights.tableDtype(linear);
  }

  /** A stable text that identifies the plan (for caches): the explain text itself. */
  public String fingerprint() {
    return Integer.toHexString(explain().hashCode());
  }

  /**
   * The plan as a table: each op with its input and output layouts, the collective it runs, the bytes
   * each rank sends per row for it, then the row exchange and the weight bytes per rank.
   */
  public String explain() {
    StringBuilder sb = new StringBuilder();
    sb.append(String.format(Locale.ROOT, "Plan for tp=%d: input %s %d, output %d (%s)%n", tpSize,
        takesBags ? "id bags, vocabulary" : takesIds ? "ids, vocabulary" : "width", inputDim, outputDim,
        outputLayout()));
    sb.append(String.format(Locale.ROOT, "%-4s %-52s %-11s %-11s %-26s %12s%n", "#", "op", "in", "out",
        "collective", "bytes/row"));
    double[] total = {0};
    int[] idx = {0};
    table(ops, "", sb, total, idx);
    if (tpSize > 1) {
      double frac = (tpSize - 1) / (double) tpSize;
      double inBytes = takesIds ? (takesBags ? 0 : 4) : 4.0 * inputDim;
      String inNote = takesBags ? "all-gather ids" : "all-gather";
      sb.append(String.format(Locale.ROOT, "%-4s %-52s %-11s %-11s %-26s %12.0f%n", "in", "input rows to the group",
          "-", "REPLICATED", inNote, frac * inBytes));
      String back = switch (outputLayout()) {
        case REPLICATED -> "local slice";
        case PARTIAL -> "reduce-scatter over rows";
        case SHARDED -> "all-to-all";
      };
      double backBytes = outputLayout() == Layout.REPLICATED ? 0 : frac * 4.0 * outputDim;
      sb.append(String.format(Locale.ROOT, "%-4s %-52s %-11s %-11s %-26s %12.0f%n", "out", "output rows to their owner",
          outputLayout(), "-", back, backBytes));
      total[0] += frac * inBytes + backBytes;
    }
    sb.append(String.format(Locale.ROOT, "collectives per forward pass: %d; bytes sent per row per rank: %.0f%n",
        collectiveCount(), total[0]));
    long min = Long.MAX_VALUE;
    long max = 0;
    long sum = 0;
    StringBuilder per = new StringBuilder();
    for (int r = 0; r < tpSize; r++) {
      long b = weightBytes(r);
      min = Math.min(min, b);
      max = Math.max(max, b);
      sum += b;
      per.append(r == 0 ? "" : ", ").append(b);
    }
    sb.append(String.format(Locale.ROOT, "weight bytes per rank: [%s] (min %d, max %d, total %d)%n", per, min, max,
        sum));
    return sb.toString();
  }

  private void table(List<Op> list, String indent, StringBuilder sb, double[] total, int[] idx) {
    for (Op o : list) {
      if (!o.children().isEmpty()) {
        sb.append(String.format(Locale.ROOT, "%-4d %-52s %-11s %-11s %-26s %12s%n", idx[0]++, indent + o.label(tpSize),
            o.in(), o.out(), "-", "0"));
        table(o.children(), indent + "  ", sb, total, idx);
        sb.append(String.format(Locale.ROOT, "%-4s %-52s%n", "", indent + "} + x"));
        continue;
      }
      double bytes = o.bytesPerRow(tpSize);
      total[0] += bytes;
      sb.append(String.format(Locale.ROOT, "%-4d %-52s %-11s %-11s %-26s %12.0f%n", idx[0]++, indent + o.label(tpSize),
          o.in(), o.out(), o.collective(tpSize), bytes));
    }
  }

  /**
   * The precision lines of explain: the linear weights' storage dtype, the GEMM kernel and the weight bytes
   * per rank in that dtype (embedding tables too; biases and norms stay f32), and the activations' dtype.
   */
  public String explainPrecision(DType linearDtype, String kernel) {
    return explainPrecision(linearDtype, kernel, DType.F32);
  }

  /** {@link #explainPrecision(DType, String)} with the activations stored in {@code activations}. */
  public String explainPrecision(DType linearDtype, String kernel, DType activations) {
    StringBuilder per = new StringBuilder();
    long max = 0;
    for (int r = 0; r < tpSize; r++) {
      long b = weightBytes(r, linearDtype);
      max = Math.max(max, b);
      per.append(r == 0 ? "" : ", ").append(b);
    }
    String act = activations == DType.F32 ? "activations f32 between ops"
        : "activations " + activations.id() + " between ops (rounded once at each op boundary; ops compute in f32; "
            + "partial sums reduced in f32, all-gathers move " + activations.id() + ")";
    DType table = tableDtype(linearDtype);
    return String.format(Locale.ROOT, "dtype %s (linear weights; embedding tables %s; GEMMs accumulate in f32; "
        + "biases and norms f32), kernel %s%n%s%nweight bytes per rank in %s: [%s] (max %d; f32 would be %d)%n",
        linearDtype.id(), table == linearDtype ? "too" : "in " + table.id(), kernel, act, linearDtype.id(), per, max,
        weightBytes(0))
        + (linearDtype == DType.I8 ? "int8 W8A8: weights symmetric with one f32 scale per output channel of each "
            + "shard, quantized at load; activations quantized per row at every linear; s8 x s8 GEMMs with s32 sums "
            + "(about 1e-2 relative error, see docs/precision.md)\n"
            : linearDtype == DType.I8_WO ? "int8 weight-only: symmetric, one f32 scale per output "
            + "channel of each shard, quantized at load (about 1e-2 relative error, see docs/precision.md)\n" : "");
  }

  @Override
  public String toString() {
    return explain();
  }
}
