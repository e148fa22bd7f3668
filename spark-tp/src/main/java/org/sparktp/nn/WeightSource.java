package org.sparktp.nn;

/**
 * Where a rank reads its weight shards from: whole tensors held in memory ({@link #of(ModelSpec)}), or
 * byte ranges of a checkpoint. Tensors are named {@code <layer>.weight} and {@code <layer>.bias}; a 2-D
 * tensor is {@code [rows, cols]} row-major, a 1-D tensor {@code [n]} is read with {@link #rows}.
 */
public interface WeightSource {

  /** Rows {@code [start, start + count)} of a tensor (elements, for a 1-D tensor). */
  float[] rows(String tensor, int start, int count);

  /** Columns {@code [start, start + count)} of every row of a 2-D tensor. */
  float[] columns(String tensor, int start, int count);

  /** A whole tensor. */
  float[] all(String tensor);

  /** The weights of an in-memory model. */
  static WeightSource of(ModelSpec spec) {
    return new SpecWeights(spec);
  }
}
