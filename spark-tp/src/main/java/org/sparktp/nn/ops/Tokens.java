package org.sparktp.nn.ops;

/**
 * A ragged token batch: sequence {@code s} is {@code ids[offsets[s] .. offsets[s+1])}; no padding.
 * Activations of per-token ops are {@code [offsets[rows], hidden]}; attention and pooling use the
 * offsets. {@code positions[t]} is token {@code t}'s index within its sequence.
 */
public record Tokens(int[] ids, int[] offsets, int[] positions) {

  public static Tokens of(int[] ids, int[] offsets) {
    int rows = offsets.length - 1;
    int[] pos = new int[offsets[rows]];
    for (int s = 0; s < rows; s++) {
      for (int t = offsets[s]; t < offsets[s + 1]; t++) {
        pos[t] = t - offsets[s];
      }
    }
    return new Tokens(ids, offsets, pos);
  }

  public int rows() {
    return offsets.length - 1;
  }

  public int count() {
    return offsets[offsets.length - 1];
  }
}
