package org.sparktp.model;

import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import java.util.Arrays;

/**
 * One tensor's entry in a safetensors header: its name, element type (as written, and as a
 * {@link DType}, or null for a type this code does not know), shape, and byte range
 * {@code [begin, end)} relative to the start of the data section.
 */
public record TensorInfo(String name, String dtypeName, DType dtype, long[] shape, long begin, long end) {
  public TensorInfo {
    shape = shape.clone();
  }

  /** The shape (a copy). */
  @Override
  public long[] shape() {
    return shape.clone();
  }

  /** Number of dimensions. */
  public int rank() {
    return shape.length;
  }

  /** Size of dimension {@code d}. */
  public long dim(int d) {
    return shape[d];
  }

  /** Number of elements (1 for a scalar). */
  public long numel() {
    long n = 1;
    for (long d : shape) {
      n = Math.multiplyExact(n, d);
    }
    return n;
  }

  /** Bytes in the data section. */
  public long byteLength() {
    return end - begin;
  }

  /** The shape as {@code [a, b]}. */
  public String shapeString() {
    return format(shape);
  }

  static String format(long[] shape) {
    return Arrays.toString(shape);
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof TensorInfo t && t.name.equals(name) && t.dtypeName.equals(dtypeName)
        && Arrays.equals(t.shape, shape) && t.begin == begin && t.end == end;
  }

  @Override
  public int hashCode() {
    return name.hashCode() * 31 + Arrays.hashCode(shape);
  }

  @Override
  public String toString() {
    return name + " " + dtypeName + shapeString() + " @[" + begin + ", " + end + ")";
  }
}
