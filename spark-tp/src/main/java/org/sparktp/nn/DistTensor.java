package org.sparktp.nn;

import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * One rank's part of an activation {@code [rows, width]} and how it is laid out across the group:
 * the whole tensor ({@link Layout#REPLICATED}), the columns {@code split.offset(rank) ..} of it
 * ({@link Layout#SHARDED}), or a summand of it ({@link Layout#PARTIAL}), in which case
 * {@code pendingBias} (may be null) is still to be added once, after the reduction.
 *
 * <p>A dist tensor owns its local tensor; {@code pendingBias} belongs to the layer that made it.
 */
public final class DistTensor implements AutoCloseable {
  private final Tensor local;
  private final Layout layout;
  private final int width;
  private final Split split;
  private final Tensor pendingBias;

  private DistTensor(Tensor local, Layout layout, int width, Split split, Tensor pendingBias) {
    this.local = local;
    this.layout = layout;
    this.width = width;
    this.split = split;
    this.pendingBias = pendingBias;
  }

  public static DistTensor replicated(Tensor t) {
    return new DistTensor(t, Layout.REPLICATED, t.cols(), null, null);
  }

  public static DistTensor sharded(Tensor t, Split split) {
    return new DistTensor(t, Layout.SHARDED, split.size(), split, null);
  }

  public static DistTensor partial(Tensor t, Tensor pendingBias) {
    return new DistTensor(t, Layout.PARTIAL, t.cols(), null, pendingBias);
  }

  /** This rank's tensor: {@code [rows, width]}, or {@code [rows, split.length(rank)]} when sharded. */
  public Tensor local() {
    return local;
  }

  public Layout layout() {
    return layout;
  }

  /** The global width of the activation. */
  public int width() {
    return width;
  }

  public int rows() {
    return local.rows();
  }

  /** The column split of a sharded activation, else null. */
  public Split split() {
    return split;
  }

  /** A bias still to be added after the reduction of a partial activation, else null. */
  public Tensor pendingBias() {
    return pendingBias;
  }

  /**
   * The same activation (layout, width, split, pending bias) over another local tensor of the same shape,
   * e.g. this one converted to another dtype; this dist tensor's local tensor is not closed.
   */
  public DistTensor withLocal(Tensor t) {
    if (t.rows() != local.rows() || t.cols() != local.cols()) {
      throw new IllegalArgumentException("withLocal: " + t.shape() + " does not match " + local.shape());
    }
    return new DistTensor(t, layout, width, split, pendingBias);
  }

  @Override
  public void close() {
    local.close();
  }
}
