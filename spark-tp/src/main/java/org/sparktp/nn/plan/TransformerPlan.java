package org.sparktp.nn.plan;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.Layout;
import org.sparktp.nn.ops.EmbeddingOp;
import org.sparktp.nn.ops.LmHeadOp;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.Planner;
import org.sparktp.nn.ops.PoolOp;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Slice;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.ops.TransformerModel;
import org.sparktp.nn.ops.Weights;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * A transformer planned for a group of {@code p} ranks and one task: the model's ops followed by the
 * task's op ({@link PoolOp}, or {@link LmHeadOp} for logits and score). Every op declares its own
 * tensors, splits and layouts; this class only iterates over them: {@link #shard} reads each rank's
 * slices (a slice two ops share, such as a tied embedding and LM head, once), {@link #weightBytes}
 * adds them up and {@link #explain} prints each op's line.
 */
public final class TransformerPlan implements ModelPlan {
  private static final long serialVersionUID = 1L;

  private final TransformerModel model;
  private final int tpSize;
  private final Task task;
  private final List<Op> ops;
  private final int outputDim;
  private final boolean truncate;

  private TransformerPlan(TransformerModel model, int tpSize, Task task, List<Op> ops, int outputDim,
      boolean truncate) {
    this.model = model;
    this.tpSize = tpSize;
    this.task = task;
    this.ops = List.copyOf(ops);
    this.outputDim = outputDim;
    this.truncate = truncate;
  }

  /** Plans {@code model} for {@code task} on {@code p} ranks; {@code task} null means its default. */
  public static TransformerPlan build(TransformerModel model, int p, Task task, Pooling pooling, boolean normalize,
      boolean truncate) {
    if (p <= 0) {
      throw new IllegalArgumentException("Tensor-parallel size must be positive, got " + p);
    }
    Task t = task == null ? model.defaultTask() : task;
    List<Op> ops = new ArrayList<>(model.body());
    int width = model.hidden();
    int out;
    if (t == Task.EMBED) {
      if (pooling == null) {
        pooling = model.causal() ? Pooling.LAST : Pooling.MEAN;
      }
      ops.add(new PoolOp(model.hidden(), pooling, normalize));
      out = model.hidden();
    } else {
      if (model.lmHead() == null) {
        throw new IllegalArgumentException("Task '" + t.id() + "' needs a language-model head; this "
            + model.architecture() + " model has none: use task embed");
      }
      if ((t == Task.SCORE || t == Task.GENERATE) && !model.causal()) {
        throw new IllegalArgumentException("Task '" + t.id() + "' needs a causal language model; this "
            + model.architecture() + " model is an encoder");
      }
      ops.add(new LmHeadOp(model.lmHead(), model.vocab(), model.hidden(), t));
      out = t == Task.SCORE || t == Task.GENERATE ? 1 : model.vocab();
    }
    ops = Planner.plan(ops, p, width).ops();
    TransformerPlan plan = new TransformerPlan(model, p, t, ops, out, truncate);
    for (int r = 0; r < p; r++) {
      plan.slices(r); // every split is checked here (p larger than the heads, ...), before any task runs
    }
    return plan;
  }

  @Override
  public InputBatch.Kind inputKind() {
    return InputBatch.Kind.BAGS;
  }

  /** The vocabulary (rows are sequences of token ids). */
  @Override
  public int inputDim() {
    return model.vocab();
  }

  @Override
  public boolean sequences() {
    return true;
  }

  /** {@code max_position_embeddings}, or 0 with truncation on (longer rows are cut, not refused). */
  @Override
  public int maxTokens() {
    return truncate ? 0 : model.maxPositions();
  }

  @Override
  public boolean scalarOutput() {
    return task == Task.SCORE;
  }

  @Override
  public boolean generates() {
    return task == Task.GENERATE;
  }

  /** {@code max_position_embeddings} with truncation on, else 0. */
  @Override
  public int truncateTo() {
    return truncate ? model.maxPositions() : 0;
  }

  public TransformerModel model() {
    return model;
  }

  public int tpSize() {
    return tpSize;
  }

  public Task task() {
    return task;
  }

  public List<Op> ops() {
    return ops;
  }

  /** Width of each row's output: hidden (embed), vocab (logits), 1 (score). */
  public int outputDim() {
    return outputDim;
  }

  public boolean truncate() {
    return truncate;
  }

  /** Rank {@code rank}'s distinct slices, keyed by {@link Slice#id()}, in op order. */
  public Map<String, Slice> slices(int rank) {
    return Weights.slices(ops, tpSize, rank);
  }

  /** Reads rank {@code rank}'s slices from {@code src} (only those byte ranges for a checkpoint). */
  public RankWeights shard(WeightSource src, int rank) {
    return Weights.read(slices(rank).values(), src, rank, tpSize);
  }

  /**
   * Reads rank {@code rank}'s slices from {@code src} straight into tensors on {@code be} ({@link Weights#read});
   * the caller closes the result.
   */
  public RankWeights shard(WeightSource src, int rank, Backend be, DType storage) {
    return Weights.read(slices(rank).values(), src, rank, tpSize, be, storage);
  }

  /**
   * Bytes of weights rank {@code rank} holds with linears and embedding tables in {@code dtype} (norm weights
   * and biases in f32), each slice once, from the plan alone.
   */
  public long weightBytes(int rank, DType dtype) {
    long b = 0;
    for (Slice s : slices(rank).values()) {
      b += s.bytes(dtype);
    }
    return b;
  }

  /** True when the LM head reads the embedding table's own slice (tied weights). */
  public boolean tiedHead() {
    if (!(ops.get(ops.size() - 1) instanceof LmHeadOp head)) {
      return false;
    }
    return ops.stream().anyMatch(o -> o instanceof EmbeddingOp e && e.table().equals(head.weight()));
  }

  /**
   * The precision lines of {@code explain}: the storage dtype, the GEMM kernel and the weight bytes per rank
   * in that dtype (what stays f32 said).
   */
  public String explainPrecision(DType dtype, String kernel) {
    StringBuilder per = new StringBuilder();
    long max = 0;
    long maxF32 = 0;
    for (int r = 0; r < tpSize; r++) {
      long b = weightBytes(r, dtype);
      max = Math.max(max, b);
      maxF32 = Math.max(maxF32, weightBytes(r, DType.F32));
      per.append(r == 0 ? "" : ", ").append(b);
    }
    String tied = tiedHead() && dtype != DType.F32
        ? String.format(Locale.ROOT, "; the tied lm_head's packed copy adds up to %d", (long) dtype.size()
            * slices(0).values().iterator().next().elements())
        : "";
    return String.format(Locale.ROOT, "dtype %s (linear weights and " + (dtype.isFloat() ? ""
        : Weights.tableDtype(dtype).id() + " ") + "embedding tables; GEMMs accumulate in f32; "
        + "norms, biases, softmax, RoPE and attention f32), kernel %s%nweight bytes per rank in %s: [%s] (max %d; "
        + "f32 would be %d%s)%n", dtype.id(), kernel, dtype.id(), per, max, maxF32, tied);
  }

  /** Bytes of weights rank {@code rank} reads (float32), from the plan alone. */
  public long weightBytes(int rank) {
    long b = 0;
    for (Slice s : slices(rank).values()) {
      b += 4 * s.elements();
    }
    return b;
  }

  /** Collectives per forward pass. */
  public int collectiveCount() {
    int n = 0;
    for (Op o : ops) {
      n += o.collectives(tpSize);
    }
    return n;
  }

  /** A stable text that identifies the plan (for caches). */
  public String fingerprint() {
    return Integer.toHexString(explain().hashCode());
  }

  /** The plan: every op with its split per rank, the collectives and the weight bytes per rank. */
  public String explain() {
    StringBuilder sb = new StringBuilder();
    sb.append(String.format(Locale.ROOT, "Plan for tp=%d: %s (%s), hidden %d, vocabulary %d, task %s, output [rows, %d]%n",
        tpSize, model.architecture(), model.causal() ? "causal" : "bidirectional", model.hidden(), model.vocab(),
        task.id(), outputDim));
    int[] idx = {0};
    explain(ops, "", sb, idx);
    sb.append(String.format(Locale.ROOT, "collectives per forward pass: %d (plus the row exchange)%n",
        collectiveCount()));
    StringBuilder per = new StringBuilder();
    for (int r = 0; r < tpSize; r++) {
      per.append(r == 0 ? "" : ", ").append(weightBytes(r));
    }
    sb.append("weight bytes per rank: [").append(per).append("]\n");
    return sb.toString();
  }

  private void explain(List<Op> list, String indent, StringBuilder sb, int[] idx) {
    for (Op o : list) {
      sb.append(String.format(Locale.ROOT, "%-4d %s%s  (%s -> %s)%n", idx[0]++, indent, o.describe(tpSize), o.in(),
          o.out()));
      if (!o.children().isEmpty()) {
        explain(o.children(), indent + "  ", sb, idx);
      }
    }
  }

  /**
   * Checks row {@code row}'s ids {@code ids[from, to)} (named {@code where} in errors) and returns the
   * number of tokens it keeps: an empty row, an id outside the vocabulary, or a row longer than
   * {@code max_position_embeddings} without {@code truncate} is an error.
   */
  public int checkRow(int[] ids, int from, int to, String where) {
    int n = to - from;
    if (n == 0) {
      throw new IllegalArgumentException(where + " is an empty sequence: every row needs at least one token");
    }
    int keep = n;
    if (n > model.maxPositions()) {
      if (!truncate) {
        throw new IllegalArgumentException(where + " has " + n + " tokens, more than the model's "
            + "max_position_embeddings (" + model.maxPositions() + "); shorten it or set spark.tp.truncate=true");
      }
      keep = model.maxPositions();
    }
    for (int i = from; i < from + keep; i++) {
      if (ids[i] < 0 || ids[i] >= model.vocab()) {
        throw new IllegalArgumentException(where + " has token id " + ids[i] + " at position " + (i - from)
            + ", outside the vocabulary [0, " + model.vocab() + ")");
      }
    }
    return keep;
  }

  /** The layout of the output: replicated, or sharded by vocabulary for logits (the row return all-to-alls it). */
  public Layout outputLayout() {
    return ops.get(ops.size() - 1).out();
  }
}
