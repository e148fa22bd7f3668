package org.sparktp.nn;

import java.util.ArrayList;
import java.util.List;
import org.sparktp.backend.Activation;
import org.sparktp.shard.Split;

/** Builds the steps of a {@link Plan}; see there for the rules. */
final class Planner {
  private final int p;
  private Layout layout;
  private Split split;

  Planner(int p) {
    this.p = p;
  }

  List<Step> plan(List<LayerSpec> layers, Layout start, Split startSplit, boolean top) {
    layout = start;
    split = startSplit;
    List<Step> out = new ArrayList<>();
    for (int i = 0; i < layers.size(); i++) {
      LayerSpec l = layers.get(i);
      LayerSpec next = i + 1 < layers.size() ? layers.get(i + 1) : null;
      if (l instanceof LayerSpec.Linear lin) {
        boolean fused = planLinear(lin, next, out);
        if (fused) {
          i++;
        }
      } else if (l instanceof LayerSpec.Act a) {
        if (layout == Layout.PARTIAL || (!a.activation().isElementwise() && layout != Layout.REPLICATED)) {
          toReplicated(a.width(), out);
        }
        out.add(new Step.Act(a.activation(), a.width(), split, layout, layout));
      } else if (l instanceof LayerSpec.LayerNorm n) {
        toReplicated(n.width(), out);
        out.add(new Step.Norm(n.name(), n.width(), n.eps(), n.gamma() != null, n.beta() != null, layout, layout));
      } else if (l instanceof LayerSpec.Embedding e) {
        Split vs = Split.balanced(e.vocab(), p, 1, e.name() + " vocabulary");
        Layout o = p == 1 ? Layout.REPLICATED : Layout.PARTIAL;
        out.add(new Step.Embed(e.name(), e.vocab(), e.dim(), e.bag(), e.mean(), vs, Layout.REPLICATED, o));
        layout = o;
        split = null;
      } else if (l instanceof LayerSpec.Residual r) {
        toReplicated(r.inWidth(), out);
        Planner inner = new Planner(p);
        List<Step> body = inner.plan(r.body(), Layout.REPLICATED, null, false);
        if (inner.layout != Layout.REPLICATED) {
          body.add(new Step.Convert(inner.layout, Layout.REPLICATED, r.outWidth(), null));
          body = new ArrayList<>(body);
        }
        out.add(new Step.Residual(List.copyOf(body), r.outWidth(), Layout.REPLICATED, Layout.REPLICATED));
        layout = Layout.REPLICATED;
        split = null;
      } else {
        throw new IllegalStateException("unknown layer " + l);
      }
    }
    return out;
  }

  /** Plans a linear; returns true when it fused the following activation. */
  private boolean planLinear(LayerSpec.Linear lin, LayerSpec next, List<Step> out) {
    Step.Mode mode = switch (lin.parallel()) {
      case COLUMN -> Step.Mode.COLUMN;
      case ROW -> Step.Mode.ROW;
      case REPLICATED -> Step.Mode.REPLICATED;
      case AUTO -> auto(lin);
    };
    if (p == 1 && mode != Step.Mode.REPLICATED) {
      // One rank: the split is the whole weight; run it replicated (same math, no layouts to track).
      Split.balanced(mode == Step.Mode.COLUMN ? lin.out() : lin.in(), 1, 1, lin.name());
      mode = Step.Mode.REPLICATED;
    }
    Activation epi = Activation.IDENTITY;
    boolean fuse = next instanceof LayerSpec.Act a && a.activation().isElementwise() && mode != Step.Mode.ROW;
    if (fuse) {
      epi = ((LayerSpec.Act) next).activation();
    }
    switch (mode) {
      case COLUMN -> {
        Split s = Split.balanced(lin.out(), p, 1, "the output features of '" + lin.name() + "'");
        toReplicated(lin.in(), out);
        out.add(new Step.Linear(lin.name(), lin.in(), lin.out(), mode, lin.bias() != null, epi, s, layout,
            Layout.SHARDED));
        layout = Layout.SHARDED;
        split = s;
      }
      case ROW -> {
        Split s = Split.balanced(lin.in(), p, 1, "the input features of '" + lin.name() + "'");
        if (layout != Layout.SHARDED || !s.equals(split)) {
          out.add(new Step.Convert(layout, Layout.SHARDED, lin.in(), s));
          layout = Layout.SHARDED;
          split = s;
        }
        out.add(new Step.Linear(lin.name(), lin.in(), lin.out(), mode, lin.bias() != null, epi, s, Layout.SHARDED,
            Layout.PARTIAL));
        layout = Layout.PARTIAL;
        split = null;
      }
      case REPLICATED -> {
        toReplicated(lin.in(), out);
        out.add(new Step.Linear(lin.name(), lin.in(), lin.out(), mode, lin.bias() != null, epi, null, layout,
            Layout.REPLICATED));
        layout = Layout.REPLICATED;
        split = null;
      }
      default -> throw new IllegalStateException();
    }
    return fuse;
  }

  private Step.Mode auto(LayerSpec.Linear lin) {
    if (p == 1) {
      return Step.Mode.REPLICATED;
    }
    if (layout == Layout.SHARDED && lin.in() >= p && Split.balanced(lin.in(), p).equals(split)) {
      return Step.Mode.ROW;
    }
    if (lin.out() >= p) {
      return Step.Mode.COLUMN;
    }
    if (layout == Layout.SHARDED && lin.in() >= p) {
      return Step.Mode.ROW;
    }
    return Step.Mode.REPLICATED;
  }

  private void toReplicated(int width, List<Step> out) {
    if (layout != Layout.REPLICATED) {
      out.add(new Step.Convert(layout, Layout.REPLICATED, width, null));
      layout = Layout.REPLICATED;
      split = null;
    }
  }
}
