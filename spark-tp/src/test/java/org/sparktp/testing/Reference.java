package org.sparktp.testing;

import java.util.List;
import org.sparktp.backend.Activation;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;

/**
 * A single-device float64 forward pass written plainly, independent of the engine: the reference every
 * engine test compares against. Rows are {@code double[]}.
 */
public final class Reference {
  private Reference() {}

  /** Forward pass of dense rows. */
  public static double[][] forward(ModelSpec spec, double[][] x) {
    return run(spec.layers(), x);
  }

  /** Forward pass of one id per row. */
  public static double[][] forwardIds(ModelSpec spec, int[] ids) {
    LayerSpec.Embedding e = (LayerSpec.Embedding) spec.layers().get(0);
    double[][] h = new double[ids.length][e.dim()];
    for (int r = 0; r < ids.length; r++) {
      for (int c = 0; c < e.dim(); c++) {
        h[r][c] = e.table()[ids[r] * e.dim() + c];
      }
    }
    return run(spec.layers().subList(1, spec.layers().size()), h);
  }

  /** Forward pass of a bag of ids per row. */
  public static double[][] forwardBags(ModelSpec spec, int[][] bags) {
    LayerSpec.Embedding e = (LayerSpec.Embedding) spec.layers().get(0);
    double[][] h = new double[bags.length][e.dim()];
    for (int r = 0; r < bags.length; r++) {
      for (int id : bags[r]) {
        for (int c = 0; c < e.dim(); c++) {
          h[r][c] += e.table()[id * e.dim() + c];
        }
      }
      if (e.mean() && bags[r].length > 0) {
        for (int c = 0; c < e.dim(); c++) {
          h[r][c] /= bags[r].length;
        }
      }
    }
    return run(spec.layers().subList(1, spec.layers().size()), h);
  }

  static double[][] run(List<LayerSpec> layers, double[][] x) {
    double[][] h = x;
    for (LayerSpec l : layers) {
      h = layer(l, h);
    }
    return h;
  }

  static double[][] layer(LayerSpec l, double[][] x) {
    if (l instanceof LayerSpec.Linear lin) {
      double[][] y = new double[x.length][lin.out()];
      for (int r = 0; r < x.length; r++) {
        for (int o = 0; o < lin.out(); o++) {
          double s = lin.bias() == null ? 0 : lin.bias()[o];
          for (int i = 0; i < lin.in(); i++) {
            s += x[r][i] * lin.weight()[o * lin.in() + i];
          }
          y[r][o] = s;
        }
      }
      return y;
    }
    if (l instanceof LayerSpec.Act a) {
      return act(a.activation(), x);
    }
    if (l instanceof LayerSpec.LayerNorm n) {
      double[][] y = new double[x.length][];
      for (int r = 0; r < x.length; r++) {
        double mean = 0;
        for (double v : x[r]) {
          mean += v;
        }
        mean /= x[r].length;
        double var = 0;
        for (double v : x[r]) {
          var += (v - mean) * (v - mean);
        }
        var /= x[r].length;
        y[r] = new double[x[r].length];
        for (int c = 0; c < x[r].length; c++) {
          double v = (x[r][c] - mean) / Math.sqrt(var + n.eps());
          y[r][c] = v * (n.gamma() == null ? 1 : n.gamma()[c]) + (n.beta() == null ? 0 : n.beta()[c]);
        }
      }
      return y;
    }
    if (l instanceof LayerSpec.Residual res) {
      double[][] f = run(res.body(), x);
      double[][] y = new double[x.length][];
      for (int r = 0; r < x.length; r++) {
        y[r] = new double[x[r].length];
        for (int c = 0; c < x[r].length; c++) {
          y[r][c] = x[r][c] + f[r][c];
        }
      }
      return y;
    }
    throw new IllegalArgumentException("no reference for " + l);
  }

