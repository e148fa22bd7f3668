package org.sparktp.nn;

import java.io.Serializable;
import java.util.List;
import org.sparktp.backend.Activation;
import org.sparktp.shard.Split;

/**
 * One op of a {@link Plan}: the layer it runs, how its weights are split, the layout it takes and the
 * layout it produces. Steps hold no weights, so a plan is small and can be shipped to every rank.
 */
public sealed interface Step extends Serializable {

  Layout in();

  Layout out();

  /** Output width (global). */
  int width();

  /** How a linear layer is split on this plan. */
  enum Mode { COLUMN, ROW, REPLICATED }

  /**
   * A linear layer {@code [in -> out]}; {@code split} splits {@code out} (column) or {@code in} (row),
   * null when replicated; {@code epilogue} is an elementwise activation fused into it.
   */
  record Linear(String name, int inFeatures, int outFeatures, Mode mode, boolean hasBias, Activation epilogue,
      Split split, Layout in, Layout out) implements Step {
    @Override
    public int width() {
      return outFeatures;
    }
  }

  /** An activation; keeps the layout (elementwise) or needs a replicated input (softmax). */
  record Act(Activation activation, int width, Split split, Layout in, Layout out) implements Step {}

  /** Layer normalisation, replicated. */
  record Norm(String name, int width, float eps, boolean hasGamma, boolean hasBeta, Layout in, Layout out)
      implements Step {}

  /** Vocabulary-parallel embedding (first op only). */
  record Embed(String name, int vocab, int dim, boolean bag, boolean mean, Split vocabSplit, Layout in, Layout out)
      implements Step {
    @Override
    public int width() {
      return dim;
    }
  }

  /** {@code x + f(x)} with {@code f} planned as {@code body}. */
  record Residual(List<Step> body, int width, Layout in, Layout out) implements Step {}

  /** The collective that changes the layout: all-reduce, all-gather, or a local slice. */
  record Convert(Layout in, Layout out, int width, Split split) implements Step {
    /** The name of the collective(s) this conversion runs. */
    public String collective() {
      if (out == Layout.SHARDED) {
        return switch (in) {
          case REPLICATED -> "slice (no communication)";
          case PARTIAL -> "all-reduce + slice";
          case SHARDED -> "all-gather + slice";
        };
      }
      return in == Layout.PARTIAL ? "all-reduce" : "all-gather";
    }

    /** Bytes one rank sends per activation row with ring algorithms over {@code p} ranks. */
    public double bytesPerRow(int p) {
      if (p == 1) {
        return 0;
      }
      double frac = (p - 1) / (double) p;
      double w = 4.0 * width;
      if (out == Layout.SHARDED) {
        return switch (in) {
          case REPLICATED -> 0;
          case PARTIAL -> 2 * frac * w;
          case SHARDED -> frac * w;
        };
      }
      return in == Layout.PARTIAL ? 2 * frac * w : frac * w;
    }
  }
}
