package org.sparktp.nn;

import java.io.Serializable;
import java.util.List;
import org.sparktp.backend.Activation;

/**
 * One layer of a model, with its whole (unsplit) weights in PyTorch's layout. Weights are held as
 * float32 host arrays in row-major order. Test-side: {@link ModelSpec#model()} builds main's model from these.
 */
public sealed interface LayerSpec extends Serializable {

  /**
   * Stands for a tensor that is present in the model but not loaded in this spec: a structure-only
   * spec (see {@link ModelSpec#isLoaded()}) can be planned, and each rank then reads its own shards from
   * a {@link WeightSource} such as a checkpoint. A null bias still means "no bias".
   */
  float[] UNLOADED = new float[0];

  /** True for {@link #UNLOADED} (compared by length, so it survives serialization). */
  static boolean isUnloaded(float[] tensor) {
    return tensor != null && tensor.length == 0;
  }

  /** Adds this layer to {@code b}. */
  void addTo(org.sparktp.model.LayerModel.Builder b);

  /** A copy of this layer with every tensor replaced by {@link #UNLOADED}. */
  LayerSpec structure();

  /** Width of the activation this layer takes; for an embedding, the vocabulary size. */
  int inWidth();

  /** Width of the activation this layer produces. */
  int outWidth();

  /** A short description for plans and errors. */
  String describe();

  /** The layer's name (its tensors are {@code <name>.weight}, {@code <name>.bias}), or null for one without. */
  default String name() {
    return null;
  }

  /** The layers inside this one (a residual block's body), else none. */
  default List<LayerSpec> children() {
    return List.of();
  }

  /** Where {@link #tensors} puts each tensor: its name ({@code <layer>.weight}, {@code .bias}), shape and values. */
  interface TensorSink {
    void put(String name, long[] shape, float[] data);
  }

  /** Hands each tensor this layer holds (its children's too) to {@code sink}, in layer order; none by default. */
  default void tensors(TensorSink sink) {
    for (LayerSpec c : children()) {
      c.tensors(sink);
    }
  }

  /**
   * {@code Y = X W^T + b}: {@code weight} is {@code [out, in]} (PyTorch's {@code nn.Linear.weight}),
   * {@code bias} is {@code [out]} or null.
   */
  record Linear(String name, int in, int out, float[] weight, float[] bias, Parallel parallel) implements LayerSpec {
    public Linear {
      Specs.checkName(name);
      Specs.checkLength(name + ".weight", weight, (long) out * in, "[" + out + ", " + in + "]");
      if (bias != null) {
        Specs.checkLength(name + ".bias", bias, out, "[" + out + "]");
      }
      parallel = parallel == null ? Parallel.AUTO : parallel;
    }

    @Override
    public void addTo(org.sparktp.model.LayerModel.Builder b) {
      b.linear(name, out, weight, bias, parallel);
    }

    @Override
    public int inWidth() {
      return in;
    }

    @Override
    public int outWidth() {
      return out;
    }

    @Override
    public LayerSpec structure() {
      return new Linear(name, in, out, UNLOADED, bias == null ? null : UNLOADED, parallel);
    }

    @Override
    public void tensors(TensorSink sink) {
      sink.put(name + ".weight", new long[] {out, in}, weight);
      if (bias != null) {
        sink.put(name + ".bias", new long[] {out}, bias);
      }
    }

    @Override
    public String describe() {
      return "linear " + name + " [" + in + " -> " + out + "]" + (bias == null ? " no bias" : "");
    }
  }

  /** {@code y = act(x)}; the width is taken from the previous layer. */
  record Act(Activation activation, int width) implements LayerSpec {
    @Override
    public void addTo(org.sparktp.model.LayerModel.Builder b) {
      b.activation(activation);
    }

    @Override
    public int inWidth() {
      return width;
    }

    @Override
    public int outWidth() {
      return width;
    }

    @Override
    public LayerSpec structure() {
      return this;
    }

    @Override
    public String describe() {
      return activation.id();
    }
  }

