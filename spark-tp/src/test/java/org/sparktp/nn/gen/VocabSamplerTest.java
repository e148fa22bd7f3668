package org.sparktp.nn.gen;

import org.sparktp.nn.DecodeStep;
import org.sparktp.nn.ops.VocabSampler;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.nn.RunContext;
import org.sparktp.shard.Split;
import org.sparktp.testing.Rand;

/**
 * The vocab-parallel sampler against plain math on the whole vocabulary: the empirical distribution of
 * many draws (one seed each) matches {@code softmax(l / T)} restricted to the top-k and the nucleus
 * (computed here by sorting; HF's order: penalty, temperature, top-k, top-p), at tp 1, 2, 3, and each
 * draw is the same at every tp size.
 */
class VocabSamplerTest {
  static final int V = 11;
  static final int DRAWS = 20_000;

  record Case(double t, int k, double topP, double penalty) {}

  /** Plain: the target distribution over the vocabulary. */
  static double[] target(float[] logits, int[] seen, Case c) {
    double[] l = new double[V];
    for (int j = 0; j < V; j++) {
      l[j] = logits[j];
    }
    for (int id : Arrays.stream(seen).distinct().toArray()) {
      l[id] = l[id] < 0 ? l[id] * c.penalty() : l[id] / c.penalty();
    }
    Integer[] order = new Integer[V];
    for (int j = 0; j < V; j++) {
      l[j] /= c.t();
      order[j] = j;
    }
    Arrays.sort(order, (a, b) -> Double.compare(l[b], l[a]));
    boolean[] keep = new boolean[V];
    int k = c.k() == 0 ? V : c.k();
    double z = 0;
    for (int i = 0; i < k; i++) {
      z += Math.exp(l[order[i]]);
    }
    double before = 0;
    for (int i = 0; i < k; i++) {
      keep[order[i]] = before < c.topP();
      before += Math.exp(l[order[i]]) / z;
    }
    double[] p = new double[V];
    double s = 0;
    for (int j = 0; j < V; j++) {
      p[j] = keep[j] ? Math.exp(l[j]) : 0;
      s += p[j];
    }
    for (int j = 0; j < V; j++) {
      p[j] /= s;
    }
    return p;
  }

  static int[] draw(int p, float[] logits, int[] seen, Case c) {
    GenerateParams gp = GenerateParams.greedy(1).withSampling(c.t(), c.k(), c.topP(), 0)
        .withRepetitionPenalty(c.penalty());
    int[] rows = new int[DRAWS];
    long[] seeds = new long[DRAWS];
    int[][] history = new int[DRAWS][];
    for (int i = 0; i < DRAWS; i++) {
      rows[i] = i;
      seeds[i] = 1000L + i;
      history[i] = seen;
    }
    DecodeStep st = new DecodeStep(Map.of(), new int[DRAWS], rows, seeds, new int[DRAWS], history, gp.sampling());
    Split split = Split.balanced(V, p, 1, "vocab");
    List<int[]> got = LocalCommunicator.run(p, 30_000, rank -> comm -> {
      int v0 = split.offset(rank);
      int vn = split.length(rank);
      float[] l = new float[DRAWS * vn];
      for (int i = 0; i < DRAWS; i++) {
        System.arraycopy(logits, v0, l, i * vn, vn);
      }
      try (CpuBackend be = new CpuBackend()) {
        return VocabSampler.sample(l, DRAWS, vn, v0, V, st, new RunContext(be, comm));
      }
    });
    for (int[] g : got) {
      assertThat(g).containsExactly(got.get(0));
    }
    return got.get(0);
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3})
  void drawsFollowTheFilteredSoftmaxAndAreTheSameAtEveryTpSize(int p) {
    Rand rnd = new Rand();
    float[] logits = rnd.floats(V, 1.5f);
    int[] seen = {3, 3, 7};
    List<Case> cases = new ArrayList<>(List.of(new Case(1, 0, 1, 1), new Case(0.7, 4, 1, 1),
        new Case(1.2, 0, 0.8, 1), new Case(0.9, 6, 0.7, 1.8)));
    for (Case c : cases) {
      double[] want = target(logits, seen, c);
      int[] got = draw(p, logits, seen, c);
      int[] again = draw(1, logits, seen, c);
      assertThat(got).as("%s: the same draws at tp %d and tp 1", c, p).containsExactly(again);
      double[] freq = new double[V];
      for (int g : got) {
        freq[g] += 1.0 / DRAWS;
      }
      for (int j = 0; j < V; j++) {
        double sigma = Math.sqrt(want[j] * (1 - want[j]) / DRAWS);
        assertThat(Math.abs(freq[j] - want[j])).as("%s token %d: freq %f, want %f", c, j, freq[j], want[j])
            .isLessThanOrEqualTo(5 * sigma + 1e-12);
      }
    }
  }
}
