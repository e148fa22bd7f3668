package org.sparktp.nn;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.sparktp.backend.Activation;
import org.sparktp.shard.Split;

/**
 * How a model runs on a tensor-parallel group of {@code p} ranks: the ops in order, how each weight is
 * split, the layout of every activation, and the collectives inserted where a layout changes.
 *
 * <p>The planner starts from a replicated input and, for {@code parallel = auto}, alternates column
 * and row for consecutive linears: a column-parallel linear leaves its output sharded by columns, an
 * elementwise activation keeps it sharded, and the next linear runs row-parallel on those shards, so
 * each pair costs one reduction. Layer norm, softmax and residual additions need whole rows, so a
 * partial activation is all-reduced (and a sharded one all-gathered) before them. A linear whose split
 * dimension is smaller than {@code p} runs replicated under {@code auto}; forcing {@code column} or
 * {@code row} on it is an error. An elementwise activation that follows a column or replicated linear
 * is fused into that linear's epilogue.
 *
 * <p>The output is left in whatever layout the last op produces; {@link TpRunner} returns each row to
 * the rank that owns it.
 */
public final class Plan implements Serializable {
  private static final long serialVersionUID = 1L;

  private final int tpSize;
  private final int inputDim;
  private final int outputDim;
  private final boolean takesIds;
  private final boolean takesBags;
  private final List<Step> steps;

  private Plan(int tpSize, ModelSpec spec, List<Step> steps) {
    this.tpSize = tpSize;
    this.inputDim = spec.inputDim();
    this.outputDim = spec.outputDim();
    this.takesIds = spec.takesIds();
    this.takesBags = spec.takesBags();
    this.steps = List.copyOf(steps);
  }

  /** Plans {@code spec} for a group of {@code p} ranks. */
  public static Plan build(ModelSpec spec, int p) {
    if (p <= 0) {
      throw new IllegalArgumentException("Tensor-parallel size must be positive, got " + p);
    }
    Set<String> names = new HashSet<>();
    checkNames(spec.layers(), names);
    Planner pl = new Planner(p);
    List<Step> steps = pl.plan(spec.layers(), Layout.REPLICATED, null, true);
    return new Plan(p, spec, steps);
  }

  private static void checkNames(List<LayerSpec> layers, Set<String> names) {
    checkNames(layers, names, null);
  }

  /** Names are unique, except a linear tied to the embedding (the same {@code [vocab, dim]} table). */
  private static void checkNames(List<LayerSpec> layers, Set<String> names, LayerSpec.Embedding[] embedding) {
    LayerSpec.Embedding[] emb = embedding == null ? new LayerSpec.Embedding[1] : embedding;
    for (LayerSpec l : layers) {
      String n = l instanceof LayerSpec.Linear x ? x.name()
          : l instanceof LayerSpec.LayerNorm x ? x.name()
          : l instanceof LayerSpec.Embedding x ? x.name() : null;
      if (l instanceof LayerSpec.Embedding e) {
        emb[0] = e;
      }
      boolean tied = l instanceof LayerSpec.Linear x && emb[0] != null && !emb[0].bag() && x.name().equals(emb[0].name())
          && x.out() == emb[0].vocab() && x.in() == emb[0].dim() && x.bias() == null;
      if (n != null && !names.add(n) && !tied) {
        throw new IllegalArgumentException("Two layers are named '" + n + "'; layer names must be unique");
      }
      if (l instanceof LayerSpec.Residual r) {
        checkNames(r.body(), names, emb);
      }
    }
  }

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

  public List<Step> steps() {
    return steps;
  }

  /** The layout of the model's output. */
  public Layout outputLayout() {
    return steps.get(steps.size() - 1).out();
  }

  /** The column split of a sharded output, else null. */
  public Split outputSplit() {
    Step last = steps.get(steps.size() - 1);
    if (outputLayout() != Layout.SHARDED) {
      return null;
    }
    if (last instanceof Step.Linear l) {
      return l.split();
    }
    if (last instanceof Step.Act a) {
      return a.split();
    }
    if (last instanceof Step.Convert c) {
      return c.split();
    }
    throw new IllegalStateException("sharded output from " + last);
  }

  /** Number of collectives per forward pass (inside the model; not counting the row exchange). */
  public int collectiveCount() {
    return countCollectives(steps);
  }

  private int countCollectives(List<Step> s) {
    int n = 0;
    for (Step st : s) {
      if (st instanceof Step.Convert c && c.bytesPerRow(Math.max(2, tpSize)) > 0 && tpSize > 1) {
        n++;
      } else if (st instanceof Step.Residual r) {
        n += countCollectives(r.body());
      }
    }
    return n;
  }

  /** Cuts rank {@code rank}'s weight shards out of {@code src}. */
  public RankWeights shard(WeightSource src, int rank) {
    if (rank < 0 || rank >= tpSize) {
      throw new IllegalArgumentException("Rank " + rank + " outside [0, " + tpSize + ")");
    }
    RankWeights w = new RankWeights(rank, tpSize);
    shard(steps, src, rank, w, null, null);
    return w;
  }

