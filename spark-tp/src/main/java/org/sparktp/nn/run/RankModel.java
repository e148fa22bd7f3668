package org.sparktp.nn.run;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.RunContext;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.OpKernel;
import org.sparktp.nn.ops.Tokens;
import org.sparktp.nn.ops.Weights;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.tensor.DType;

/**
 * One rank's instance of a {@link ModelPlan}, whatever model it came from: its ops' kernels over its weight slices on
 * the rank's backend (each slice uploaded once, also when two ops share it). {@link #forward} runs the plan on the
 * group's rows (every rank passes the same rows: vectors, ids, or a ragged batch of token sequences) and returns this
 * rank's part of the output in {@link ModelPlan#outputLayout()}.
 */
public final class RankModel implements RowModel, AutoCloseable {
  private final ModelPlan plan;
  private final int rank;
  private final Backend backend;
  private final DType storage;
  private final Weights weights;
  private final List<OpKernel> kernels = new ArrayList<>();
  private boolean closed;

  /** A rank model with float32 weights. */
  public RankModel(ModelPlan plan, int rank, Backend backend, RankWeights weights) {
    this(plan, rank, backend, weights, DType.F32);
  }

  /**
   * A rank model whose linear weights are stored in {@code storage} (f32, bf16, f16, or int8 = {@code I8}
   * weight-only with per-output-channel scales; GEMMs accumulate in f32; biases and norms stay f32; embedding tables
   * in {@link Weights#tableDtype(DType)} of it). Takes the tensors it uses out of {@code blocks} (the caller still
   * closes {@code blocks}); host blocks are uploaded and converted.
   */
  public RankModel(ModelPlan plan, int rank, Backend backend, RankWeights blocks, DType storage) {
    if (storage.isFloat() && !backend.supports(storage)) {
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
    this.storage = storage;
    this.weights = new Weights(blocks, backend, storage, Weights.uses(plan.ops(), plan.tpSize(), rank));
    try {
      for (Op o : plan.ops()) {
        kernels.add(o.build(plan.tpSize(), rank, weights, backend));
      }
    } catch (RuntimeException | Error e) { // an OutOfMemoryError too: the rank fails its attempt, the JVM lives on
      weights.close();
      throw e;
    }
  }

  /** The storage dtype of the linear weights. */
  public DType storage() {
    return storage;
  }

  /** The GEMM kernel of the linears (they share one), e.g. {@code openblas sgemm}, {@code onednn brg_matmul:...}. */
  public String kernel() {
    return weights.kernel();
  }

  public ModelPlan plan() {
    return plan;
  }

  @Override
  public int tpSize() {
    return plan.tpSize();
  }

  @Override
  public InputBatch.Kind inputKind() {
    return plan.inputKind();
  }

  @Override
  public String describeInput() {
    return plan.describeInput();
  }

  @Override
  public int inputWidth() {
    return plan.inputKind() == InputBatch.Kind.DENSE ? plan.inputDim() : 0;
  }

  @Override
  public int outputWidth() {
    return plan.outputDim();
  }

  @Override
  public InputBatch admit(InputBatch mine) {
    return plan.admit(mine);
  }

  @Override
  public int rank() {
    return rank;
  }

  @Override
  public Backend backend() {
    return backend;
  }

  /**
   * Bytes of weights held on the backend, as loaded (packed layouts included); what jobs report is the plan's count,
   * {@link org.sparktp.nn.plan.Plan#weightBytes(int, DType)}, which a test holds equal to this.
   */
  public long weightBytes() {
    return weights.bytes();
  }

  /** Runs the plan on the group's rows (identical on every rank). The caller closes the result. */
  @Override
  public DistTensor forward(InputBatch rows, RunContext ctx) {
    InputBatch.Kind want = plan.inputKind();
    if (rows.kind() != want) {
      throw new IllegalArgumentException("This model takes " + describeInput() + ", got "
          + rows.kind().name().toLowerCase(Locale.ROOT) + " input");
    }
    int n = rows.rows();
    if (want == InputBatch.Kind.DENSE) {
      if (rows.width() != plan.inputDim()) {
        throw new IllegalArgumentException("Input width " + rows.width() + " does not match the model's input width "
            + plan.inputDim());
      }
      return forward(DistTensor.replicated(backend.upload(rows.dense(), 0, n, rows.width())), ctx);
    }
    int[] offsets = rows.offsets();
    if (want == InputBatch.Kind.IDS) {
      offsets = new int[n + 1];
      for (int i = 0; i <= n; i++) {
        offsets[i] = i;
      }
    }
    return forward(Tokens.of(rows.ids(), offsets.length == n + 1 ? offsets : Arrays.copyOf(offsets, n + 1)), ctx);
  }

  /** Runs the plan on a replicated activation already on the backend; consumes it. */
  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    return run(x, null, ctx);
  }

  /** Runs a batch of ids (per row: one id, a bag, or a sequence of tokens); the caller closes the result. */
  public DistTensor forward(Tokens tokens, RunContext ctx) {
    return run(null, tokens, ctx);
  }

  private DistTensor run(DistTensor x, Tokens tokens, RunContext ctx) {
    if (ctx.size() != plan.tpSize() || ctx.rank() != rank) {
      if (x != null) {
        x.close();
      }
      throw new IllegalArgumentException("Rank " + rank + " of a tp=" + plan.tpSize() + " plan run on rank "
          + ctx.rank() + " of a group of " + ctx.size());
    }
    // issue 9b: between ops the activation is stored in ctx.activationDtype() (rounded once at each boundary,
    // partial sums reduced in f32 first); each op's kernel gets it widened to f32; the last op's output (the
    // model's: logits, embeddings, scores) is not rounded
    return ctx.widen(OpKernel.runAll(plan.ops(), kernels, x, tokens, ctx, false));
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      weights.close();
    }
  }
}
