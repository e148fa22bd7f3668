package org.sparktp.nn;

import java.io.Serializable;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import org.sparktp.backend.Tensor;

/**
 * The weight shards of one rank, keyed by tensor name ({@code <layer>.weight}, {@code <layer>.bias}): host
 * arrays (what the driver ships to a rank, uploaded by the rank), or tensors already on the rank's backend
 * in their storage dtype (what a rank reads from a checkpoint: {@link org.sparktp.nn.plan.Plan#shard(WeightSource, int,
 * org.sparktp.backend.Backend, org.sparktp.tensor.DType)}). Tensors are owned here until a
 * rank model takes them; {@link #close()} frees those not taken.
 */
public final class RankWeights implements Serializable, AutoCloseable {
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
  private final transient Map<String, Tensor> tensors = new LinkedHashMap<>();

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

  /** Adds a tensor already on the rank's backend; owned here until {@link #take} hands it over. */
  public void putTensor(String name, Tensor t) {
    if (blocks.containsKey(name) || tensors.putIfAbsent(name, t) != null) {
      t.close();
      throw new IllegalArgumentException("Tensor '" + name + "' is used by two layers; give each layer its own");
    }
  }

  /** The backend tensor named {@code name}, handed over to the caller, or null when it is a host block. */
  public Tensor take(String name) {
    return tensors == null ? null : tensors.remove(name);
  }

  /** Frees the backend tensors not taken; harmless when called again. */
  @Override
  public void close() {
    if (tensors != null) {
      tensors.values().forEach(Tensor::close);
      tensors.clear();
    }
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

  /** Bytes of all blocks and tensors. */
  public long bytes() {
    long b = 0;
    for (Block x : blocks.values()) {
      b += 4L * x.data().length;
    }
    if (tensors != null) {
      for (Tensor t : tensors.values()) {
        b += t.bytes();
      }
    }
    return b;
  }
}
