package org.sparktp.nn.ops;

import java.util.Arrays;
import org.sparktp.backend.Backend;
import org.sparktp.comm.Communicator;
import org.sparktp.nn.DecodeStep;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.LinearKernel;
import org.sparktp.nn.RunContext;
import org.sparktp.backend.Tensor;

/**
 * Draws the next token of each row from the vocab-parallel LM head without gathering logits: rank
 * {@code r} holds the logits of its vocabulary slice {@code [v0, v0 + vn)} and only small collectives
 * cross the group.
 *
 * <ul>
 *   <li>greedy: the local (max, first id) per row, one all-gather of 2 floats per row per rank, the
 *       largest value wins (ties: the smallest id, as {@code argmax});
 *   <li>sampling, by the Gumbel-max trick: {@code argmax_t (l_t / T + g_t)} with {@code g_t} a Gumbel
 *       variable drawn from a counter-based RNG keyed by (row seed, step, token id), is a draw from
 *       {@code softmax(l / T)}; it is the same reduction as greedy, and a row's draw depends on nothing but
 *       its seed and logits (not its batch, not the tp size);
 *   <li>top-k: each rank's k largest values per row, all-gathered ({@code k} floats per row per rank), give
 *       the k-th largest {@code tau_k}; tokens below it are out;
 *   <li>top-p: the candidates' global order (the gathered top-c lists merged, c = k, or 64 growing 4x
 *       while the nucleus is not inside them) and the softmax mass {@code Z} (from the candidates under
 *       top-k, else one all-reduce of a float per row) give the smallest set of most likely tokens whose
 *       mass reaches {@code p}: a token is kept when the mass of the tokens before it is below
 *       {@code p} (HF's {@code TopPLogitsWarper}).
 * </ul>
 */
public final class VocabSampler {
  private VocabSampler() {}

  /**
   * Next token per sampled row: {@code l} is {@code [ns, vn]} row-major (this rank's slice, changed in
   * place by the penalty and the temperature).
   */
  public static int[] sample(float[] l, int ns, int vn, int v0, int vocab, DecodeStep st, RunContext ctx) {
    DecodeStep.Sampling gp = st.sampling();
    if (gp.repetitionPenalty() != 1) {
      penalize(l, ns, vn, v0, st.history(), (float) gp.repetitionPenalty());
    }
    float[] thresh = new float[ns];
    Arrays.fill(thresh, Float.NEGATIVE_INFINITY);
    if (!gp.greedy()) {
      if (gp.temperature() != 1) {
        for (int i = 0; i < l.length; i++) {
          l[i] = l[i] / (float) gp.temperature();
        }
      }
      boolean topK = gp.topK() > 0 && gp.topK() < vocab;
      boolean topP = gp.topP() < 1;
      if (topK || topP) {
        thresholds(l, ns, vn, vocab, topK ? gp.topK() : 0, topP ? gp.topP() : 1, thresh, ctx);
      }
    }
    float[] best = new float[2 * ns];
    for (int i = 0; i < ns; i++) {
      float bv = Float.NEGATIVE_INFINITY;
      int bi = -1;
      int base = i * vn;
      long seed = gp.greedy() ? 0 : st.seeds()[i];
      int step = st.steps()[i];
      for (int j = 0; j < vn; j++) {
        float v = l[base + j];
        if (v < thresh[i]) {
          continue;
        }
        if (!gp.greedy()) {
          v = (float) (v + CounterRng.gumbel(seed, step, v0 + j));
        }
        if (bi < 0 || v > bv) {
          bv = v;
          bi = v0 + j;
        }
      }
      best[2 * i] = bi < 0 ? Float.NEGATIVE_INFINITY : bv;
      best[2 * i + 1] = Float.intBitsToFloat(bi);
    }
    return pick(best, ns, ctx);
  }