  /** The activation applied to every row. */
  public static double[][] act(Activation a, double[][] x) {
    double[][] y = new double[x.length][];
    for (int r = 0; r < x.length; r++) {
      y[r] = new double[x[r].length];
      if (a == Activation.SOFTMAX) {
        double max = Double.NEGATIVE_INFINITY;
        for (double v : x[r]) {
          max = Math.max(max, v);
        }
        double sum = 0;
        for (double v : x[r]) {
          sum += Math.exp(v - max);
        }
        for (int c = 0; c < x[r].length; c++) {
          y[r][c] = Math.exp(x[r][c] - max) / sum;
        }
        continue;
      }
      for (int c = 0; c < x[r].length; c++) {
        y[r][c] = act(a, x[r][c]);
      }
    }
    return y;
  }

  /** One elementwise activation, by its textbook definition. */
  public static double act(Activation a, double v) {
    return switch (a) {
      case GELU -> v * 0.5 * erfc(-v / Math.sqrt(2)); // = v * 0.5 * (1 + erf(v / sqrt 2))
      case GELU_TANH -> 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
      case RELU -> Math.max(0, v);
      case SILU -> v / (1 + Math.exp(-v));
      case TANH -> Math.tanh(v);
      case SIGMOID -> 1 / (1 + Math.exp(-v));
      case IDENTITY -> v;
      case SOFTMAX -> throw new IllegalArgumentException("softmax is row-wise");
    };
  }

  /** erfc in double: the continued fraction for x >= 3 (no cancellation in the tail), else 1 - erf(x). */
  public static double erfc(double x) {
    if (x >= 3) {
      double f = x;
      for (int k = 60; k >= 1; k--) {
        f = x + (k / 2.0) / f;
      }
      return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
    }
    return 1 - erf(x);
  }

  /**
   * erf in double: the Maclaurin series for |x| < 3 (converges; about 1e-13 accurate there), and
   * {@code 1 - erfc(x)} with erfc from its continued fraction beyond.
   */
  public static double erf(double x) {
    double ax = Math.abs(x);
    double r;
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
      r = 2 / Math.sqrt(Math.PI) * sum;
    } else {
      // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...)))))
      double f = ax;
      for (int k = 60; k >= 1; k--) {
        f = ax + (k / 2.0) / f;
      }
      r = 1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
    }
    return x < 0 ? -r : r;
  }

  /**
   * Layer norm of each row of {@code x [rows, cols]} (population variance), times {@code gamma} and plus {@code beta}
   * where not null.
   */
  public static double[] layerNorm(float[] x, int rows, int cols, float[] gamma, float[] beta, double eps) {
    double[] out = new double[rows * cols];
    for (int r = 0; r < rows; r++) {
      double mean = 0;
      for (int c = 0; c < cols; c++) {
        mean += x[r * cols + c];
      }
      mean /= cols;
      double var = 0;
      for (int c = 0; c < cols; c++) {
        var += (x[r * cols + c] - mean) * (x[r * cols + c] - mean);
      }
      var /= cols;
      for (int c = 0; c < cols; c++) {
        out[r * cols + c] = (x[r * cols + c] - mean) / Math.sqrt(var + eps) * (gamma == null ? 1 : gamma[c])
            + (beta == null ? 0 : beta[c]);
      }
    }
    return out;
  }

  /** RMSNorm of each row of {@code x [rows, cols]}, times {@code gamma}. */
  public static double[] rmsNorm(float[] x, int rows, int cols, float[] gamma, double eps) {
    double[] out = new double[rows * cols];
    for (int r = 0; r < rows; r++) {
      double sq = 0;
      for (int c = 0; c < cols; c++) {
        sq += (double) x[r * cols + c] * x[r * cols + c];
      }
      for (int c = 0; c < cols; c++) {
        out[r * cols + c] = x[r * cols + c] / Math.sqrt(sq / cols + eps) * gamma[c];
      }
    }
    return out;
  }
}
