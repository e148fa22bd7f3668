package org.sparktp.nn;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.sparktp.model.LayerModel;
import org.sparktp.model.ModelConfig;
import org.sparktp.nn.ops.ActivationOp;
import org.sparktp.nn.ops.EmbeddingOp;
import org.sparktp.nn.ops.LinearOp;
import org.sparktp.nn.ops.NormOp;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.ResidualOp;
import org.sparktp.nn.plan.LayerGraph;

/**
 * Test-side description of a layer-list model (what tests build models with): its layers with their whole weights,
 * as main consumes them through {@link #model()} (a {@link LayerModel}, built with its builder), {@link #graph()}
 * (the ops, also for a structure-only spec) and {@link #weights()}.
 *
 * <p>A whole model: its input width (or vocabulary size when the first layer is an embedding) and its
 * layers, with unsplit weights. Construction checks that consecutive widths agree.
 */
public record ModelSpec(int inputDim, List<LayerSpec> layers) implements Serializable {
  public ModelSpec {
    if (layers == null || layers.isEmpty()) {
      throw new IllegalArgumentException("A model needs at least one layer");
    }
    layers = List.copyOf(layers);
    if (inputDim <= 0) {
      throw new IllegalArgumentException("input_dim must be positive, got " + inputDim);
    }
    check(layers, inputDim, true, "layer");
  }

  private static int check(List<LayerSpec> layers, int width, boolean top, String where) {
    for (int i = 0; i < layers.size(); i++) {
      LayerSpec l = layers.get(i);
      String at = where + " " + i + " (" + l.describe() + ")";
      if (l instanceof LayerSpec.Embedding && !(top && i == 0)) {
        throw new IllegalArgumentException(at + ": an embedding may only be the first layer of a model");
      }
      if (l.inWidth() != width) {
        throw new IllegalArgumentException(at + " takes width " + l.inWidth() + " but its input has width "
            + width);
      }
      if (!l.children().isEmpty()) {
        check(l.children(), width, false, at + " layer");
      }
      width = l.outWidth();
    }
    return width;
  }

  /** The same model with no weights loaded (see {@link LayerSpec#UNLOADED}): small enough to ship anywhere. */
  public ModelSpec structure() {
    return new ModelSpec(inputDim, layers.stream().map(LayerSpec::structure).toList());
  }

  /** True when every tensor's values are held in this spec. */
  public boolean isLoaded() {
    boolean[] loaded = {true};
    for (LayerSpec l : layers) {
      l.tensors((name, shape, data) -> loaded[0] &= !LayerSpec.isUnloaded(data));
    }
    return loaded[0];
  }

  /** Width of the model's output. */
  public int outputDim() {
    return layers.get(layers.size() - 1).outWidth();
  }

  /** True when the first layer is an embedding (the input is ids, not vectors). */
  public boolean takesIds() {
    return layers.get(0) instanceof LayerSpec.Embedding;
  }

  /** True when the first layer is an embedding bag (the input is a list of ids per row). */
  public boolean takesBags() {
    return layers.get(0) instanceof LayerSpec.Embedding e && e.bag();
  }

  /** {@code m} (from a model directory's {@code load()}) as layers; a tensor two layers use is one array. */
  public static ModelSpec of(LayerModel m) {
    return new ModelSpec(m.inputDim(), of(m, m.config().layers(), m.inputDim(), ""));
  }

  private static List<LayerSpec> of(LayerModel m, List<ModelConfig.Layer> layers, int width, String prefix) {
    List<LayerSpec> out = new ArrayList<>();
    for (int i = 0; i < layers.size(); i++) {
      ModelConfig.Layer l = layers.get(i);
      LayerSpec s;
      if (l instanceof ModelConfig.Linear x) {
        s = new LayerSpec.Linear(ModelConfig.layerName(x.weight()), width, (int) m.shape(x.weight())[0],
            m.tensor(x.weight()), x.bias() == null ? null : m.tensor(x.bias()), x.parallel());
      } else if (l instanceof ModelConfig.Act x) {
        s = new LayerSpec.Act(x.activation(), width);
      } else if (l instanceof ModelConfig.LayerNorm x) {
        String name = x.weight() != null ? ModelConfig.layerName(x.weight())
            : x.bias() != null ? ModelConfig.layerName(x.bias()) : "layer_norm." + prefix + i;
        s = new LayerSpec.LayerNorm(name, width, x.weight() == null ? null : m.tensor(x.weight()),
            x.bias() == null ? null : m.tensor(x.bias()), x.eps());
      } else if (l instanceof ModelConfig.Embedding x) {
        s = new LayerSpec.Embedding(ModelConfig.layerName(x.weight()), width, (int) m.shape(x.weight())[1],
            m.tensor(x.weight()), x.bag(), x.mean());
      } else {
        s = new LayerSpec.Residual(of(m, ((ModelConfig.Residual) l).layers(), width, prefix + i + "."));
      }
      out.add(s);
      width = s.outWidth();
    }
    return out;
  }

  /** The model as main holds it in memory (its weights must be loaded). */
  public LayerModel model() {
    LayerModel.Builder b = LayerModel.builder(inputDim);
    add(b, layers);
    return b.build();
  }

  private static void add(LayerModel.Builder b, List<LayerSpec> layers) {
    for (LayerSpec l : layers) {
      l.addTo(b);
    }
  }

  /** The model's ops (a structure-only spec too), tensors named {@code <layer>.weight} / {@code <layer>.bias}. */
  public LayerGraph graph() {
    checkNames(layers, new HashSet<>(), new LayerSpec.Embedding[1]);
    return new LayerGraph(takesBags() ? InputBatch.Kind.BAGS : takesIds() ? InputBatch.Kind.IDS
        : InputBatch.Kind.DENSE, inputDim, outputDim(), ops(layers));
  }

  /** The weights, by tensor name. */
  public WeightSource weights() {
    return new SpecWeights(this);
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
      boolean tied = l instanceof LayerSpec.Linear x && emb[0] != null && !emb[0].bag()
          && x.name().equals(emb[0].name()) && x.out() == emb[0].vocab() && x.in() == emb[0].dim()
          && x.bias() == null;
      if (n != null && !names.add(n) && !tied) {
        throw new IllegalArgumentException("Two layers are named '" + n + "'; layer names must be unique");
      }
      checkNames(l.children(), names, emb);
    }
  }

}
