package org.sparktp.spark;

import java.util.List;
import java.util.Random;
import org.sparktp.backend.Activation;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.Parallel;

/** A plain float64 forward pass of a {@link ModelSpec}, and random models for the tests. */
final class Reference {
  private Reference() {}

  static double[][] forward(ModelSpec spec, float[][] x) {
    double[][] out = new double[x.length][];
    for (int i = 0; i < x.length; i++) {
      double[] h = new double[x[i].length];
      for (int j = 0; j < h.length; j++) {
        h[j] = x[i][j];
      }
      out[i] = forward(spec.layers(), h);
    }
    return out;
  }

  static double[][] forwardIds(ModelSpec spec, int[][] bags) {
    LayerSpec.Embedding e = (LayerSpec.Embedding) spec.layers().get(0);
    double[][] out = new double[bags.length][];
    for (int i = 0; i < bags.length; i++) {
      double[] h = new double[e.dim()];
      for (int id : bags[i]) {
        for (int c = 0; c < e.dim(); c++) {
          h[c] += e.table()[id * e.dim() + c];
        }
      }
      if (e.mean() && bags[i].length > 0) {
        for (int c = 0; c < e.dim(); c++) {
          h[c] /= bags[i].length;
        }
      }
      out[i] = forward(spec.layers().subList(1, spec.layers().size()), h);
    }
    return out;
  }

  static double[] forward(List<LayerSpec> layers, double[] x) {
    double[] h = x;
    for (LayerSpec l : layers) {
      h = layer(l, h);
    }
    return h;
  }

  private static double[] layer(LayerSpec l, double[] x) {
    if (l instanceof LayerSpec.Linear lin) {
      double[] y = new double[lin.out()];
      for (int o = 0; o < lin.out(); o++) {
        double s = lin.bias() == null ? 0 : lin.bias()[o];
        for (int k = 0; k < lin.in(); k++) {
          s += (double) lin.weight()[o * lin.in() + k] * x[k];
        }
        y[o] = s;
      }
      return y;
    }
    if (l instanceof LayerSpec.Act a) {
      double[] y = new double[x.length];
      if (a.activation() == Activation.SOFTMAX) {
        double m = Double.NEGATIVE_INFINITY;
        for (double v : x) {
          m = Math.max(m, v);
        }
        double s = 0;
        for (int i = 0; i < x.length; i++) {
          y[i] = Math.exp(x[i] - m);
          s += y[i];
        }
        for (int i = 0; i < x.length; i++) {
          y[i] /= s;
        }
        return y;
      }
      for (int i = 0; i < x.length; i++) {
        y[i] = act(a.activation(), x[i]);
      }
      return y;
    }
    if (l instanceof LayerSpec.LayerNorm n) {
      double mean = 0;
      for (double v : x) {
        mean += v;
      }
      mean /= x.length;
      double var = 0;
      for (double v : x) {
        var += (v - mean) * (v - mean);
      }
      var /= x.length;
      double inv = 1 / Math.sqrt(var + n.eps());
      double[] y = new double[x.length];
      for (int i = 0; i < x.length; i++) {
        y[i] = (x[i] - mean) * inv * (n.gamma() == null ? 1 : n.gamma()[i]) + (n.beta() == null ? 0 : n.beta()[i]);
      }
      return y;
    }
    if (l instanceof LayerSpec.Residual r) {
      double[] f = forward(r.body(), x);
      double[] y = new double[x.length];
      for (int i = 0; i < x.length; i++) {
        y[i] = x[i] + f[i];
      }
      return y;
    }
    throw new IllegalArgumentException("no reference for " + l.describe());
  }

  static double act(Activation a, double x) {
    return switch (a) {
      case GELU -> 0.5 * x * (1 + erf(x / Math.sqrt(2)));
      case GELU_TANH -> 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x)));
      case RELU -> Math.max(0, x);
      case SILU -> x / (1 + Math.exp(-x));
      case TANH -> Math.tanh(x);
      case SIGMOID -> 1 / (1 + Math.exp(-x));
      case IDENTITY -> x;
      case SOFTMAX -> throw new IllegalArgumentException("softmax is not elementwise");
    };
  }

  /** erf: its Maclaurin series for |x| < 3, else 1 - erfc by a continued fraction. */
  static double erf(double x) {
    double ax = Math.abs(x);
    if (ax < 3) {
      double term = ax;
      double sum = ax;
      for (int n = 1; n < 200; n++) {
        term *= -ax * ax / n;
        double add = term / (2 * n + 1);
        sum += add;
        if (Math.abs(add) < 1e-17 * Math.abs(sum)) {
          break;
        }
      }
      double r = 2 / Math.sqrt(Math.PI) * sum;
      return x < 0 ? -r : r;
    }
    // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
    double f = ax;
    for (int k = 60; k >= 1; k--) {
      f = ax + (k / 2.0) / f;
    }
    double erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
    return x < 0 ? erfc - 1 : 1 - erfc;
  }

  static float[] randoms(Random rng, int n, double scale) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      float v;
      do {
        v = (float) ((rng.nextDouble() * 2 - 1) * scale);
      } while (v == 0f);
      a[i] = v;
    }
    return a;
  }

  static LayerSpec.Linear linear(Random rng, String name, int in, int out, Parallel mode) {
    double s = 1 / Math.sqrt(in);
    return new LayerSpec.Linear(name, in, out, randoms(rng, out * in, s), randoms(rng, out, s), mode);
  }

  /** in -> hidden (gelu) -> out. */
  static ModelSpec mlp(Random rng, int in, int hidden, int out) {
    return new ModelSpec(in, List.of(linear(rng, "fc1", in, hidden, Parallel.AUTO),
        new LayerSpec.Act(Activation.GELU, hidden), linear(rng, "fc2", hidden, out, Parallel.AUTO)));
  }

  /** layer norm, a residual MLP block, then a projection: exercises every collective. */
  static ModelSpec block(Random rng, int in, int hidden, int out) {
    LayerSpec.LayerNorm ln = new LayerSpec.LayerNorm("ln", in, randoms(rng, in, 1), randoms(rng, in, 0.5), 1e-5f);
    LayerSpec.Residual res = new LayerSpec.Residual(List.of(linear(rng, "up", in, hidden, Parallel.AUTO),
        new LayerSpec.Act(Activation.GELU, hidden), linear(rng, "down", hidden, in, Parallel.AUTO)));
    return new ModelSpec(in, List.of(ln, res, linear(rng, "head", in, out, Parallel.AUTO)));
  }

  static ModelSpec embeddingBag(Random rng, int vocab, int dim, int out, boolean mean) {
    return new ModelSpec(vocab, List.of(
        new LayerSpec.Embedding("emb", vocab, dim, randoms(rng, vocab * dim, 1), true, mean),
        linear(rng, "proj", dim, out, Parallel.AUTO)));
  }

  static ModelSpec embedding(Random rng, int vocab, int dim, int out) {
    return new ModelSpec(vocab, List.of(
        new LayerSpec.Embedding("emb", vocab, dim, randoms(rng, vocab * dim, 1), false, false),
        linear(rng, "proj", dim, out, Parallel.AUTO)));
  }
}
