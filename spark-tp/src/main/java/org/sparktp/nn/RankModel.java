package org.sparktp.nn;

import java.util.ArrayList;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.tensor.Tensor;

/**
 * One rank's instance of a {@link Plan}: its layers with their weight shards uploaded to the rank's
 * backend. {@link #forward} runs the plan on the group's rows (every rank passes the same rows) and
 * returns this rank's part of the output in {@link Plan#outputLayout()}.
 */
public final class RankModel implements AutoCloseable {
  private final Plan plan;
  private final int rank;
  private final Backend backend;
  private final VocabParallelEmbedding embedding; // first op when the model takes ids, else null
  private final List<Layer> layers = new ArrayList<>();
  private boolean closed;

  private final DType linearDtype;

  /** A rank model with float32 linear weights. */
  public RankModel(Plan plan, int rank, Backend backend, RankWeights weights) {
    this(plan, rank, backend, weights, DType.F32);
  }

  /**
   * A rank model whose linear weights are stored in {@code linearDtype} (f32, bf16, f16, or int8 = {@code I8}
   * weight-only with per-output-channel scales; GEMMs accumulate in f32, activations, biases, norms and
   * embeddings stay f32). Weights already on the backend
   * ({@link RankWeights#take}) are used as they are (converted when their dtype differs); host blocks are
   * uploaded and converted.
   */
  public RankModel(Plan plan, int rank, Backend backend, RankWeights weights, DType linearDtype) {
    this.linearDtype = linearDtype;
    if (weights.rank() != rank || weights.tpSize() != plan.tpSize()) {
      throw new IllegalArgumentException("Weights of shard " + weights.rank() + "/" + weights.tpSize()
          + " given to rank " + rank + "/" + plan.tpSize());
    }
    this.plan = plan;
    this.rank = rank;
    this.backend = backend;
    List<Step> steps = plan.steps();
    VocabParallelEmbedding emb = null;
    try {
      int start = 0;
      if (steps.get(0) instanceof Step.Embed e) {
        emb = new VocabParallelEmbedding(e.name(), e.vocabSplit(), rank, upload(weights, e.name() + ".weight"),
            e.bag(), e.mean());
        start = 1;
      }
      build(steps.subList(start, steps.size()), weights, layers);
    } catch (RuntimeException ex) {
      if (emb != null) {
        emb.close();
      }
      layers.forEach(Layer::close);
      throw ex;
    }
    this.embedding = emb;
  }

  private void build(List<Step> steps, RankWeights w, List<Layer> out) {
    for (Step s : steps) {
      if (s instanceof Step.Linear l) {
        Tensor wt = uploadAs(w, l.name() + ".weight", linearDtype);
        Tensor bt;
        try {
          bt = l.hasBias() ? upload(w, l.name() + ".bias") : null;
        } catch (RuntimeException e) {
          wt.close();
          throw e;
        }
        try {
          // int8: the weight stays in its loaded float type and is quantized as its kernel is prepared
          DType st = linearDtype == DType.I8 ? DType.I8 : null;
          out.add(switch (l.mode()) {
            case COLUMN -> new ColumnParallelLinear(l.name(), l.split(), rank, wt, bt, l.epilogue(), false, st);
            case ROW -> new RowParallelLinear(l.name(), l.split(), rank, wt, bt, true, false, st);
            case REPLICATED -> new ReplicatedLinear(l.name(), wt, bt, l.epilogue(), st);
          });
        } catch (RuntimeException e) {
          wt.close();
          if (bt != null) {
            bt.close();
          }
          throw e;
        }
      } else if (s instanceof Step.Act a) {
        out.add(new ActivationLayer(a.activation()));
      } else if (s instanceof Step.Norm n) {
        Tensor g = n.hasGamma() ? upload(w, n.name() + ".weight") : null;
        Tensor b = n.hasBeta() ? upload(w, n.name() + ".bias") : null;
        out.add(new LayerNormLayer(n.name(), g, b, n.eps()));
      } else if (s instanceof Step.Residual r) {
        List<Layer> body = new ArrayList<>();
        try {
          build(r.body(), w, body);
        } catch (RuntimeException ex) {
          body.forEach(Layer::close);
          throw ex;
        }
        out.add(new ResidualBlock(body));
      } else if (s instanceof Step.Convert c) {
        out.add(new LayoutChange(c));
      } else {
        throw new IllegalStateException("An embedding may only be the first op, found " + s);
      }
    }
  }

  private Tensor upload(RankWeights w, String name) {
    return uploadAs(w, name, DType.F32);
  }

  private Tensor uploadAs(RankWeights w, String name, DType dtype) {
    Tensor t = w.take(name);
    if (t == null) {
      RankWeights.Block b = w.get(name);
      t = backend.upload(b.data(), b.rows(), b.cols());
    }
    if (t.dtype() == dtype.weightTensorType(t.dtype())) {
      return t; // int8 weights are quantized from their loaded float type by LinearKernel.create
    }
    try (Tensor src = t) {
      return backend.convert(src, dtype);
    }
  }

  /** The storage dtype of the linear weights. */
  public DType linearDtype() {
    return linearDtype;
  }

  /** The GEMM kernel of the first linear layer (they share one), e.g. {@code onednn brg_matmul:avx512_core_amx}. */
  public String kernel() {
    return backend.kernel(linearDtype);
  }

  public Plan plan() {
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
    long b = embedding == null ? 0 : embedding.weightBytes();
    for (Layer l : layers) {
      b += l.weightBytes();
    }
    return b;
  }

  /** Runs the plan on the group's rows (identical on every rank). The caller closes the result. */
  public DistTensor forward(InputBatch rows, RunContext ctx) {
    if (ctx.size() != plan.tpSize() || ctx.rank() != rank) {
      throw new IllegalArgumentException("Rank " + rank + " of a tp=" + plan.tpSize() + " plan run on rank "
          + ctx.rank() + " of a group of " + ctx.size());
    }
    DistTensor x;
    if (embedding != null) {
      boolean bags = embedding.bag();
      if ((rows.kind() == InputBatch.Kind.BAGS) != bags || rows.kind() == InputBatch.Kind.DENSE) {
        throw new IllegalArgumentException("This model takes " + (bags ? "a list of ids" : "one id") + " per row, got "
            + rows.kind().name().toLowerCase(java.util.Locale.ROOT) + " input");
      }
      x = embedding.forward(rows.ids(), bags ? rows.offsets() : null, rows.rows(), ctx);
    } else {
      if (rows.kind() != InputBatch.Kind.DENSE) {
        throw new IllegalArgumentException("This model takes vectors of width " + plan.inputDim() + ", got "
            + rows.kind().name().toLowerCase(java.util.Locale.ROOT) + " input");
      }
      if (rows.width() != plan.inputDim()) {
        throw new IllegalArgumentException("Input width " + rows.width() + " does not match the model's input width "
            + plan.inputDim());
      }
      x = DistTensor.replicated(backend.upload(rows.dense(), 0, rows.rows(), rows.width()));
    }
    return forward(x, ctx);
  }

  /** Runs the plan on a replicated activation already on the backend; consumes it. */
  public DistTensor forward(DistTensor x, RunContext ctx) {
    DistTensor h = x;
    try {
      for (Layer l : layers) {
        h = l.forward(h, ctx);
      }
      return h;
    } catch (RuntimeException e) {
      if (!h.local().isClosed()) {
        h.close();
      }
      throw e;
    }
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    if (embedding != null) {
      embedding.close();
    }
    for (Layer l : layers) {
      l.close();
    }
  }
}
