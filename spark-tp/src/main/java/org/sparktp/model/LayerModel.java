package org.sparktp.model;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;
import org.sparktp.backend.Activation;
import org.sparktp.nn.Parallel;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.plan.LayerGraph;

/**
 * A spark-tp layer-list model held in memory: its layer list (a {@link ModelConfig}) and its weights as float32
 * arrays in PyTorch's layout ({@code nn.Linear.weight} is {@code [out, in]}). Built in code with {@link #builder},
 * read whole from a model directory ({@link ModelDirectory#load()}), saved as one with {@link ModelWriter}. Its ops
 * come from the same code as a {@code config.json}'s ({@link #graph()}).
 *
 * <pre>{@code
 * LayerModel model = LayerModel.builder(1024)
 *     .linear("fc1", 4096, w1, b1)          // w1: float[4096 * 1024], b1: float[4096] or null
 *     .activation(Activation.GELU)
 *     .linear("fc2", 1024, w2, b2)
 *     .build();
 * }</pre>
 */
public final class LayerModel implements Serializable {
  private static final long serialVersionUID = 1L;

  /** A tensor: its shape and float32 values, row-major. */
  private record Data(long[] shape, float[] values) implements Serializable {}

  private final String configJson;
  private final LayerGraph graph;
  private final Map<String, String> names; // the ops' tensor names -> the config's
  private final Map<String, Data> tensors; // by the config's names

  private LayerModel(ModelConfig config, Map<String, Data> tensors) {
    this.configJson = config.toJson();
    this.tensors = tensors;
    ConfigGraph g;
    try {
      g = ConfigGraph.build(config, t -> data(t).shape(), t -> "the model");
    } catch (ModelFormatException e) {
      throw new IllegalArgumentException(e.getMessage(), e);
    }
    this.graph = g.graph(config);
    this.names = Map.copyOf(g.tensors());
  }

  /** A model of {@code config} with {@code tensors} (name -> values) whose shapes are {@code shapes}. */
  static LayerModel of(ModelConfig config, Map<String, long[]> shapes, Map<String, float[]> tensors) {
    Map<String, Data> d = new LinkedHashMap<>();
    for (Map.Entry<String, float[]> e : tensors.entrySet()) {
      d.put(e.getKey(), new Data(shapes.get(e.getKey()), e.getValue()));
    }
    return new LayerModel(config, d);
  }

  /** A builder of a model whose rows are vectors {@code inputDim} wide (or ids below it, for an embedding first). */
  public static Builder builder(int inputDim) {
    return new Builder(inputDim, null, inputDim);
  }

