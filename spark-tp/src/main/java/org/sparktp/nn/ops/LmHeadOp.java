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
 *       are ever gathered, and the positions go through the head in chunks of at most 64 MiB of logits (two
 *       collectives per chunk), so a long micro-batch never holds {@code [positions, vocab_r]} at once.
 * </ul>
 */
public record LmHeadOp(String weight, int vocab, int hidden, Task task) implements Op {
  /** Task score runs the head over at most this many bytes of f32 logits at a time (every rank alike). */
  public static final long LOGIT_CHUNK_BYTES = 64L << 20;

  /** Bytes of logits one chunk of positions of task score holds; tests lower it to make several chunks. */
  static volatile long scoreChunkBytes = LOGIT_CHUNK_BYTES;

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
    int n = tokens.count();
    int rows = tokens.rows();
    int[] off = tokens.offsets();
    int[] ids = tokens.ids();
    int[] end = new int[n]; // the end of each position's row
    for (int r = 0; r < rows; r++) {
      Arrays.fill(end, off[r], off[r + 1], off[r + 1]);
    }
    float[] max = new float[n];
    float[] sums = new float[2 * n]; // sum exp(l - max), then the target's logit (0 where another rank holds it)
    // the positions go through the head in chunks of at most LOGIT_CHUNK_BYTES of logits (the same on every rank:
    // every rank holds the group's n positions), so a long micro-batch never holds [n, vocab_r] at once
    int widest = Arrays.stream(s.lengths()).max().orElse(vn); // one chunk size for every rank, whatever its slice
    int chunk = (int) Math.max(1, Math.min(n, scoreChunkBytes / (4L * widest)));
    for (int c0 = 0; c0 < n; c0 += chunk) {
      int c = Math.min(chunk, n - c0);
      scoreChunk(head, x, ctx, c0, c, vn, v0, ids, end, max, sums);
    }
    long t0 = System.nanoTime();
    float[] score = new float[rows];
    for (int r = 0; r < rows; r++) {
      double acc = 0;
      for (int t = off[r]; t + 1 < off[r + 1]; t++) {
        acc += sums[n + t] - max[t] - Math.log(sums[t]);
      }
      score[r] = (float) acc;
    }
    Tensor y = be.upload(score, rows, 1);
    ctx.addCompute(System.nanoTime() - t0);
    return DistTensor.replicated(y);
  }

  /**
   * Positions {@code [c0, c0 + c)} of the n: their logits on this rank's vocabulary slice, the max over the whole
   * vocabulary (a max all-gather), then the sum of {@code exp(l - max)} and the target's logit (one all-reduce),
   * written into {@code max[t]}, {@code sums[t]} and {@code sums[n + t]}.
   */
  private static void scoreChunk(LinearKernel head, DistTensor x, org.sparktp.nn.RunContext ctx, int c0, int c,
      int vn, int v0, int[] ids, int[] end, float[] max, float[] sums) {
    Backend be = ctx.backend();
    Communicator comm = ctx.comm();
    int n = max.length;
    int p = ctx.size();
    float[] l;
    if (c == n) {
      try (Tensor logits = head.apply(x.local(), false, ctx, "lm_head")) {
        l = be.download(logits);
      }
    } else {
      int[] pick = new int[c];
      for (int i = 0; i < c; i++) {
        pick[i] = c0 + i;
      }
      try (Tensor sel = be.empty(c, x.local().cols())) {
        be.selectRows(x.local(), pick, sel);
        try (Tensor logits = head.apply(sel, false, ctx, "lm_head")) {
          l = be.download(logits);
        }
      }
    }
    long t0 = System.nanoTime();
    float[] m = new float[c];
    for (int i = 0; i < c; i++) {
      float v = Float.NEGATIVE_INFINITY;
      for (int j = 0; j < vn; j++) {
        v = Math.max(v, l[i * vn + j]);
      }
      m[i] = v;
    }
    if (p > 1) {
      int[] counts = new int[p];
      Arrays.fill(counts, c);
      float[] all;
      try (Tensor send = be.upload(m, 1, c); Tensor recv = be.empty(1, c * p)) {
        ctx.addCompute(System.nanoTime() - t0);
        comm.allGather(send, recv, counts);
        all = be.download(recv);
      }
      t0 = System.nanoTime();
      for (int r = 0; r < p; r++) {
        for (int i = 0; i < c; i++) {
          m[i] = Math.max(m[i], all[r * c + i]);
        }
      }
    }
    float[] part = new float[2 * c];
    for (int i = 0; i < c; i++) {
      int t = c0 + i;
      double e = 0;
      for (int j = 0; j < vn; j++) {
        e += Math.exp(l[i * vn + j] - m[i]);
      }
      part[i] = (float) e;
      if (t + 1 < end[t]) {
        int target = ids[t + 1] - v0;
        if (target >= 0 && target < vn) {
          part[c + i] = l[i * vn + target];
        }
      }
    }
    if (p > 1) {
      try (Tensor red = be.upload(part, 2, c)) {
        ctx.addCompute(System.nanoTime() - t0);
        comm.allReduce(red);
        be.download(red, part, 0);
      }
      t0 = System.nanoTime();
    }
    System.arraycopy(m, 0, max, c0, c);
    System.arraycopy(part, 0, sums, c0, c);
    System.arraycopy(part, c, sums, n + c0, c);
    ctx.addCompute(System.nanoTime() - t0);
  }
}
