package org.sparktp.nn.ops;

import java.util.Arrays;
import java.util.List;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.comm.Communicator;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.nn.LinearKernel;
import org.sparktp.nn.Mappings;
import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * The vocab-parallel LM head {@code logits = h W^T}, {@code W} {@code [vocab, hidden]} split by rows
 * ({@code Split.balanced(vocab, p)}: rank {@code r} computes its slice of the vocabulary; a tied head
 * reads the embedding's rows and shares its copy). Two tasks:
 *
 * <ul>
 *   <li>{@code logits}: only the rows' last positions go through the head, and the {@code [rows, vocab_r]} slices
 *       are left {@link Layout#SHARDED} by vocabulary: the row return hands each row's logits to the rank that owns
 *       the row (an all-to-all), so no rank ever holds the group's full-vocabulary logits;
 *   <li>{@code score}: {@code sum_{t=2..n} log p(x_t | x_<t)} per row, with the vocab-parallel
 *       log-softmax of Megatron's cross entropy: per token a max all-gather ({@code p} floats) and one
 *       all-reduce of the sum of {@code exp(l - max)} and of the target's logit; no full-vocabulary logits
 *       are ever gathered.
 * </ul>
 */
public record LmHeadOp(String weight, int vocab, int hidden, Task task) implements Op {

  @Override
  public String name() {
    return "lm_head";
  }

  @Override
  public Layout in() {
    return Layout.REPLICATED;
  }

  @Override
  public Layout out() {
    return task == Task.LOGITS ? Layout.SHARDED : Layout.REPLICATED;
  }

  @Override
  public int collectives(int p) {
    return p == 1 || task == Task.LOGITS ? 0 : 2;
  }

  Split split(int p) {
    return Split.balanced(vocab, p, 1, "the vocabulary of '" + weight + "' (vocab_size)");
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    Split s = split(p);
    return List.of(Slice.rows(weight, s.offset(rank), s.length(rank), vocab, hidden));
  }

  @Override
  public String describe(int p) {
    return task.id() + ": lm_head " + weight + " [" + hidden + " -> " + vocab + "] vocab-parallel "
        + Arrays.toString(split(p).lengths()) + (task == Task.SCORE
            ? ", log-softmax by max all-gather + sum-exp all-reduce" : task == Task.GENERATE
            ? ", next token drawn on the slices (local max/top-k, small all-gathers)"
            : ", last positions, left sharded by vocabulary (each row's logits go to its owner)");
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    Split s = split(p);
    LinearKernel head = w.linear(slices(p, rank).get(0), Activation.IDENTITY);
    int v0 = s.offset(rank);
    int vn = s.length(rank);
    return (x, tokens, ctx) -> {
      Backend be = ctx.backend();
      int rows = tokens.rows();
      int[] off = tokens.offsets();
      try {
        if (task == Task.LOGITS) {
          int[] last = new int[rows];
          for (int r = 0; r < rows; r++) {
            last[r] = off[r + 1] - 1;
          }
          Tensor logits;
          try (Tensor sel = be.empty(rows, hidden)) {
            be.selectRows(x.local(), last, sel);
            logits = head.apply(sel, false, ctx, "lm_head");
          }
          return DistTensor.sharded(logits, s);
        }
        if (task == Task.GENERATE) {
          return VocabSampler.nextTokens(head, x, tokens, ctx, vocab, hidden, v0, vn);
        }
        return score(head, x, tokens, ctx, s, v0, vn);
      } finally {
        x.close();
      }
    };
  }

  private static DistTensor score(LinearKernel head, DistTensor x, Tokens tokens, org.sparktp.nn.RunContext ctx,
      Split s, int v0, int vn) {
    Backend be = ctx.backend();
    Communicator comm = ctx.comm();
    int n = tokens.count();
    int rows = tokens.rows();
    int p = ctx.size();
    float[] l;
    try (Tensor logits = head.apply(x.local(), false, ctx, "lm_head")) {
      l = be.download(logits);
    }
    long t0 = System.nanoTime();
    float[] max = new float[n];
    for (int t = 0; t < n; t++) {
      float m = Float.NEGATIVE_INFINITY;
      for (int j = 0; j < vn; j++) {
        m = Math.max(m, l[t * vn + j]);
      }
      max[t] = m;
    }
    if (p > 1) {
      int[] counts = new int[p];
      Arrays.fill(counts, n);
      float[] all;
      try (Tensor send = be.upload(max, 1, n); Tensor recv = be.empty(1, n * p)) {
        ctx.addCompute(System.nanoTime() - t0);
        comm.allGather(send, recv, counts);
        all = be.download(recv);
      }
      t0 = System.nanoTime();
      for (int r = 0; r < p; r++) {
        for (int t = 0; t < n; t++) {
          max[t] = Math.max(max[t], all[r * n + t]);
        }
      }
    }
    int[] ids = tokens.ids();
    float[] sums = new float[2 * n]; // sum exp(l - max), then the target's logit (0 where another rank holds it)
    for (int r = 0; r < rows; r++) {
      for (int t = tokens.offsets()[r]; t < tokens.offsets()[r + 1]; t++) {
        double e = 0;
        for (int j = 0; j < vn; j++) {
          e += Math.exp(l[t * vn + j] - max[t]);
        }
        sums[t] = (float) e;
        if (t + 1 < tokens.offsets()[r + 1]) {
          int target = ids[t + 1] - v0;
          if (target >= 0 && target < vn) {
            sums[n + t] = l[t * vn + target];
          }
        }
      }
    }
    if (p > 1) {
      try (Tensor red = be.upload(sums, 2, n)) {
        ctx.addCompute(System.nanoTime() - t0);
        comm.allReduce(red);
        be.download(red, sums, 0);
      }
      t0 = System.nanoTime();
    }
    float[] score = new float[rows];
    for (int r = 0; r < rows; r++) {
      double acc = 0;
      for (int t = tokens.offsets()[r]; t + 1 < tokens.offsets()[r + 1]; t++) {
        acc += sums[n + t] - max[t] - Math.log(sums[t]);
      }
      score[r] = (float) acc;
    }
    Tensor y = be.upload(score, rows, 1);
    ctx.addCompute(System.nanoTime() - t0);
    return DistTensor.replicated(y);
  }
}
