package org.sparktp.nn.run;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.sparktp.backend.Backend;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.OpKernel;
import org.sparktp.nn.ops.Tokens;
import org.sparktp.nn.plan.TransformerPlan;
import org.sparktp.nn.ops.Weights;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.RunContext;
import org.sparktp.tensor.DType;

/**
 * One rank's instance of a {@link TransformerPlan}: its ops' kernels over its weight slices on its
 * backend (each slice uploaded once, also when two ops share it). {@link #forward} runs a ragged token
 * batch (identical on every rank) to the task's output {@code [rows, outputDim]} in the plan's output layout
 * (replicated; logits sharded by vocabulary).
 */
public final class TransformerRankModel implements RowModel, AutoCloseable {
  private final TransformerPlan plan;
  private final int rank;
  private final Backend backend;
  private final Weights weights;
  private final DType storage;
  private final List<OpKernel> kernels = new ArrayList<>();
  private boolean closed;

  /** A rank whose weights are float32. */
  public TransformerRankModel(TransformerPlan plan, int rank, Backend backend, RankWeights blocks) {
    this(plan, rank, backend, blocks, DType.F32);
  }

  /**
   * A rank whose linears and embedding tables are stored in {@code storage} (f32, bf16, f16; a dtype the
   * backend does not hold is an error), norms and biases in f32. Takes the tensors it uses out of
   * {@code blocks} (the caller still closes {@code blocks}).
   */
  public TransformerRankModel(TransformerPlan plan, int rank, Backend backend, RankWeights blocks, DType storage) {
    if (!backend.supports(storage)) {
      throw new IllegalArgumentException("The " + backend.name() + " backend holds no " + storage.id()
          + " tensors; use dtype f32 with it");
    }
    if (blocks.rank() != rank || blocks.tpSize() != plan.tpSize()) {
      throw new IllegalArgumentException("Weights of shard " + blocks.rank() + "/" + blocks.tpSize()
          + " given to rank " + rank + "/" + plan.tpSize());
    }
    this.plan = plan;
    this.rank = rank;
    this.backend = backend;
    Map<String, Integer> uses = Weights.uses(plan.ops(), plan.tpSize(), rank);
    this.storage = storage;
    this.weights = new Weights(blocks, backend, storage, uses);
    try {
      for (Op o : plan.ops()) {
        kernels.add(o.build(plan.tpSize(), rank, weights, backend));
      }
    } catch (RuntimeException e) {
      weights.close();
      throw e;
    }
  }

  public TransformerPlan plan() {
    return plan;
  }

  @Override
  public int tpSize() {
    return plan.tpSize();
  }

  @Override
  public InputBatch.Kind inputKind() {
    return InputBatch.Kind.BAGS;
  }

  @Override
  public String describeInput() {
    return "a sequence of token ids per row";
  }

  @Override
  public int inputWidth() {
    return 0;
  }

  @Override
  public int outputWidth() {
    return plan.outputDim();
  }

  /** Each row checked ({@link TransformerPlan#checkRow}) and truncated when the plan says so. */
  @Override
  public InputBatch admit(InputBatch mine) {
    int n = mine.rows();
    int[] off = new int[n + 1];
    for (int r = 0; r < n; r++) {
      off[r + 1] = off[r] + plan.checkRow(mine.ids(), mine.offsets()[r], mine.offsets()[r + 1], "Row " + r
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

  @Override
  public DistTensor forward(InputBatch rows, RunContext ctx) {
    int n = rows.rows();
    int[] off = rows.offsets().length == n + 1 ? rows.offsets() : java.util.Arrays.copyOf(rows.offsets(), n + 1);
    return forward(Tokens.of(rows.ids(), off), ctx);
  }

  @Override
  public int rank() {
    return rank;
  }

  @Override
  public Backend backend() {
    return backend;
  }

  /** The storage dtype of the linears and embedding tables. */
  public DType storage() {
    return storage;
  }

  /** The GEMM kernel of the linears ({@code openblas sgemm}, {@code onednn ...}). */
  public String kernel() {
    return weights.kernel();
  }

  /** Bytes of weights held on the backend. */
  public long weightBytes() {
    return weights.bytes();
  }

  /** Runs the batch; the caller closes the result ({@code [rows, outputDim]} in the plan's output layout). */
  public DistTensor forward(Tokens tokens, RunContext ctx) {
    if (ctx.size() != plan.tpSize() || ctx.rank() != rank) {
      throw new IllegalArgumentException("Rank " + rank + " of a tp=" + plan.tpSize() + " plan run on rank "
          + ctx.rank() + " of a group of " + ctx.size());
    }
    // issue 9b: between ops the activation is stored in ctx.activationDtype() (rounded once at each boundary,
    // partial sums reduced in f32 first); each op's kernel gets it widened to f32; the last op's output (the
    // model's: logits, embeddings, scores) is not rounded
    return ctx.widen(OpKernel.runAll(plan.ops(), kernels, null, tokens, ctx, false));
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      weights.close();
    }
  }
}
