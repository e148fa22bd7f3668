package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.nn.Mappings;
import org.sparktp.backend.Tensor;

/**
 * {@code y = x + f(x)}, {@code f} the ops of {@code body} (their layouts planned inside), on a replicated
 * {@code x}. Two kinds of body: a transformer block ({@code opsBody} false: a norm and one attention or MLP op)
 * whose {@link Layout#PARTIAL} end is all-reduced here, before the addition (the block's one collective); or a
 * list of ops ({@code opsBody} true, a spark-tp layer list's {@code residual}) planned like a model of its own: its
 * activations are stored at every op boundary and the planner brings its end back to replicated with a
 * {@link LayoutChangeOp}. When the body or its collective fails, everything the block made is closed and the first
 * cause propagates.
 */
public record ResidualOp(String name, List<Op> body, boolean opsBody) implements Op {

  public ResidualOp {
    body = List.copyOf(body);
  }

  /** A transformer block's residual. */
  public ResidualOp(String name, List<Op> body) {
    this(name, body, false);
  }

  @Override
  public void place(Planner pl) {
    pl.require(Layout.REPLICATED);
    pl.add(new ResidualOp(name, pl.body(body, opsBody), opsBody), null, pl.width());
  }

  @Override
  public String label(int p) {
    return "residual {";
  }

  @Override
  public Layout in() {
    return Layout.REPLICATED;
  }

  @Override
  public Layout out() {
    return Layout.REPLICATED;
  }

  @Override
  public int collectives(int p) {
    int n = body.get(body.size() - 1).out() != Layout.REPLICATED && p > 1 ? 1 : 0;
    for (Op o : body) {
      n += o.collectives(p);
    }
    return n;
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    List<Slice> s = new ArrayList<>();
    for (Op o : body) {
      s.addAll(o.slices(p, rank));
    }
    return s;
  }

  @Override
  public List<Op> children() {
    return body;
  }

  @Override
  public String describe(int p) {
    return "residual " + name + " { x + f(x) }" + (collectives(p) > 0 ? ", all-reduce before the addition" : "");
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    List<OpKernel> ks = new ArrayList<>();
    for (Op o : body) {
      ks.add(o.build(p, rank, w, backend));
    }
    return (x, tokens, ctx) -> {
      Tensor skip;
      try {
        skip = ctx.backend().empty(x.rows(), x.width());
        ctx.backend().copyBlock(x.local(), 0, 0, skip, 0, 0, x.rows(), x.width());
      } catch (RuntimeException e) {
        AttentionOp.closeQuietly(x, e);
        throw e;
      }
      try {
        DistTensor h = x;
        if (opsBody) {
          h = ctx.widen(reduce(OpKernel.runAll(body, ks, h, tokens, ctx, true), ctx));
        } else {
          for (OpKernel k : ks) {
            h = k.forward(h, tokens, ctx);
          }
          h = reduce(h, ctx);
        }
        long t0 = System.nanoTime();
        ctx.backend().add(h.local(), skip);
        ctx.addCompute(System.nanoTime() - t0);
        return h;
      } finally {
        skip.close();
      }
    };
  }

  /** To replicated; closes its input when the collective fails. */
  static DistTensor reduce(DistTensor h, org.sparktp.nn.RunContext ctx) {
    try {
      return Mappings.toReplicated(h, ctx);
    } catch (RuntimeException e) {
      AttentionOp.closeQuietly(h, e);
      throw e;
    }
  }
}