  /** The layer list, tensors named {@code <layer>.weight} and {@code <layer>.bias}. */
  public ModelConfig config() {
    try {
      return ModelConfig.parse(configJson, "the model's config");
    } catch (ModelFormatException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The model's ops, unplanned. */
  public LayerGraph graph() {
    return graph;
  }

  /** The width of a vector row, or the vocabulary when the first layer is an embedding. */
  public int inputDim() {
    return graph.inputDim();
  }

  /** The width of each row's output. */
  public int outputDim() {
    return graph.outputDim();
  }

  /** The names of the tensors, in layer order. */
  public List<String> tensorNames() {
    return List.copyOf(tensors.keySet());
  }

  /** A tensor's shape. */
  public long[] shape(String tensor) {
    return data(tensor).shape().clone();
  }

  /** A tensor's values (not copied). */
  public float[] tensor(String tensor) {
    return data(tensor).values();
  }

  private Data data(String tensor) {
    Data d = tensors.get(tensor);
    if (d == null) {
      throw new IllegalArgumentException("The model has no tensor '" + tensor + "'");
    }
    return d;
  }

  /** The weights, for the ops' tensor names. */
  public WeightSource weights() {
    return new WeightSource() {
      private Data get(String op) {
        String t = names.get(op);
        if (t == null) {
          throw new IllegalArgumentException("The model has no tensor '" + op + "'");
        }
        return data(t);
      }

      private int cols(Data d) {
        return d.shape().length > 1 ? (int) d.shape()[1] : 1; // a 1-D tensor [n] is read as [n, 1]
      }

      @Override
      public float[] rows(String tensor, int start, int count) {
        Data d = get(tensor);
        return Arrays.copyOfRange(d.values(), start * cols(d), (start + count) * cols(d));
      }

      @Override
      public float[] columns(String tensor, int start, int count) {
        Data d = get(tensor);
        int rows = (int) d.shape()[0];
        int cols = cols(d);
        float[] out = new float[rows * count];
        for (int r = 0; r < rows; r++) {
          System.arraycopy(d.values(), r * cols + start, out, r * count, count);
        }
        return out;
      }

      @Override
      public float[] all(String tensor) {
        return get(tensor).values().clone();
      }
    };
  }

  /** Builds a layer list with its weights; each layer takes the width the previous one gives. */
  public static final class Builder {
    private final int inputDim;
    private final Builder parent;
    private final List<ModelConfig.Layer> layers = new ArrayList<>();
    private final Map<String, Data> tensors;
    private int width;

    private Builder(int inputDim, Builder parent, int width) {
      if (inputDim <= 0) {
        throw new IllegalArgumentException("input_dim must be positive, got " + inputDim);
      }
      this.inputDim = inputDim;
      this.parent = parent;
      this.tensors = parent == null ? new LinkedHashMap<>() : parent.tensors;
      this.width = width;
    }

    private String put(String layer, String part, long[] shape, float[] values) {
      if (layer == null || layer.isBlank()) {
        throw new IllegalArgumentException("Every weighted layer needs a name");
      }
      String name = layer + part;
      long n = 1;
      for (long d : shape) {
        n *= d;
      }
      String dims = Arrays.toString(shape);
      if (values == null) {
        throw new IllegalArgumentException("Missing tensor '" + name + "': expected " + dims);
      }
      if (values.length != n) {
        throw new IllegalArgumentException("Tensor '" + name + "' has " + values.length + " elements, expected "
            + dims + " = " + n);
      }
      Data prev = tensors.get(name);
      if (prev != null && (!Arrays.equals(prev.shape(), shape) || !Arrays.equals(prev.values(), values))) {
        throw new IllegalArgumentException("Cannot build the model: two layers store different values as '" + name
            + "'; give them different names, or the same values to tie them");
      }
      tensors.put(name, new Data(shape.clone(), values));
      return name;
    }

    /** {@code Y = X W^T + b}, {@code weight} {@code [out, width]}, {@code bias} {@code [out]} or null; auto split. */
    public Builder linear(String name, int out, float[] weight, float[] bias) {
      return linear(name, out, weight, bias, Parallel.AUTO);
    }

    /** {@link #linear(String, int, float[], float[])} split as {@code parallel} asks. */
    public Builder linear(String name, int out, float[] weight, float[] bias, Parallel parallel) {
      String w = put(name, ".weight", new long[] {out, width}, weight);
      String b = bias == null ? null : put(name, ".bias", new long[] {out}, bias);
      layers.add(new ModelConfig.Linear(w, b, parallel));
      width = out;
      return this;
    }

    /** {@code y = act(x)}, elementwise. */
    public Builder activation(Activation activation) {
      layers.add(new ModelConfig.Act(activation));
      return this;
    }

    /** {@code y = (x - mean) / sqrt(var + eps) * gamma + beta} over each row; {@code gamma}, {@code beta} may be null. */
    public Builder layerNorm(String name, float[] gamma, float[] beta, float eps) {
      String g = gamma == null ? null : put(name, ".weight", new long[] {width}, gamma);
      String b = beta == null ? null : put(name, ".bias", new long[] {width}, beta);
      layers.add(new ModelConfig.LayerNorm(g, b, eps));
      return this;
    }

    /** {@code y = table[id]}, one id per row; {@code table} is {@code [inputDim, dim]} (the first layer only). */
    public Builder embedding(String name, int dim, float[] table) {
      return embedding(name, dim, table, false, false);
    }

    /** A list of ids per row, {@code y} their mean ({@code mean}) or sum; {@code table} is {@code [inputDim, dim]}. */
    public Builder embeddingBag(String name, int dim, float[] table, boolean mean) {
      return embedding(name, dim, table, true, mean);
    }

    private Builder embedding(String name, int dim, float[] table, boolean bag, boolean mean) {
      layers.add(new ModelConfig.Embedding(put(name, ".weight", new long[] {width, dim}, table), bag, mean));
      width = dim;
      return this;
    }

    /** {@code y = x + f(x)}, {@code f} the layers {@code body} adds (they must end at the width they start at). */
    public Builder residual(Consumer<Builder> body) {
      Builder b = new Builder(inputDim, this, width);
      body.accept(b);
      if (b.layers.isEmpty()) {
        throw new IllegalArgumentException("A residual block needs at least one layer");
      }
      if (b.width != width) {
        throw new IllegalArgumentException("A residual block must keep the width: its layers take " + width
            + " and produce " + b.width);
      }
      layers.add(new ModelConfig.Residual(b.layers));
      return this;
    }

    /** The model (its widths and tensors checked). */
    public LayerModel build() {
      if (parent != null) {
        throw new IllegalStateException("build() the outer model, not a residual block");
      }
      return new LayerModel(new ModelConfig(inputDim, layers), new LinkedHashMap<>(tensors));
    }
  }
}
