package org.sparktp.nn;

import java.io.Serializable;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The weight shards of one rank, as host arrays keyed by tensor name ({@code <layer>.weight},
 * {@code <layer>.bias}); what the driver ships to a rank, and what a rank uploads to its backend.
 */
public final class RankWeights implements Serializable {
  private static final long serialVersionUID = 1L;

  /** A 2-D block of floats, row-major. */
  public record Block(int rows, int cols, float[] data) implements Serializable {
    public Block {
      if ((long) rows * cols != data.length) {
        throw new IllegalArgumentException("Block [" + rows + ", " + cols + "] with " + data.length + " floats");
      }
    }
  }

  private final int rank;
  private final int tpSize;
  private final Map<String, Block> blocks = new LinkedHashMap<>();

  public RankWeights(int rank, int tpSize) {
    this.rank = rank;
    this.tpSize = tpSize;
  }

  public int rank() {
    return rank;
  }

  public int tpSize() {
    return tpSize;
  }

  public void put(String name, Block b) {
    if (blocks.putIfAbsent(name, b) != null) {
      throw new IllegalArgumentException("Tensor '" + name + "' is used by two layers; give each layer its own");
    }
  }

  /** True when a block {@code [rows, cols]} is held under {@code name} (a tied weight read once). */
  public boolean has(String name, int rows, int cols) {
    Block b = blocks.get(name);
    return b != null && b.rows() == rows && b.cols() == cols;
  }

  /** The block, or an error naming the missing tensor. */
  public Block get(String name) {
    Block b = blocks.get(name);
    if (b == null) {
      throw new IllegalArgumentException("Shard " + rank + " of " + tpSize + " has no tensor '" + name + "'");
    }
    return b;
  }

  public Map<String, Block> blocks() {
    return Collections.unmodifiableMap(blocks);
  }

  /** Bytes of all blocks. */
  public long bytes() {
    long b = 0;
    for (Block x : blocks.values()) {
      b += 4L * x.data().length;
    }
    return b;
  }
}
