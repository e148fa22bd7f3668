package org.sparktp.nn.run;

import java.util.ArrayList;
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
import org.sparktp.nn.plan.Plan;
import org.sparktp.tensor.DType;

/**
 * One rank's instance of a {@link Plan}: its ops' kernels over its weight shards on the rank's backend (each slice
 * uploaded once, also when two ops share it). {@link #forward} runs the plan on the group's rows (every rank passes
 * the same rows) and returns this rank's part of the output in {@link Plan#outputLayout()}.
 */
public final class RankModel implements RowModel, AutoCloseable {
  private final Plan plan;
  private final int rank;
  private final Backend backend;
  private final DType linearDtype;
  private final Weights weights;
  private final List<OpKernel> kernels = new ArrayList<>();
  private boolean closed;

  /** A rank model with float32 linear weights. */
  public RankModel(Plan plan, int rank, Backend backend, RankWeights weights) {
    this(plan, rank, backend, weights, DType.F32);
  }

  /**
   * A rank model whose linear weights are stored in {@code linearDtype} (f32, bf16, f16, or int8 = {@code I8}
   * weight-only with per-output-channel scales; GEMMs accumulate in f32; biases and norms stay f32; embedding tables
   * in {@link Weights#tableDtype(DType)} of it). Takes the tensors it uses out of {@code blocks} (the caller still
   * closes {@code blocks}); host blocks are uploaded and converted.
   */
  public RankModel(Plan plan, int rank, Backend backend, RankWeights blocks, DType linearDtype) {
    if (blocks.rank() != rank || blocks.tpSize() != plan.tpSize()) {
      throw new IllegalArgumentException("Weights of shard " + blocks.rank() + "/" + blocks.tpSize()
          + " given to rank " + rank + "/" + plan.tpSize());
    }
    this.plan = plan;
    this.rank = rank;
    this.backend = backend;
    this.linearDtype = linearDtype;
    this.weights = new Weights(blocks, backend, linearDtype, Weights.uses(plan.ops(), plan.tpSize(), rank));
    try {
      for (Op o : plan.ops()) {
        kernels.add(o.build(plan.tpSize(), rank, weights, backend));
      }
    } catch (RuntimeException e) {
      weights.close();
      throw e;
    }
  }

  /** The storage dtype of the linear weights. */
  public DType linearDtype() {
    return linearDtype;
  }

  /** The GEMM kernel of the linear layers (they share one), e.g. {@code onednn brg_matmul:avx512_core_amx}. */
  public String kernel() {
    return backend.kernel(linearDtype);
  }

  public Plan plan() {
    return plan;
  }

  @Override
  public int tpSize() {
    return plan.tpSize();
  }

  @Override
  public InputBatch.Kind inputKind() {
    return plan.takesBags() ? InputBatch.Kind.BAGS : plan.takesIds() ? InputBatch.Kind.IDS : InputBatch.Kind.DENSE;
  }

  @Override
  public String describeInput() {
    return switch (inputKind()) {
      case DENSE -> "vectors of width " + plan.inputDim();
      case IDS -> "one id per row";
      case BAGS -> "a list of ids per row";
    };
  }

  @Override
  public int inputWidth() {
    return plan.takesIds() ? 0 : plan.inputDim();
  }

  @Override
  public int outputWidth() {
    return plan.outputDim();
  }

  @Override
  public int rank() {
    return rank;
  }

  @Override
  public Backend backend() {
    return backend;
  }

  /** Bytes of weights held on the backend. */
  public long weightBytes() {
    return weights.bytes();
  }

  /** Runs the plan on the group's rows (identical on every rank). The caller closes the result. */
  @Override
  public DistTensor forward(InputBatch rows, RunContext ctx) {
    if (ctx.size() != plan.tpSize() || ctx.rank() != rank) {
      throw new IllegalArgumentException("Rank " + rank + " of a tp=" + plan.tpSize() + " plan run on rank "
          + ctx.rank() + " of a group of " + ctx.size());
    }
    String kind = rows.kind().name().toLowerCase(Locale.ROOT);
    if (plan.takesIds()) {
      boolean bags = plan.takesBags();
      if ((rows.kind() == InputBatch.Kind.BAGS) != bags || rows.kind() == InputBatch.Kind.DENSE) {
        throw new IllegalArgumentException("This model takes " + (bags ? "a list of ids" : "one id") + " per row, got "
            + kind + " input");
      }
      int n = rows.rows();
      int[] offsets = rows.offsets();
      if (!bags) {
        offsets = new int[n + 1];
        for (int i = 0; i <= n; i++) {
          offsets[i] = i;
        }
      }
      return run(null, Tokens.of(rows.ids(), offsets.length == n + 1 ? offsets : java.util.Arrays.copyOf(offsets,
          n + 1)), ctx);
    }
    if (rows.kind() != InputBatch.Kind.DENSE) {
      throw new IllegalArgumentException("This model takes vectors of width " + plan.inputDim() + ", got " + kind
          + " input");
    }
    if (rows.width() != plan.inputDim()) {
      throw new IllegalArgumentException("Input width " + rows.width() + " does not match the model's input width "
          + plan.inputDim());
    }
    return forward(DistTensor.replicated(backend.upload(rows.dense(), 0, rows.rows(), rows.width())), ctx);
  }

  /** Runs the plan on a replicated activation already on the backend; consumes it. */
  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    return run(x, null, ctx);
  }

  private DistTensor run(DistTensor x, Tokens tokens, RunContext ctx) {
    // each op's output but the last is stored in the activation dtype (ctx.store); the result handed back is f32
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
