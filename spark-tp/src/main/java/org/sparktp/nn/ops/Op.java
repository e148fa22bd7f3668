package org.sparktp.nn.ops;

import java.io.Serializable;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.Layout;

/**
 * One op kind of a transformer, in one place: its tensors and how each is split for rank {@code r}
 * ({@link #slices}: the byte ranges rank {@code r} reads), the layout it needs and the one it produces,
 * its line in a plan ({@link #describe}), and its rank-local kernel ({@link #build}). The planner,
 * {@code explain}, weight accounting and the loaders iterate over ops; a new kind is one new file.
 *
 * <p>Ops hold no weights: a plan of ops is small and ships to every rank.
 */
public interface Op extends Serializable {

  /** The op's name in the model ({@code layers.3.attention}). */
  String name();

  /** The layout it takes. */
  Layout in();

  /** The layout it produces. */
  Layout out();

  /** Collectives the op runs itself per forward pass on a group of {@code p > 1} ranks. */
  default int collectives(int p) {
    return 0;
  }

  /** The blocks of checkpoint tensors rank {@code rank} of {@code p} reads for this op. */
  List<Slice> slices(int p, int rank);

  /** The op's line in {@code explain} for a group of {@code p} ranks (with what each rank holds). */
  String describe(int p);

  /**
   * Floats of key/value cache rank {@code rank} of {@code p} keeps per token for this op (0: the op keeps no cache;
   * attention keeps its keys and values).
   */
  default int kvFloatsPerToken(int p, int rank) {
    return 0;
  }

  /** Ops nested in this one (a residual block's body), for explain and accounting. */
  default List<Op> children() {
    return List.of();
  }

  /** Builds rank {@code rank}'s kernel; its weights come from {@code weights} (uploaded once, shared). */
  OpKernel build(int p, int rank, Weights weights, Backend backend);

  /**
   * Places this op after what {@code planner} has placed so far: the planner pass of every model. The default takes
   * {@link #in()} (the planner inserts a {@link LayoutChangeOp} where the activation is in another layout) and gives
   * {@link #out()}; an op whose layouts depend on its neighbours or on {@code p} (a linear, an activation, a
   * residual block, a vocab-parallel lookup) places a planned copy of itself.
   */
  default void place(Planner planner) {
    planner.require(in());
    planner.add(this, null, planner.width());
  }

  /** The elementwise activation a linear before this op may fuse into its epilogue (this op then goes), else null. */
  default org.sparktp.backend.Activation fusible() {
    return null;
  }

  /**
   * True when the op takes its input as it is stored between ops ({@link org.sparktp.nn.RunContext#activationDtype},
   * e.g. bf16) instead of widened to f32: layout changes that only move or slice elements, exact in any dtype.
   */
  default boolean takesStored() {
    return false;
  }

  /** The collective the op runs, for the plan table; {@code -} for none. */
  default String collective(int p) {
    return "-";
  }

  /** Bytes one rank sends per activation row for the op's own collective (ring algorithms, f32), for the table. */
  default double bytesPerRow(int p) {
    return 0;
  }

  /** The op's cell in the plan table ({@link #describe} unless shorter there). */
  default String label(int p) {
    return describe(p);
  }

  /** When the op holds its weight whole on {@code p} ranks although it was not asked to: what it is, else null. */
  default String unsplit(int p) {
    return null;
  }

  /** The smallest dimension of the op's weights that a split could cut (0: it has none), for explain's warning. */
  default int splitDim() {
    return 0;
  }
}