  /**
   * The group's choice per row from every rank's {@code best} ({max, id bits} per row of its slice, as
   * {@link Backend#argMaxRows} gives): the largest value wins, ties to the smallest id.
   */
  static int[] pick(float[] best, int ns, RunContext ctx) {
    float[] all = gather(best, ctx);
    int p = ctx.size();
    int[] out = new int[ns];
    for (int i = 0; i < ns; i++) {
      float bv = Float.NEGATIVE_INFINITY;
      int bi = -1;
      for (int r = 0; r < p; r++) {
        float v = all[r * 2 * ns + 2 * i];
        int id = Float.floatToRawIntBits(all[r * 2 * ns + 2 * i + 1]);
        if (id >= 0 && (bi < 0 || v > bv || (v == bv && id < bi))) {
          bv = v;
          bi = id;
        }
      }
      if (bi < 0) {
        throw new IllegalStateException("No token left to sample for row " + i + " (every logit is -inf or NaN)");
      }
      out[i] = bi;
    }
    return out;
  }

  /** HF's repetition penalty on the ids seen, each id once. */
  static void penalize(float[] l, int ns, int vn, int v0, int[][] history, float penalty) {
    for (int i = 0; i < ns; i++) {
      int[] seen = history[i].clone();
      Arrays.sort(seen);
      for (int k = 0; k < seen.length; k++) {
        if (k > 0 && seen[k] == seen[k - 1]) {
          continue;
        }
        int j = seen[k] - v0;
        if (j >= 0 && j < vn) {
          float v = l[i * vn + j];
          l[i * vn + j] = v < 0 ? v * penalty : v / penalty;
        }
      }
    }
  }

  /** Sets {@code thresh[i]}: the smallest value row {@code i} keeps under top-k and top-p. */
  static void thresholds(float[] l, int ns, int vn, int vocab, int k, double topP, float[] thresh, RunContext ctx) {
    int p = ctx.size();
    int c = k > 0 ? k : Math.min(64, vocab);
    boolean[] done = new boolean[ns];
    double[] z = null;
    int left = ns;
    while (left > 0) {
      // the top-c values of every unresolved row on every rank, padded with -inf
      int[] rows = new int[left];
      int n = 0;
      for (int i = 0; i < ns; i++) {
        if (!done[i]) {
          rows[n++] = i;
        }
      }
      float[] mine = new float[left * c];
      for (int a = 0; a < left; a++) {
        top(l, rows[a] * vn, vn, c, mine, a * c);
      }
      float[] all = gather(mine, ctx);
      float[][] merged = new float[left][];
      for (int a = 0; a < left; a++) {
        float[] m = new float[p * c];
        for (int r = 0; r < p; r++) {
          System.arraycopy(all, r * left * c + a * c, m, r * c, c);
        }
        Arrays.sort(m);
        merged[a] = m; // ascending; the last c entries are the row's global top-c
      }
      if (k == 0 && z == null) {
        // the softmax mass of the whole vocabulary (no top-k): one all-reduce of a float per row
        float[] sums = new float[ns];
        for (int i = 0; i < ns; i++) {
          float max = merged[i][p * c - 1];
          double e = 0;
          for (int j = 0; j < vn; j++) {
            e += Math.exp(l[i * vn + j] - max);
          }
          sums[i] = (float) e;
        }
        sums = allReduce(sums, ctx);
        z = new double[ns];
        for (int i = 0; i < ns; i++) {
          z[i] = sums[i];
        }
      }
      for (int a = 0; a < left; a++) {
        int i = rows[a];
        float[] m = merged[a];
        int top = p * c - 1;
        float max = m[top];
        if (k > 0) {
          thresh[i] = m[top - (k - 1)];
        }
        if (topP >= 1) {
          done[i] = true;
          continue;
        }
        double mass = 0;
        if (k > 0) {
          for (int j = 0; j < k; j++) {
            mass += Math.exp(m[top - j] - max);
          }
        } else {
          mass = z[i];
        }
        double cum = 0;
        int kept = 0;
        int certain = Math.min(c, vocab);
        while (kept < certain && !(cum >= topP * mass) && m[top - kept] != Float.NEGATIVE_INFINITY) {
          cum += Math.exp(m[top - kept] - max);
          kept++;
        }
        boolean exhausted = kept < certain || k > 0 || c >= vocab; // every token with mass was seen
        if (cum >= topP * mass || exhausted) {
          thresh[i] = Math.max(thresh[i], m[top - (kept - 1)]);
          done[i] = true;
        }
      }
      left = 0;
      for (boolean d : done) {
        left += d ? 0 : 1;
      }
      c = Math.min(vocab, c * 4);
    }
  }

