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

  /** Ops nested in this one (a residual block's body), for explain and accounting. */
  default List<Op> children() {
    return List.of();
  }

  /** Builds rank {@code rank}'s kernel; its weights come from {@code weights} (uploaded once, shared). */
  OpKernel build(int p, int rank, Weights weights, Backend backend);
}
