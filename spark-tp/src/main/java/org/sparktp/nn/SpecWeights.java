package org.sparktp.nn;

import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/** The weights of a {@link ModelSpec}, by tensor name. */
final class SpecWeights implements WeightSource {
  private record T(float[] data, int rows, int cols) {}

  private final Map<String, T> tensors = new HashMap<>();

  SpecWeights(ModelSpec spec) {
    collect(spec.layers());
  }

  private void collect(List<LayerSpec> layers) {
    for (LayerSpec l : layers) {
      if (l instanceof LayerSpec.Linear x) {
        tensors.put(x.name() + ".weight", new T(x.weight(), x.out(), x.in()));
        if (x.bias() != null) {
          tensors.put(x.name() + ".bias", new T(x.bias(), x.out(), 1));
        }
      } else if (l instanceof LayerSpec.LayerNorm x) {
        if (x.gamma() != null) {
          tensors.put(x.name() + ".weight", new T(x.gamma(), x.width(), 1));
        }
        if (x.beta() != null) {
          tensors.put(x.name() + ".bias", new T(x.beta(), x.width(), 1));
        }
      } else if (l instanceof LayerSpec.Embedding x) {
        tensors.put(x.name() + ".weight", new T(x.table(), x.vocab(), x.dim()));
      } else if (l instanceof LayerSpec.Residual x) {
        collect(x.body());
      }
    }
  }

  private T get(String name) {
    T t = tensors.get(name);
    if (t == null) {
      throw new IllegalArgumentException("The model has no tensor '" + name + "'");
    }
    if (LayerSpec.isUnloaded(t.data)) {
      throw new IllegalStateException("Tensor '" + name + "' is not loaded in this model spec (structure only); "
          + "read the shards from the checkpoint's WeightSource instead");
    }
    return t;
  }

  @Override
  public float[] rows(String tensor, int start, int count) {
    T t = get(tensor);
    return Arrays.copyOfRange(t.data, start * t.cols, (start + count) * t.cols);
  }

  @Override
  public float[] columns(String tensor, int start, int count) {
    T t = get(tensor);
    float[] out = new float[t.rows * count];
    for (int r = 0; r < t.rows; r++) {
      System.arraycopy(t.data, r * t.cols + start, out, r * count, count);
    }
    return out;
  }

  @Override
  public float[] all(String tensor) {
    return get(tensor).data.clone();
  }
}
