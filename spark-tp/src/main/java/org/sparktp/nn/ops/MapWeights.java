package org.sparktp.nn.ops;

import java.util.Arrays;
import java.util.HashMap;
import java.util.Map;
import org.sparktp.nn.WeightSource;

/** Whole tensors held in memory by name ({@code [rows, cols]} row-major; a 1-D tensor is {@code [n, 1]}). */
public final class MapWeights implements WeightSource {
  private record T(float[] data, int rows, int cols) {}

  private final Map<String, T> tensors = new HashMap<>();

  /** Adds a tensor {@code [rows, cols]}; returns this. */
  public MapWeights put(String name, float[] data, int rows, int cols) {
    if ((long) rows * cols != data.length) {
      throw new IllegalArgumentException("Tensor '" + name + "' [" + rows + ", " + cols + "] has " + data.length
          + " values");
    }
    tensors.put(name, new T(data, rows, cols));
    return this;
  }

  private T get(String name) {
    T t = tensors.get(name);
    if (t == null) {
      throw new IllegalArgumentException("No tensor '" + name + "'");
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
