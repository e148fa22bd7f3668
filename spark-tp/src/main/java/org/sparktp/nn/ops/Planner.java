package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.List;
import org.sparktp.nn.Layout;
import org.sparktp.shard.Split;

/**
 * The planner pass of every model: walks the ops from a replicated input, lets each {@link Op#place place} itself
 * (a linear picks column, row or replicated; an activation keeps the layout it gets; a residual plans its body), and
 * inserts a {@link LayoutChangeOp} wherever the layout an op takes differs from the one the activation is in. The
 * rules, in the ops: {@code auto} linears alternate column and row (a column-parallel linear leaves its output
 * sharded by columns, an elementwise activation keeps it sharded, the next linear runs row-parallel on those shards,
 * so each pair costs one reduction); layer norm, softmax and residual additions need whole rows; a linear whose
 * split dimension is smaller than {@code p} runs replicated under {@code auto}, and forcing {@code column} or
 * {@code row} on it is an error; an elementwise activation after a column or replicated linear is fused into it.
 */
public final class Planner {
  private final int p;
  private final List<Op> out = new ArrayList<>();
  private Layout layout;
  private Split split;
  private int width;
  private List<Op> ops;
  private int next;

  private Planner(int p, int width) {
    this.p = p;
    this.layout = Layout.REPLICATED;
    this.width = width;
  }

  /** What a plan of ops leaves: the ops placed, and the layout, split and width of their output. */
  public record Result(List<Op> ops, Layout layout, Split split, int width) {}

  /** Plans {@code ops} for {@code p} ranks, from a replicated input {@code width} wide. */
  public static Result plan(List<Op> ops, int p, int width) {
    if (p <= 0) {
      throw new IllegalArgumentException("Tensor-parallel size must be positive, got " + p);
    }
    Planner pl = new Planner(p, width);
    pl.run(ops);
    return new Result(List.copyOf(pl.out), pl.layout, pl.split, pl.width);
  }

  private void run(List<Op> list) {
    this.ops = list;
    for (next = 0; next < list.size(); ) {
      list.get(next++).place(this);
    }
  }

  /** The group size. */
  public int p() {
    return p;
  }

  /** The layout of the activation so far. */
  public Layout layout() {
    return layout;
  }

  /** Its column split when sharded, else null. */
  public Split split() {
    return split;
  }

  /** Its width. */
  public int width() {
    return width;
  }

  /** The op after the one being placed, or null. */
  public Op peek() {
    return next < ops.size() ? ops.get(next) : null;
  }

  /** Skips the next op (fused into the one being placed). */
  public void skip() {
    next++;
  }

  /** Brings the activation to {@code want}: a replicated one, or (as it is) the layout it already has. */
  public void require(Layout want) {
    if (want == Layout.REPLICATED) {
      toReplicated();
    } else if (want != layout) {
      throw new IllegalStateException("An op needs a " + want + " input here, the activation is " + layout);
    }
  }

  /** Inserts the collective to a replicated activation, unless it is one. */
  public void toReplicated() {
    if (layout != Layout.REPLICATED) {
      out.add(new LayoutChangeOp(layout, Layout.REPLICATED, width, null));
      layout = Layout.REPLICATED;
      split = null;
    }
  }

  /** Inserts the change to an activation sharded by {@code s}, unless it is one. */
  public void toSharded(Split s) {
    if (layout != Layout.SHARDED || !s.equals(split)) {
      out.add(new LayoutChangeOp(layout, Layout.SHARDED, width, s));
      layout = Layout.SHARDED;
      split = s;
    }
  }

  /** Appends a placed op; the activation becomes its output ({@code split} when sharded), {@code width} wide. */
  public void add(Op placed, Split outSplit, int outWidth) {
    out.add(placed);
    layout = placed.out();
    split = layout == Layout.SHARDED ? outSplit : null;
    width = outWidth;
  }

  /**
   * Plans a nested list of ops (a residual body) from the current replicated activation, brought back to
   * replicated at its end when {@code replicatedEnd}; returns the placed ops.
   */
  public List<Op> body(List<Op> body, boolean replicatedEnd) {
    Planner inner = new Planner(p, width);
    inner.run(body);
    if (replicatedEnd) {
      inner.toReplicated();
    }
    return List.copyOf(inner.out);
  }
}