  /** The {@code c} largest of {@code l[off .. off+n)}, descending, into {@code dst[at ..]} (-inf padded). */
  static void top(float[] l, int off, int n, int c, float[] dst, int at) {
    Arrays.fill(dst, at, at + c, Float.NEGATIVE_INFINITY);
    // dst[at .. at+c) kept descending; insert when larger than the smallest
    for (int j = 0; j < n; j++) {
      float v = l[off + j];
      if (!(v > dst[at + c - 1])) {
        continue;
      }
      int q = at + c - 1;
      while (q > at && dst[q - 1] < v) {
        dst[q] = dst[q - 1];
        q--;
      }
      dst[q] = v;
    }
  }

  /** Every rank's {@code mine} (same length on every rank), rank after rank. */
  static float[] gather(float[] mine, RunContext ctx) {
    Communicator comm = ctx.comm();
    int p = comm.size();
    if (p == 1) {
      return mine;
    }
    Backend be = ctx.backend();
    int[] counts = new int[p];
    Arrays.fill(counts, mine.length);
    try (Tensor send = be.upload(mine, 1, mine.length); Tensor recv = be.empty(1, mine.length * p)) {
      comm.allGather(send, recv, counts);
      return be.download(recv);
    }
  }

  static float[] allReduce(float[] mine, RunContext ctx) {
    if (ctx.size() == 1) {
      return mine;
    }
    Backend be = ctx.backend();
    try (Tensor t = be.upload(mine, 1, mine.length)) {
      ctx.comm().allReduce(t);
      return be.download(t);
    }
  }

  /**
   * The LM head's work for task generate (called by {@code LmHeadOp}): this rank's logits slice at the
   * last position of each sampled sequence of the step, and the next tokens drawn from them; returns
   * {@code [sampled, 1]} replicated (the ids as floats, exact below 2^24).
   */
  public static DistTensor nextTokens(LinearKernel head, DistTensor x, Tokens tokens, RunContext ctx, int vocab,
      int hidden, int v0, int vn) {
    DecodeStep st = ctx.decode();
    if (st == null) {
      throw new IllegalStateException("Task 'generate' runs through org.sparktp.nn.gen.Generator (it needs a "
          + "KV cache); a plain forward pass cannot run it");
    }
    Backend be = ctx.backend();
    int[] seqs = st.sampleSeqs();
    int ns = seqs.length;
    if (ns == 0) {
      return DistTensor.replicated(be.empty(1, 1));
    }
    int[] last = new int[ns];
    for (int i = 0; i < ns; i++) {
      last[i] = tokens.offsets()[seqs[i] + 1] - 1;
    }
    float[] l = null;
    float[] best = null;
    boolean plainGreedy = st.sampling().greedy() && st.sampling().repetitionPenalty() == 1;
    try (Tensor sel = be.empty(ns, hidden)) {
      be.selectRows(x.local(), last, sel);
      try (Tensor logits = head.apply(sel, false, ctx, "lm_head")) {
        if (plainGreedy) {
          best = be.argMaxRows(logits, v0); // a device backend reduces there: 2 floats per row come back
        } else {
          l = be.download(logits);
        }
      }
    }
    int[] ids = plainGreedy ? pick(best, ns, ctx) : sample(l, ns, vn, v0, vocab, st, ctx);
    float[] f = new float[ns];
    for (int i = 0; i < ns; i++) {
      f[i] = ids[i];
    }
    return DistTensor.replicated(be.upload(f, ns, 1));
  }

}
