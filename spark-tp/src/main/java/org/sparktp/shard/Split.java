package org.sparktp.shard;

import java.io.Serializable;
import java.util.Arrays;

/**
 * A balanced split of a dimension of size {@code n} into {@code p} shards.
 *
 * <p>The dimension is made of {@code n / unit} units (a unit is one column, or one attention head of
 * {@code unit} columns). Shard {@code r} gets {@code floor(units / p)} units, plus one more for the
 * first {@code units mod p} shards, so shard sizes differ by at most one unit. Nothing requires
 * {@code n} to be divisible by {@code p}: this is the only place in the project that splits a
 * dimension, and every layer uses it.
 */
public final class Split implements Serializable {
  private static final long serialVersionUID = 1L;

  private final int size;
  private final int parts;
  private final int unit;
  private final int[] offsets; // parts + 1 entries, in elements

  private Split(int size, int parts, int unit, int[] offsets) {
    this.size = size;
    this.parts = parts;
    this.unit = unit;
    this.offsets = offsets;
  }

  /** Splits {@code n} elements into {@code p} shards of single-element units. */
  public static Split balanced(int n, int p) {
    return balanced(n, p, 1, "dimension");
  }

  /**
   * Splits {@code n} elements, made of units of {@code unit} elements, into {@code p} shards.
   *
   * @param what a name used in error messages ("fc1 output columns")
   */
  public static Split balanced(int n, int p, int unit, String what) {
    if (p <= 0) {
      throw new IllegalArgumentException(
          "Tensor-parallel size must be positive, got p=" + p + " (for " + what + ")");
    }
    if (unit <= 0) {
      throw new IllegalArgumentException("Shard unit must be positive, got " + unit + " (for " + what + ")");
    }
    if (n < 0 || n % unit != 0) {
      throw new IllegalArgumentException(
          "Cannot split " + what + " of size " + n + " into units of " + unit
              + ": the size must be a non-negative multiple of the unit");
    }
    int units = n / unit;
    if (p > units) {
      throw new IllegalArgumentException(
          "Cannot split " + what + " of size " + n + (unit > 1 ? " (" + units + " units of " + unit + ")" : "")
              + " across p=" + p + " ranks: every rank needs at least one "
              + (unit > 1 ? "unit" : "element") + "; use a tensor-parallel size of at most " + units);
    }
    int base = units / p;
    int rem = units % p;
    int[] off = new int[p + 1];
    for (int r = 0; r < p; r++) {
      off[r + 1] = off[r] + (base + (r < rem ? 1 : 0)) * unit;
    }
    return new Split(n, p, unit, off);
  }

  /** Total size of the split dimension. */
  public int size() {
    return size;
  }

  /** Number of shards. */
  public int parts() {
    return parts;
  }

  /** Elements per unit. */
  public int unit() {
    return unit;
  }

  /** First element of shard {@code r}. */
  public int offset(int r) {
    check(r);
    return offsets[r];
  }

  /** Number of elements in shard {@code r}. */
  public int length(int r) {
    check(r);
    return offsets[r + 1] - offsets[r];
  }

  /** Sizes of every shard, in rank order. */
  public int[] lengths() {
    int[] out = new int[parts];
    for (int r = 0; r < parts; r++) {
      out[r] = offsets[r + 1] - offsets[r];
    }
    return out;
  }

  /** Largest shard size. */
  public int maxLength() {
    return offsets[1] - offsets[0];
  }

  /** The shard that holds element {@code i}. */
  public int shardOf(int i) {
    if (i < 0 || i >= size) {
      throw new IndexOutOfBoundsException("Element " + i + " outside [0, " + size + ")");
    }
    int r = Arrays.binarySearch(offsets, i);
    if (r >= 0) {
      while (r + 1 < offsets.length && offsets[r + 1] == i) {
        r++;
      }
      return Math.min(r, parts - 1);
    }
    return -r - 2;
  }

  private void check(int r) {
    if (r < 0 || r >= parts) {
      throw new IndexOutOfBoundsException("Shard " + r + " outside [0, " + parts + ")");
    }
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof Split s && s.size == size && s.parts == parts && s.unit == unit;
  }

  @Override
  public int hashCode() {
    return (size * 31 + parts) * 31 + unit;
  }

  @Override
  public String toString() {
    return "Split" + Arrays.toString(lengths());
  }
}
