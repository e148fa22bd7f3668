package org.sparktp.nn.plan;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.ops.LmHeadOp;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.PoolOp;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.ops.TransformerModel;
import org.sparktp.nn.ops.Weights;
import org.sparktp.tensor.DType;

/**
 * A transformer and one task as a graph: the model's ops followed by the task's op ({@link PoolOp} for embed, or
 * {@link LmHeadOp} for logits, score and generate). Rows are sequences of token ids.
 *
 * @param ops the model's body and the task's op
 * @param outputDim hidden (embed), vocab (logits), 1 (score, generate)
 * @param truncate whether a row longer than {@code max_position_embeddings} is cut (else refused)
 */
public record TransformerGraph(TransformerModel model, Task task, List<Op> ops, int outputDim, boolean truncate)
    implements ModelGraph {

  public TransformerGraph {
    ops = List.copyOf(ops);
  }

  /** {@code model} for {@code task} ({@code null}: its default), pooled by {@code pooling} for embed (null: default). */
  public static TransformerGraph of(TransformerModel model, Task task, Pooling pooling, boolean normalize,
      boolean truncate) {
    Task t = task == null ? model.defaultTask() : task;
    List<Op> ops = new ArrayList<>(model.body());
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
    return new TransformerGraph(model, t, ops, out, truncate);
  }

  /** {@link #of} planned for {@code p} ranks. */
  public static Plan plan(TransformerModel model, int p, Task task, Pooling pooling, boolean normalize,
      boolean truncate) {
    if (p <= 0) {
      throw new IllegalArgumentException("Tensor-parallel size must be positive, got " + p);
    }
    return Plan.build(of(model, task, pooling, normalize, truncate), p);
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

  @Override
  public TransformerGraph transformer() {
    return this;
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
  public int inputWidth() {
    return model.hidden();
  }

  @Override
  public String describeInput() {
    return "a sequence of token ids per row";
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

  /** Each row checked ({@link #checkRow}) and truncated when the graph says so. */
  @Override
  public InputBatch admit(InputBatch mine) {
    int n = mine.rows();
    int[] off = new int[n + 1];
    for (int r = 0; r < n; r++) {
      off[r + 1] = off[r] + checkRow(mine.ids(), mine.offsets()[r], mine.offsets()[r + 1], "Row " + r
          + " of the batch");
    }
    if (off[n] == mine.offsets()[n]) {
      return mine;
    }
    int[] ids = new int[off[n]];
    for (int r = 0; r < n; r++) {
      System.arraycopy(mine.ids(), mine.offsets()[r], ids, off[r], off[r + 1] - off[r]);
    }
    return InputBatch.bags(ids, off, n);
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

  /** True when the LM head reads the embedding table's own slice (tied weights). */
  boolean tiedHead() {
    return model.lmHead() != null && task != Task.EMBED && model.body().stream()
        .anyMatch(o -> o.slices(1, 0).stream().anyMatch(s -> s.tensor().equals(model.lmHead())));
  }

  @Override
  public String explain(Plan plan) {
    int tp = plan.tpSize();
    StringBuilder sb = new StringBuilder();
    sb.append(String.format(Locale.ROOT, "Plan for tp=%d: %s (%s), hidden %d, vocabulary %d, task %s, output "
        + "[rows, %d]%n", tp, model.architecture(), model.causal() ? "causal" : "bidirectional", model.hidden(),
        model.vocab(), task.id(), outputDim));
    int[] idx = {0};
    explain(plan.ops(), tp, "", sb, idx);
    sb.append(String.format(Locale.ROOT, "collectives per forward pass: %d (plus the row exchange)%n",
        plan.collectiveCount()));
    StringBuilder per = new StringBuilder();
    for (int r = 0; r < tp; r++) {
      per.append(r == 0 ? "" : ", ").append(plan.weightBytes(r));
    }
    sb.append("weight bytes per rank: [").append(per).append("]\n");
    return sb.toString();
  }

  private static void explain(List<Op> list, int tp, String indent, StringBuilder sb, int[] idx) {
    for (Op o : list) {
      sb.append(String.format(Locale.ROOT, "%-4d %s%s  (%s -> %s)%n", idx[0]++, indent, o.describe(tp), o.in(),
          o.out()));
      if (!o.children().isEmpty()) {
        explain(o.children(), tp, indent + "  ", sb, idx);
      }
    }
  }

  @Override
  public String explainPrecision(Plan plan, DType dtype, String kernel, DType activations) {
    StringBuilder per = new StringBuilder();
    long max = 0;
    long maxF32 = 0;
    for (int r = 0; r < plan.tpSize(); r++) {
      long b = plan.weightBytes(r, dtype);
      max = Math.max(max, b);
      maxF32 = Math.max(maxF32, plan.weightBytes(r));
      per.append(r == 0 ? "" : ", ").append(b);
    }
    String tied = tiedHead() && dtype != DType.F32 ? "; with the tied lm_head's own " + dtype.id() + " copy" : "";
    return String.format(Locale.ROOT, "dtype %s (linear weights and " + (dtype.isFloat() ? ""
        : Weights.tableDtype(dtype).id() + " ") + "embedding tables; GEMMs accumulate in f32; "
        + "norms, biases, softmax, RoPE and attention f32), kernel %s%nweight bytes per rank in %s: [%s] (max %d; "
        + "f32 would be %d%s)%n", dtype.id(), kernel, dtype.id(), per, max, maxF32, tied)
        + (activations == DType.F32 ? "activations f32 between ops" : "activations " + activations.id()
            + " between ops (rounded once at each op boundary; ops compute in f32; partial sums reduced in f32)")
        + "\n";
  }
}
