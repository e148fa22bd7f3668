package org.sparktp.nn;

import java.io.Serializable;
import java.util.List;

/**
 * A whole model: its input width (or vocabulary size when the first layer is an embedding) and its
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
}
