package org.sparktp.spark;

import java.util.List;
import java.util.Random;
import org.sparktp.backend.Activation;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.Parallel;

/** Random models for the Spark tests, and the float64 reference forward pass on their inputs. */
final class Reference {
  private Reference() {}

  /** The float64 reference forward pass ({@link org.sparktp.testing.Reference}) of float rows. */
  static double[][] forward(ModelSpec spec, float[][] x) {
    double[][] h = new double[x.length][];
    for (int i = 0; i < x.length; i++) {
      h[i] = new double[x[i].length];
      for (int j = 0; j < h[i].length; j++) {
        h[i][j] = x[i][j];
      }
    }
    return org.sparktp.testing.Reference.forward(spec, h);
  }

  /** The reference of an embedding model: one id per row is a bag of one. */
  static double[][] forwardIds(ModelSpec spec, int[][] bags) {
    return org.sparktp.testing.Reference.forwardBags(spec, bags);
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
