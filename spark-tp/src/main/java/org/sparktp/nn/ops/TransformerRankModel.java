package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.RunContext;

/**
 * One rank's instance of a {@link TransformerPlan}: its ops' kernels over its weight slices on its
 * backend (each slice uploaded once, also when two ops share it). {@link #forward} runs a ragged token
 * batch (identical on every rank) to the task's output {@code [rows, outputDim]}, replicated.
 */
public final class TransformerRankModel implements AutoCloseable {
  private final TransformerPlan plan;
  private final int rank;
  private final Backend backend;
  private final Weights weights;
  private final List<OpKernel> kernels = new ArrayList<>();
  private final List<Layout> outs = new ArrayList<>();
  private boolean closed;

  public TransformerRankModel(TransformerPlan plan, int rank, Backend backend, RankWeights blocks) {
    if (blocks.rank() != rank || blocks.tpSize() != plan.tpSize()) {
      throw new IllegalArgumentException("Weights of shard " + blocks.rank() + "/" + blocks.tpSize()
          + " given to rank " + rank + "/" + plan.tpSize());
    }
    this.plan = plan;
    this.rank = rank;
    this.backend = backend;
    this.weights = new Weights(blocks, backend);
    try {
      for (Op o : plan.ops()) {
        kernels.add(o.build(plan.tpSize(), rank, weights, backend));
        outs.add(o.out());
      }
    } catch (RuntimeException e) {
      weights.close();
      throw e;
    }
  }

  public TransformerPlan plan() {
    return plan;
  }

  public int rank() {
    return rank;
  }

  public Backend backend() {
    return backend;
  }

  /** Bytes of weights held on the backend. */
  public long weightBytes() {
    return weights.bytes();
  }

  /** Runs the batch; the caller closes the result ({@code [rows, outputDim]}, replicated). */
  public DistTensor forward(Tokens tokens, RunContext ctx) {
    if (ctx.size() != plan.tpSize() || ctx.rank() != rank) {
      throw new IllegalArgumentException("Rank " + rank + " of a tp=" + plan.tpSize() + " plan run on rank "
          + ctx.rank() + " of a group of " + ctx.size());
    }
    // issue 9b: between ops the activation is stored in ctx.activationDtype() (rounded once at each boundary,
    // partial sums reduced in f32 first); each op's kernel gets it widened to f32; the last op's output (the
    // model's: logits, embeddings, scores) is not rounded
    DistTensor h = null;
    try {
      for (int i = 0; i < kernels.size(); i++) {
        DistTensor in = h == null ? null : ctx.widen(h);
        h = null;
        h = kernels.get(i).forward(in, tokens, ctx);
        if (outs.get(i) != Layout.REPLICATED) {
          h = ResidualOp.reduce(h, ctx);
        }
        if (i < kernels.size() - 1) {
          h = ctx.store(h);
        }
      }
      return ctx.widen(h);
    } catch (RuntimeException e) {
      if (h != null && !h.local().isClosed()) {
        h.close();
      }
      throw e;
    }
  }

  @Override
  public void close() {
    if (!closed) {
      closed = true;
      weights.close();
    }
  }
}
