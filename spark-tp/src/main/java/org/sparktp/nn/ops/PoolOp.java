package org.sparktp.nn.ops;

import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.backend.Tensor;

/**
 * The {@code embed} task: row {@code s}'s output is the mean of its tokens' last hidden states
 * ({@code mean}), its first token's ({@code cls}) or its last token's ({@code last}); with
 * {@code normalize}, divided by its L2 norm (sentence-transformers' {@code Normalize}). Replicated, no
 * weights: {@code [tokens, hidden] -> [rows, hidden]}.
 */
public record PoolOp(int hidden, Pooling pooling, boolean normalize) implements Op {

  @Override
  public String name() {
    return "pool";
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
  public List<Slice> slices(int p, int rank) {
    return List.of();
  }

  @Override
  public String describe(int p) {
    return "embed: " + pooling.id() + " pooling" + (normalize ? ", L2-normalized" : "") + " -> [rows, " + hidden
        + "]";
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    return (x, tokens, ctx) -> {
      Backend be = ctx.backend();
      long t0 = System.nanoTime();
      int rows = tokens.rows();
      int[] off = tokens.offsets();
      try {
        float[] out = new float[rows * hidden];
        if (pooling == Pooling.MEAN) {
          float[] h = be.download(x.local());
          for (int s = 0; s < rows; s++) {
            double[] acc = new double[hidden];
            for (int t = off[s]; t < off[s + 1]; t++) {
              for (int c = 0; c < hidden; c++) {
                acc[c] += h[t * hidden + c];
              }
            }
            int n = off[s + 1] - off[s];
            for (int c = 0; c < hidden; c++) {
              out[s * hidden + c] = (float) (acc[c] / n);
            }
          }
        } else {
          int[] pick = new int[rows];
          for (int s = 0; s < rows; s++) {
            pick[s] = pooling == Pooling.CLS ? off[s] : off[s + 1] - 1;
          }
          try (Tensor sel = be.empty(rows, hidden)) {
            be.selectRows(x.local(), pick, sel);
            be.download(sel, out, 0);
          }
        }
        if (normalize) {
          for (int s = 0; s < rows; s++) {
            double ss = 0;
            for (int c = 0; c < hidden; c++) {
              ss += (double) out[s * hidden + c] * out[s * hidden + c];
            }
            double inv = 1.0 / Math.max(Math.sqrt(ss), 1e-12);
            for (int c = 0; c < hidden; c++) {
              out[s * hidden + c] = (float) (out[s * hidden + c] * inv);
            }
          }
        }
        Tensor y = be.upload(out, rows, hidden);
        ctx.addCompute(System.nanoTime() - t0);
        return DistTensor.replicated(y);
      } finally {
        x.close();
      }
    };
  }
}