  /**
   * Reads rank {@code rank}'s shards from {@code src} with the linear weights straight into tensors of
   * {@code linearDtype} on {@code be} (a checkpoint's bf16 bytes land in off-heap memory without a float32
   * copy); the other tensors (biases, norms, embeddings) as float32 host blocks. The caller closes the
   * result (which frees what no {@link RankModel} took).
   */
  public RankWeights shard(WeightSource src, int rank, org.sparktp.backend.Backend be,
      org.sparktp.tensor.DType linearDtype) {
    if (rank < 0 || rank >= tpSize) {
      throw new IllegalArgumentException("Rank " + rank + " outside [0, " + tpSize + ")");
    }
    RankWeights w = new RankWeights(rank, tpSize);
    try {
      shard(steps, src, rank, w, be, linearDtype);
      return w;
    } catch (RuntimeException | Error e) {
      w.close();
      throw e;
    }
  }

  private static void shard(List<Step> steps, WeightSource src, int rank, RankWeights w,
      org.sparktp.backend.Backend be, org.sparktp.tensor.DType dt) {
    for (Step s : steps) {
      if (s instanceof Step.Linear l) {
        String wn = l.name() + ".weight";
        String bn = l.name() + ".bias";
        switch (l.mode()) {
          case COLUMN -> {
            int off = l.split().offset(rank);
            int len = l.split().length(rank);
            if (w.has(wn, len, l.inFeatures())) {
              // a head tied to the embedding shares its block (uploaded from it by RankModel)
            } else if (be != null) {
              w.putTensor(wn, src.rows(wn, off, len, l.inFeatures(), dt, be));
            } else {
              w.put(wn, new RankWeights.Block(len, l.inFeatures(), src.rows(wn, off, len)));
            }
            if (l.hasBias()) {
              w.put(bn, new RankWeights.Block(1, len, src.rows(bn, off, len)));
            }
          }
          case ROW -> {
            int off = l.split().offset(rank);
            int len = l.split().length(rank);
            if (be != null) {
              w.putTensor(wn, src.columns(wn, off, len, l.outFeatures(), dt, be));
            } else {
              w.put(wn, new RankWeights.Block(l.outFeatures(), len, src.columns(wn, off, len)));
            }
            if (l.hasBias()) {
              w.put(bn, new RankWeights.Block(1, l.outFeatures(), src.all(bn)));
            }
          }
          case REPLICATED -> {
            if (w.has(wn, l.outFeatures(), l.inFeatures())) {
              // a head tied to the embedding shares its block (uploaded from it by RankModel)
            } else if (be != null) {
              w.putTensor(wn, src.rows(wn, 0, l.outFeatures(), l.inFeatures(), dt, be));
            } else {
              w.put(wn, new RankWeights.Block(l.outFeatures(), l.inFeatures(), src.all(wn)));
            }
            if (l.hasBias()) {
              w.put(bn, new RankWeights.Block(1, l.outFeatures(), src.all(bn)));
            }
          }
          default -> throw new IllegalStateException();
        }
      } else if (s instanceof Step.Norm n) {
        if (n.hasGamma()) {
          w.put(n.name() + ".weight", new RankWeights.Block(1, n.width(), src.all(n.name() + ".weight")));
        }
        if (n.hasBeta()) {
          w.put(n.name() + ".bias", new RankWeights.Block(1, n.width(), src.all(n.name() + ".bias")));
        }
      } else if (s instanceof Step.Embed e) {
        int off = e.vocabSplit().offset(rank);
        int len = e.vocabSplit().length(rank);
        String wn = e.name() + ".weight";
        w.put(wn, new RankWeights.Block(len, e.dim(), src.rows(wn, off, len)));
      } else if (s instanceof Step.Residual r) {
        shard(r.body(), src, rank, w, be, dt);
      }
    }
  }

  /** Bytes of weights rank {@code rank} holds in float32, computed from the plan alone. */
  public long weightBytes(int rank) {
    return weightBytes(steps, rank, 4, 0, 4);
  }

  /**
   * Bytes of weights rank {@code rank} holds with linear weights stored in {@code linearDtype} and embedding tables
   * in {@link #tableDtype tableDtype(linearDtype)} (biases and norms f32; int8 adds one f32 scale per row of each
   * weight shard).
   */
  public long weightBytes(int rank, org.sparktp.tensor.DType linearDtype) {
    return weightBytes(steps, rank, linearDtype.size(), linearDtype == org.sparktp.tensor.DType.I8 ? 4 : 0,
        tableDtype(linearDtype).size());
  }

  /** The storage type of embedding tables for linear weights stored as {@code linear}: that float type; bf16 for int8. */
  public static org.sparktp.tensor.DType tableDtype(org.sparktp.tensor.DType linear) {
    return org.sparktp.nn.ops.Weights.tableDtype(linear);
  }

