package org.sparktp.nn;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;

/** The weights of a {@link ModelSpec}, by tensor name. */
final class SpecWeights implements WeightSource {
  private record T(float[] data, int rows, int cols) {}

  private final Map<String, T> tensors = new HashMap<>();

  SpecWeights(ModelSpec spec) {
    for (LayerSpec l : spec.layers()) {
      // a 1-D tensor [n] is held as [n, 1]
      l.tensors((name, shape, data) -> tensors.put(name, new T(data, (int) shape[0], shape.length > 1
          ? (int) shape[1] : 1)));
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
