package org.sparktp.model;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.function.Function;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.ops.ActivationOp;
import org.sparktp.nn.ops.EmbeddingOp;
import org.sparktp.nn.ops.LinearOp;
import org.sparktp.nn.ops.NormOp;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.ResidualOp;
import org.sparktp.nn.plan.LayerGraph;

/**
 * Builds the ops of a {@code config.json} layer list ({@link ModelConfig}) from its tensors' shapes, checking each
 * shape against the width the layers reach: each {@link ModelConfig.Layer} adds its op here. The ops name their
 * tensors {@code <layer>.weight} / {@code <layer>.bias} (the layer's name is its weight's tensor name without
 * {@code .weight}); {@link #tensors()} maps those names to the tensors the config names.
 */
final class ConfigGraph {
  private final Function<String, long[]> shapes;
  private final Function<String, String> where;
  private final Map<String, String> tensors = new HashMap<>();
  private final Set<String> names = new HashSet<>();
  private String embedding; // the name of the (non-bag) embedding, which a linear may tie to
  private long[] embeddingShape;
  /** Where the current width came from, for messages. */
  private String widthSource = "input_dim in config.json";
  /** The tensor that last changed the width (named when a residual block does not keep it). */
  private String widthTensor;
  private List<Op> ops;
  private int outputDim;

  /**
   * @param shapes each tensor's shape
   * @param where where a tensor is stored, for errors ({@code Cannot load 'x' from <where>: ...})
   */
  private ConfigGraph(Function<String, long[]> shapes, Function<String, String> where) {
    this.shapes = shapes;
    this.where = where;
  }

  /** The ops of {@code config}; a tensor whose shape does not fit is a {@link ModelFormatException}. */
  static ConfigGraph build(ModelConfig config, Function<String, long[]> shapes, Function<String, String> where)
      throws ModelFormatException {
    ConfigGraph g = new ConfigGraph(shapes, where);
    g.ops = new ArrayList<>();
    g.outputDim = g.walk(config.layers(), config.inputDim(), "layer ", g.ops);
    return g;
  }

  /** The layer list as a graph of ops (rows: vectors, or ids when the first layer is an embedding). */
  LayerGraph graph(ModelConfig config) {
    String first = config.layers().get(0).type();
    InputBatch.Kind kind = first.equals("embedding_bag") ? InputBatch.Kind.BAGS
        : first.equals("embedding") ? InputBatch.Kind.IDS : InputBatch.Kind.DENSE;
    return new LayerGraph(kind, config.inputDim(), outputDim, ops);
  }

  /** The ops' tensor names ({@code <layer>.weight}) -> the tensors the config names. */
  Map<String, String> tensors() {
    return tensors;
  }

  private int walk(List<ModelConfig.Layer> layers, int width, String prefix, List<Op> out)
      throws ModelFormatException {
    for (int i = 0; i < layers.size(); i++) {
      width = layers.get(i).build(this, width, prefix, i, out);
    }
    return width;
  }

  private long[] shape(String tensor) {
    return shapes.apply(tensor);
  }

  private ModelFormatException shapeError(String tensor, String expected, long[] actual) {
    return new ModelFormatException("Cannot load '" + tensor + "' from " + where.apply(tensor) + ": expected "
        + expected + ", file has " + TensorInfo.format(actual));
  }

  /** Records a layer's name: names are unique, except a linear tied to the embedding (the same table). */
  private void name(String name, boolean tied) {
    if (!names.add(name) && !tied) {
      throw new IllegalArgumentException("Two layers are named '" + name + "'; layer names must be unique");
    }
  }

  private String tensor(String layer, String part, String tensor) {
    if (tensor == null) {
      return null;
    }
    tensors.put(layer + part, tensor);
    return layer + part;
  }

  int linear(ModelConfig.Linear x, int width, String at, List<Op> out) throws ModelFormatException {
    long[] w = shape(x.weight());
    if (w.length != 2 || w[1] != width || w[0] <= 0 || w[0] > Integer.MAX_VALUE) {
      throw shapeError(x.weight(), "[*, " + width + "] (a linear weight is [out, in]; " + width
          + " is the input width of " + at + ", from " + widthSource + ")", w);
    }
    int o = (int) w[0];
    if (x.bias() != null) {
      long[] b = shape(x.bias());
      if (b.length != 1 || b[0] != o) {
        throw shapeError(x.bias(), "[" + o + "] (the bias of " + at + ", whose weight '" + x.weight()
            + "' has " + o + " outputs)", b);
      }
    }
    widthSource = "the output width of " + at + " ('" + x.weight() + "')";
    widthTensor = x.weight();
    String name = ModelConfig.layerName(x.weight());
    name(name, name.equals(embedding) && x.bias() == null && o == embeddingShape[0] && width == embeddingShape[1]);
    tensor(name, ".weight", x.weight());
    tensor(name, ".bias", x.bias());
    out.add(LinearOp.of(name, width, o, x.bias() != null, x.parallel()));
    return o;
  }

  int activation(ModelConfig.Act x, int width, List<Op> out) {
    out.add(ActivationOp.of(x.activation(), width));
    return width;
  }

  int layerNorm(ModelConfig.LayerNorm x, int width, String at, List<Op> out) throws ModelFormatException {
    for (String t : new String[] {x.weight(), x.bias()}) {
      if (t != null) {
        long[] s = shape(t);
        if (s.length != 1 || s[0] != width) {
          throw shapeError(t, "[" + width + "] (the width at " + at + " (layer_norm), from " + widthSource
              + ")", s);
        }
      }
    }
    String name = x.weight() != null ? ModelConfig.layerName(x.weight())
        : x.bias() != null ? ModelConfig.layerName(x.bias()) : "layer_norm." + at.replace("layer ", "");
    name(name, false);
    out.add(new NormOp(name, false, width, tensor(name, ".weight", x.weight()), tensor(name, ".bias", x.bias()),
        x.eps()));
    return width;
  }

  int embedding(ModelConfig.Embedding x, int width, String at, List<Op> out) throws ModelFormatException {
    long[] s = shape(x.weight());
    if (s.length != 2 || s[0] != width || s[1] <= 0 || s[1] > Integer.MAX_VALUE) {
      throw shapeError(x.weight(), "[" + width + ", *] (an embedding table is [vocab, dim]; the vocabulary "
          + "size is input_dim in config.json)", s);
    }
    widthSource = "the output width of " + at + " ('" + x.weight() + "')";
    widthTensor = x.weight();
    String name = ModelConfig.layerName(x.weight());
    name(name, false);
    if (!x.bag()) {
      embedding = name;
      embeddingShape = s;
    }
    tensor(name, ".weight", x.weight());
    out.add(EmbeddingOp.rows(name, width, (int) s[1], !x.bag() ? EmbeddingOp.Lookup.ID
        : x.mean() ? EmbeddingOp.Lookup.MEAN : EmbeddingOp.Lookup.SUM));
    return (int) s[1];
  }

  int residual(ModelConfig.Residual x, int width, String at, int index, List<Op> out) throws ModelFormatException {
    List<Op> body = new ArrayList<>();
    int end = walk(x.layers(), width, at + ".", body);
    if (end != width) {
      // only linears change the width inside a block, so widthTensor is set here
      throw shapeError(widthTensor, "[" + width + ", *] (" + at + " is a residual block, which must end "
          + "at its input width " + width + ")", shape(widthTensor));
    }
    widthSource = "the output of " + at + " (residual)";
    out.add(new ResidualOp("residual." + index, body, true));
    return width;
  }
}