  private long weightBytes(List<Step> s, int rank, int es, int rowExtra, int tableEs) {
    long b = 0;
    for (Step st : s) {
      if (st instanceof Step.Linear l) {
        long bias = l.hasBias() ? 1 : 0;
        b += switch (l.mode()) {
          case COLUMN -> (long) l.split().length(rank) * ((long) l.inFeatures() * es + bias * 4 + rowExtra);
          case ROW -> (long) l.outFeatures() * ((long) l.split().length(rank) * es + bias * 4 + rowExtra);
          case REPLICATED -> (long) l.outFeatures() * ((long) l.inFeatures() * es + bias * 4 + rowExtra);
        };
      } else if (st instanceof Step.Norm n) {
        b += 4L * n.width() * ((n.hasGamma() ? 1 : 0) + (n.hasBeta() ? 1 : 0));
      } else if (st instanceof Step.Embed e) {
        b += (long) tableEs * e.vocabSplit().length(rank) * e.dim(); // the table is stored in tableDtype
      } else if (st instanceof Step.Residual r) {
        b += weightBytes(r.body(), rank, es, rowExtra, tableEs);
      }
    }
    return b;
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
    explain(steps, "", sb, total, idx);
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
      double backBytes = switch (outputLayout()) {
        case REPLICATED -> 0;
        case PARTIAL, SHARDED -> frac * 4.0 * outputDim;
      };
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

  /**
   * The precision lines of explain: the linear weights' storage dtype, the GEMM kernel and the weight bytes
   * per rank in that dtype (embedding tables too; biases and norms stay f32), and the activations' dtype.
   */
  public String explainPrecision(org.sparktp.tensor.DType linearDtype, String kernel) {
    return explainPrecision(linearDtype, kernel, org.sparktp.tensor.DType.F32);
  }

  /** {@link #explainPrecision(org.sparktp.tensor.DType, String)} with the activations stored in {@code activations}. */
  public String explainPrecision(org.sparktp.tensor.DType linearDtype, String kernel,
      org.sparktp.tensor.DType activations) {
    StringBuilder per = new StringBuilder();
    long max = 0;
    for (int r = 0; r < tpSize; r++) {
      long b = weightBytes(r, linearDtype);
      max = Math.max(max, b);
      per.append(r == 0 ? "" : ", ").append(b);
    }
    String act = activations == org.sparktp.tensor.DType.F32 ? "activations f32 between ops"
        : "activations " + activations.id() + " between ops (rounded once at each op boundary; ops compute in f32; "
            + "partial sums reduced in f32, all-gathers move " + activations.id() + ")";
    org.sparktp.tensor.DType table = tableDtype(linearDtype);
    return String.format(Locale.ROOT, "dtype %s (linear weights; embedding tables %s; GEMMs accumulate in f32; "
        + "biases and norms f32), kernel %s%n%s%nweight bytes per rank in %s: [%s] (max %d; f32 would be %d)%n",
        linearDtype.id(), table == linearDtype ? "too" : "in " + table.id(), kernel, act, linearDtype.id(), per, max,
        weightBytes(0))
        + (linearDtype == org.sparktp.tensor.DType.I8 ? "int8 weight-only: symmetric, one f32 scale per output "
            + "channel of each shard, quantized at load (about 1e-2 relative error, see the README)\n" : "");
  }

  private void explain(List<Step> s, String indent, StringBuilder sb, double[] total, int[] idx) {
    for (Step st : s) {
      String op;
      String coll = "-";
      double bytes = 0;
      if (st instanceof Step.Linear l) {
        op = l.mode().name().toLowerCase(Locale.ROOT) + " linear " + l.name() + " [" + l.inFeatures() + "->"
            + l.outFeatures() + "]" + (l.epilogue() == Activation.IDENTITY ? "" : " +" + l.epilogue().id());
      } else if (st instanceof Step.Act a) {
        op = a.activation().id();
      } else if (st instanceof Step.Norm n) {
        op = "layer_norm " + n.name() + " [" + n.width() + "]";
      } else if (st instanceof Step.Embed e) {
        op = (e.bag() ? "embedding_bag(" + (e.mean() ? "mean" : "sum") + ") " : "embedding ") + e.name() + " ["
            + e.vocab() + "x" + e.dim() + "] vocab-parallel";
      } else if (st instanceof Step.Residual r) {
        sb.append(String.format(Locale.ROOT, "%-4d %-52s %-11s %-11s %-26s %12s%n", idx[0]++, indent + "residual {",
            r.in(), r.out(), "-", "0"));
        explain(r.body(), indent + "  ", sb, total, idx);
        sb.append(String.format(Locale.ROOT, "%-4s %-52s%n", "", indent + "} + x"));
        continue;
      } else {
        Step.Convert c = (Step.Convert) st;
        op = "(layout change)";
        coll = tpSize == 1 ? "none (one rank)" : c.collective();
        bytes = c.bytesPerRow(tpSize);
      }
      total[0] += bytes;
      sb.append(String.format(Locale.ROOT, "%-4d %-52s %-11s %-11s %-26s %12.0f%n", idx[0]++, indent + op, st.in(),
          st.out(), coll, bytes));
    }
  }

  @Override
  public String toString() {
    return explain();
  }
}
