package org.sparktp.nn.ops;

import java.io.Serializable;
import org.sparktp.tensor.DType;

/**
 * A block of a checkpoint tensor that one rank reads: rows {@code [start, start + count)} of a
 * {@code [rows, cols]} tensor (a contiguous byte range; for a 1-D tensor an element range), columns
 * {@code [start, start + count)} of every row (one range per row), or the whole tensor. Two ops that
 * read the same slice of the same tensor (tied weights) share one copy: {@link #id()} names it.
 *
 * @param tensor the checkpoint tensor's name
 * @param rows the tensor's rows (1 for a 1-D tensor read as {@code [1, n]}: then rows are elements)
 * @param cols the tensor's columns
 * @param kind what the tensor is, which decides the dtype it is stored in
 */
public record Slice(String tensor, Read read, int start, int count, int rows, int cols, Kind kind)
    implements Serializable {

  /** How a slice is cut out of its tensor. */
  public enum Read { ROWS, COLUMNS, ALL }

  /**
   * What a tensor is: a linear's weight (stored in the storage dtype: f32, bf16, f16, or int8 quantized per output
   * channel), an embedding table (gathered, never multiplied: {@link Weights#tableDtype(DType)}), or a vector (a
   * bias, a norm's weight: f32).
   */
  public enum Kind { WEIGHT, TABLE, VECTOR }

  public static Slice rows(String tensor, int start, int count, int rows, int cols) {
    return new Slice(tensor, Read.ROWS, start, count, rows, cols, Kind.WEIGHT);
  }

  public static Slice columns(String tensor, int start, int count, int rows, int cols) {
    return new Slice(tensor, Read.COLUMNS, start, count, rows, cols, Kind.WEIGHT);
  }

  public static Slice all(String tensor, int rows, int cols) {
    return new Slice(tensor, Read.ALL, 0, rows, rows, cols, Kind.WEIGHT);
  }

  /** A 1-D tensor {@code [n]}: elements {@code [start, start + count)}. */
  public static Slice elements(String tensor, int start, int count, int n) {
    return new Slice(tensor, Read.ROWS, start, count, n, 1, Kind.VECTOR);
  }

  /** This slice of an embedding table. */
  public Slice table() {
    return new Slice(tensor, read, start, count, rows, cols, Kind.TABLE);
  }

  /** Bytes of the block stored for linears in {@code dtype} (tables in their dtype, vectors f32; no int8 scales). */
  public long bytes(DType dtype) {
    int es = switch (kind) {
      case VECTOR -> 4;
      case TABLE -> Weights.tableDtype(dtype).size();
      case WEIGHT -> dtype.size();
    };
    return es * elements();
  }


  /** The key two ops share a slice by (rows {@code [0, rows)} are the whole tensor, as {@link Read#ALL}). */
  public String id() {
    boolean whole = read == Read.ALL || (read == Read.ROWS && start == 0 && count == rows);
    return tensor + (whole ? "" : read == Read.ROWS ? "[" + start + ":" + (start + count) + ", :]"
        : "[:, " + start + ":" + (start + count) + "]");
  }

  /** Shape of the block read: {@code [count, cols]}, {@code [rows, count]} or {@code [rows, cols]}. */
  public int blockRows() {
    return read == Read.COLUMNS || read == Read.ALL ? rows : count;
  }

  public int blockCols() {
    return read == Read.ROWS || read == Read.ALL ? cols : count;
  }

  /** Float32 elements of the block. */
  public long elements() {
    return (long) blockRows() * blockCols();
  }
}