  /** {@code y = (x - mean) / sqrt(var + eps) * gamma + beta} over each row. */
  record LayerNorm(String name, int width, float[] gamma, float[] beta, float eps) implements LayerSpec {
    public LayerNorm {
      Specs.checkName(name);
      if (gamma != null) {
        Specs.checkLength(name + ".weight", gamma, width, "[" + width + "]");
      }
      if (beta != null) {
        Specs.checkLength(name + ".bias", beta, width, "[" + width + "]");
      }
      if (!(eps > 0)) {
        throw new IllegalArgumentException("layer_norm " + name + ": eps must be positive, got " + eps);
      }
    }

    @Override
    public void addTo(org.sparktp.model.LayerModel.Builder b) {
      b.layerNorm(name, gamma, beta, eps);
    }

    @Override
    public int inWidth() {
      return width;
    }

    @Override
    public int outWidth() {
      return width;
    }

    @Override
    public LayerSpec structure() {
      return new LayerNorm(name, width, gamma == null ? null : UNLOADED, beta == null ? null : UNLOADED, eps);
    }

    @Override
    public void tensors(TensorSink sink) {
      if (gamma != null) {
        sink.put(name + ".weight", new long[] {width}, gamma);
      }
      if (beta != null) {
        sink.put(name + ".bias", new long[] {width}, beta);
      }
    }

    @Override
    public String describe() {
      return "layer_norm " + name + " [" + width + "]";
    }
  }

  /**
   * Embedding lookup, one id per row: {@code y = table[id]}; {@code table} is {@code [vocab, dim]}. With
   * {@code bag} set, each row is a list of ids and {@code y} is their sum ({@code mean = false}) or mean.
   */
  record Embedding(String name, int vocab, int dim, float[] table, boolean bag, boolean mean) implements LayerSpec {
    public Embedding {
      Specs.checkName(name);
      Specs.checkLength(name + ".weight", table, (long) vocab * dim, "[" + vocab + ", " + dim + "]");
    }

    @Override
    public void addTo(org.sparktp.model.LayerModel.Builder b) {
      if (bag) {
        b.embeddingBag(name, dim, table, mean);
      } else {
        b.embedding(name, dim, table);
      }
    }

    @Override
    public int inWidth() {
      return vocab;
    }

    @Override
    public int outWidth() {
      return dim;
    }

    @Override
    public LayerSpec structure() {
      return new Embedding(name, vocab, dim, UNLOADED, bag, mean);
    }

    @Override
    public void tensors(TensorSink sink) {
      sink.put(name + ".weight", new long[] {vocab, dim}, table);
    }

    @Override
    public String describe() {
      return (bag ? "embedding_bag(" + (mean ? "mean" : "sum") + ") " : "embedding ") + name + " [" + vocab + ", "
          + dim + "]";
    }
  }

  /** {@code y = x + f(x)}, where {@code f} is the layer list {@code body}. */
  record Residual(List<LayerSpec> body) implements LayerSpec {
    public Residual {
      if (body == null || body.isEmpty()) {
        throw new IllegalArgumentException("A residual block needs at least one layer");
      }
      body = List.copyOf(body);
      int w = body.get(0).inWidth();
      int out = body.get(body.size() - 1).outWidth();
      if (w != out) {
        throw new IllegalArgumentException("A residual block must keep the width: its layers take " + w
            + " and produce " + out);
      }
    }

    @Override
    public void addTo(org.sparktp.model.LayerModel.Builder b) {
      b.residual(r -> body.forEach(l -> l.addTo(r)));
    }

    @Override
    public int inWidth() {
      return body.get(0).inWidth();
    }

    @Override
    public int outWidth() {
      return body.get(body.size() - 1).outWidth();
    }

    @Override
    public LayerSpec structure() {
      return new Residual(body.stream().map(LayerSpec::structure).toList());
    }

    @Override
    public List<LayerSpec> children() {
      return body;
    }

    @Override
    public String describe() {
      return "residual(" + body.size() + " layers)";
    }
  }
}
