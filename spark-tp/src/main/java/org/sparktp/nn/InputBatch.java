package org.sparktp.nn;

/**
 * The rows one rank contributes to a step: dense vectors ({@code rows x width} floats, row-major), one
 * id per row, or a list of ids per row (embedding bag).
 */
public final class InputBatch {
  public enum Kind { DENSE, IDS, BAGS }

  private final Kind kind;
  private final int rows;
  private final float[] dense;
  private final int width;
  private final int[] ids;
  private final int[] offsets;

  private InputBatch(Kind kind, int rows, float[] dense, int width, int[] ids, int[] offsets) {
    this.kind = kind;
    this.rows = rows;
    this.dense = dense;
    this.width = width;
    this.ids = ids;
    this.offsets = offsets;
  }

  /** {@code rows} dense rows of {@code width} floats taken from {@code data[0 .. rows*width)}. */
  public static InputBatch dense(float[] data, int rows, int width) {
    if (rows < 0 || width < 0 || (long) rows * width > data.length) {
      throw new IllegalArgumentException("Dense batch of " + rows + " rows of width " + width + " needs "
          + (long) rows * width + " floats, got " + data.length);
    }
    return new InputBatch(Kind.DENSE, rows, data, width, null, null);
  }

  /** One id per row, {@code ids[0 .. rows)}. */
  public static InputBatch ids(int[] ids, int rows) {
    if (rows < 0 || rows > ids.length) {
      throw new IllegalArgumentException("Id batch of " + rows + " rows, got " + ids.length + " ids");
    }
    return new InputBatch(Kind.IDS, rows, null, 1, ids, null);
  }

  /**
   * A bag of ids per row: row {@code r} is {@code ids[offsets[r] .. offsets[r+1])}; {@code offsets} has
   * {@code rows + 1} entries.
   */
  public static InputBatch bags(int[] ids, int[] offsets, int rows) {
    if (rows < 0 || offsets.length < rows + 1 || offsets[0] != 0 || offsets[rows] > ids.length) {
      throw new IllegalArgumentException("Bag batch of " + rows + " rows needs " + (rows + 1)
          + " offsets starting at 0 and ending within the " + ids.length + " ids");
    }
    return new InputBatch(Kind.BAGS, rows, null, 0, ids, offsets);
  }

  /** An empty batch of the given kind (a rank whose partition is exhausted). */
  public static InputBatch empty(Kind kind, int width) {
    return switch (kind) {
      case DENSE -> new InputBatch(Kind.DENSE, 0, new float[0], width, null, null);
      case IDS -> new InputBatch(Kind.IDS, 0, null, 1, new int[0], null);
      case BAGS -> new InputBatch(Kind.BAGS, 0, null, 0, new int[0], new int[] {0});
    };
  }

  public Kind kind() {
    return kind;
  }

  public int rows() {
    return rows;
  }

  public int width() {
    return width;
  }

  public float[] dense() {
    return dense;
  }

  public int[] ids() {
    return ids;
  }

  public int[] offsets() {
    return offsets;
  }
}
