package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.nn.LinearKernel;
import org.sparktp.nn.RunContext;
import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * The transformer MLP, Megatron-style: {@code Y = act(X U^T + b_u) D^T + b_d} (BERT, GPT-2), or SwiGLU
 * {@code Y = (silu(X G^T) * (X U^T)) D^T} (Llama, Qwen2). {@code U} and {@code G} are column-parallel
 * (rank {@code r} holds its balanced block of the {@code intermediate} features; gate and up run as one
 * GEMM, their blocks stacked, also when the checkpoint merges them in one tensor), {@code D} is
 * row-parallel on the same block: the output is a {@link Layout#PARTIAL} sum (one all-reduce per MLP
 * block, after it).
 *
 * @param gate the gate part for SwiGLU, else null ({@code act} then applies to {@code up})
 */
public record MlpOp(String name, int hidden, int intermediate, Activation act, Part gate, Part up, Part down)
    implements Op {

  @Override
  public Layout in() {
    return Layout.REPLICATED;
  }

  @Override
  public Layout out() {
    return Layout.PARTIAL;
  }

  Split split(int p) {
    return Split.balanced(intermediate, p, 1, "the intermediate features of '" + name + "' (intermediate_size)");
  }

  private List<Part.Range> ranges(int p, int r) {
    Split s = split(p);
    List<Part.Range> out = new ArrayList<>();
    if (gate != null) {
      out.add(new Part.Range(gate, s.offset(r), s.length(r)));
    }
    out.add(new Part.Range(up, s.offset(r), s.length(r)));
    return out;
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    List<Slice> s = new ArrayList<>();
    s.addAll(Part.columnSlices(ranges(p, rank)));
    s.addAll(down.rowSlices(split(p).offset(rank), split(p).length(rank)));
    return s;
  }

  @Override
  public String describe(int p) {
    return String.format(Locale.ROOT, "mlp %s [%d -> %d -> %d] %s; intermediate per rank %s", name, hidden,
        intermediate, hidden, gate != null ? "swiglu" : act.id(), java.util.Arrays.toString(split(p).lengths()));
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    int n = split(p).length(rank);
    LinearKernel in = Part.columnKernel(ranges(p, rank), w, gate == null ? act : Activation.IDENTITY);
    LinearKernel out = down.rowKernel(split(p).offset(rank), n, w);
    return (x, tokens, ctx) -> {
      Tensor h = null;
      try {
        h = in.apply(x.local(), true, ctx, name + ".up");
        x.close();
        if (gate != null) {
          long t0 = System.nanoTime();
          Tensor g = ctx.backend().empty(h.rows(), n);
          try {
            ctx.backend().swiglu(h, g);
          } catch (RuntimeException e) {
            g.close();
            throw e;
          }
          h.close();
          h = g;
          ctx.addCompute(System.nanoTime() - t0);
        }
        boolean single = ctx.size() == 1;
        Tensor y = out.apply(h, single, ctx, name + ".down");
        return single ? DistTensor.replicated(y) : DistTensor.partial(y, out.bias());
      } catch (RuntimeException e) {
        AttentionOp.closeQuietly(x, e);
        throw e;
      } finally {
        if (h != null) {
          h.close();
        }
      }
    };
  }
}
