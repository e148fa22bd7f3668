package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.backend.Tensor;

/**
 * Per-token normalisation, replicated: layer norm {@code y = (x - mean) / sqrt(var + eps) * gamma + beta}
 * (BERT, GPT-2) or RMSNorm {@code y = x / sqrt(mean(x^2) + eps) * gamma} (Llama, Qwen2).
 *
 * @param weight the gamma tensor, or null (a layer norm without {@code elementwise_affine})
 * @param bias the beta tensor, or null (RMSNorm has none)
 */
public record NormOp(String name, boolean rms, int width, String weight, String bias, float eps) implements Op {

  @Override
  public Layout in() {
    return Layout.REPLICATED;
  }

  @Override
  public Layout out() {
    return Layout.REPLICATED;
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    List<Slice> s = new ArrayList<>();
    if (weight != null) {
      s.add(Slice.elements(weight, 0, width, width));
    }
    if (bias != null) {
      s.add(Slice.elements(bias, 0, width, width));
    }
    return s;
  }

  @Override
  public String describe(int p) {
    return (rms ? "rms_norm " : "layer_norm ") + name + " [" + width + "] eps " + eps;
  }

  @Override
  public String label(int p) {
    return (rms ? "rms_norm " : "layer_norm ") + name + " [" + width + "]";
  }

  @Override
  public void place(Planner pl) {
    pl.require(Layout.REPLICATED);
    pl.add(this, null, width);
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    List<Slice> s = slices(p, rank);
    int i = 0;
    Tensor g = weight == null ? null : w.tensor(s.get(i++));
    Tensor b = bias == null ? null : w.tensor(s.get(i));
    return (x, tokens, ctx) -> {
      try {
        long t0 = System.nanoTime();
        if (rms) {
          ctx.backend().rmsNorm(x.local(), g, eps);
        } else {
          ctx.backend().layerNorm(x.local(), g, b, eps);
        }
        ctx.addCompute(System.nanoTime() - t0);
        return x;
      } catch (RuntimeException e) {
        AttentionOp.closeQuietly(x, e);
        throw e;
      }
    };
  }
}
