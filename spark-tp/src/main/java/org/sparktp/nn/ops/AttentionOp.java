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
 * Multi-head self-attention, Megatron-style, per sequence of a ragged batch:
 * {@code Q = X Wq^T + bq, K = X Wk^T + bk, V = X Wv^T + bv} (column-parallel by whole heads), RoPE on
 * Q and K when set, {@code O_h = softmax(Q_h K_g(h)^T / sqrt(d) + M) V_g(h)} with {@code M} the causal
 * mask for decoders, then {@code Y = [O_1 .. O_H] Wo^T + bo} row-parallel: rank {@code r} holds the
 * columns of {@code Wo} of its heads and produces a {@link Layout#PARTIAL} sum (one all-reduce per
 * attention block, after it). With grouped-query attention ({@code kvHeads < heads}) query head
 * {@code h} uses KV head {@code g(h) = h / (heads / kvHeads)} (HF's {@code repeat_kv}); a rank holds
 * every KV head its query heads use, a replica when another rank holds it too.
 *
 * <p>Heads are split balanced ({@link Split}, unit = one head): 6 heads on 4 ranks are 2, 2, 1, 1. Q, K
 * and V of a rank run as one GEMM (their shards stacked); GPT-2's fused {@code c_attn} is three parts
 * of one tensor, each split by heads.
 *
 * <p>Qwen3's per-head norms ({@code qNorm}, {@code kNorm}: RMSNorm weights {@code [headDim]}, replicated) normalise
 * every query and key head before RoPE: {@code q_h <- q_h / sqrt(mean(q_h^2) + normEps) * gq}, the same for keys.
 *
 * @param qNorm the query heads' RMSNorm weight, or null (no per-head norm)
 * @param kNorm the key heads' RMSNorm weight, or null
 */
public record AttentionOp(String name, int hidden, int heads, int kvHeads, int headDim, boolean causal, Rope rope,
    Part q, Part k, Part v, Part o, String qNorm, String kNorm, float normEps) implements Op {

  public AttentionOp {
    if (heads <= 0 || kvHeads <= 0 || heads % kvHeads != 0) {
      throw new IllegalArgumentException(name + ": num_attention_heads (" + heads
          + ") must be a positive multiple of num_key_value_heads (" + kvHeads + ")");
    }
    if ((qNorm == null) != (kNorm == null)) {
      throw new IllegalArgumentException(name + ": q_norm and k_norm come together (got " + qNorm + ", " + kNorm
          + ")");
    }
  }

  /** Attention without per-head query/key norms. */
  public AttentionOp(String name, int hidden, int heads, int kvHeads, int headDim, boolean causal, Rope rope,
      Part q, Part k, Part v, Part o) {
    this(name, hidden, heads, kvHeads, headDim, causal, rope, q, k, v, o, null, null, 0f);
  }

  @Override
  public Layout in() {
    return Layout.REPLICATED;
  }

  @Override
  public Layout out() {
    return Layout.PARTIAL;
  }

  /** Query heads per rank, balanced. */
  public Split headSplit(int p) {
    return Split.balanced(heads, p, 1, "the attention heads of '" + name + "' (num_attention_heads)");
  }

  /** First KV head rank {@code r} holds. */
  int kvStart(int p, int r) {
    return headSplit(p).offset(r) / (heads / kvHeads);
  }

  @Override
  public int kvFloatsPerToken(int p, int rank) {
    return 2 * kvCount(p, rank) * headDim();
  }

  /** KV heads rank {@code r} holds. */
  public int kvCount(int p, int r) {
    Split s = headSplit(p);
    int rep = heads / kvHeads;
    int first = s.offset(r) / rep;
    int last = (s.offset(r) + s.length(r) - 1) / rep;
    return last - first + 1;
  }

  private List<Part.Range> ranges(int p, int r) {
    Split s = headSplit(p);
    int kv0 = kvStart(p, r);
    int kvn = kvCount(p, r);
    List<Part.Range> out = new ArrayList<>();
    out.add(new Part.Range(q, s.offset(r) * headDim, s.length(r) * headDim));
    out.add(new Part.Range(k, kv0 * headDim, kvn * headDim));
    out.add(new Part.Range(v, kv0 * headDim, kvn * headDim));
    return out;
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    List<Slice> s = new ArrayList<>();
    s.addAll(Part.columnSlices(ranges(p, rank)));
    Split hs = headSplit(p);
    s.addAll(o.rowSlices(hs.offset(rank) * headDim, hs.length(rank) * headDim));
    if (qNorm != null) {
      s.add(Slice.elements(qNorm, 0, headDim, headDim));
      s.add(Slice.elements(kNorm, 0, headDim, headDim));
    }
    return s;
  }

  @Override
  public String describe(int p) {
    Split s = headSplit(p);
    StringBuilder per = new StringBuilder();
    for (int r = 0; r < p; r++) {
      int kv0 = kvStart(p, r);
      int kvn = kvCount(p, r);
      int replicas = 0;
      for (int g = kv0; g < kv0 + kvn; g++) {
        for (int other = 0; other < p; other++) {
          if (other != r && g >= kvStart(p, other) && g < kvStart(p, other) + kvCount(p, other)) {
            replicas++;
            break;
          }
        }
      }
      per.append(r == 0 ? "" : ", ").append("r").append(r).append(": q ").append(s.offset(r)).append("-")
          .append(s.offset(r) + s.length(r) - 1).append(" kv ").append(kv0).append("-").append(kv0 + kvn - 1)
          .append(replicas > 0 ? " (" + replicas + " replica" + (replicas > 1 ? "s" : "") + ")" : "");
    }
    return String.format(Locale.ROOT, "%s attention %s [%d heads%s x %d]%s; heads per rank: %s",
        causal ? "causal" : "bidirectional", name, heads, kvHeads < heads ? ", " + kvHeads + " kv" : "", headDim,
        (rope == null ? "" : " rope(" + rope.type() + ")") + (qNorm == null ? "" : " q/k rms_norm"), per);
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    Split s = headSplit(p);
    int nq = s.length(rank);
    int kv0 = kvStart(p, rank);
    int nkv = kvCount(p, rank);
    int rep = heads / kvHeads;
    int[] kvOf = new int[nq];
    for (int j = 0; j < nq; j++) {
      kvOf[j] = (s.offset(rank) + j) / rep - kv0;
    }
    LinearKernel qkv = Part.columnKernel(ranges(p, rank), w, Activation.IDENTITY);
    LinearKernel out = o.rowKernel(s.offset(rank) * headDim, nq * headDim, w);
    float[] invFreq = rope == null ? null : rope.invFreq();
    float scale = (float) (1.0 / Math.sqrt(headDim));
    Tensor gq = qNorm == null ? null : w.tensor(Slice.elements(qNorm, 0, headDim, headDim));
    Tensor gk = kNorm == null ? null : w.tensor(Slice.elements(kNorm, 0, headDim, headDim));
    return (x, tokens, ctx) -> {
      Backend be = ctx.backend();
      Tensor ctxOut = null;
      try {
        Tensor h = qkv.apply(x.local(), true, ctx, name + ".qkv");
        x.close();
        long t0 = System.nanoTime();
        try {
          if (gq != null) {
            headNorm(be, h, 0, nq, gq);
            headNorm(be, h, nq * headDim, nkv, gk);
          }
          if (invFreq != null) {
            be.rope(h, 0, nq, headDim, tokens.positions(), invFreq);
            be.rope(h, nq * headDim, nkv, headDim, tokens.positions(), invFreq);
          }
          ctxOut = be.empty(h.rows(), nq * headDim);
          org.sparktp.nn.DecodeStep kv = ctx.decode(); // issue 12: generation attends to the KV cache
          if (kv != null) {
            be.cachedAttention(h, 0, nq * headDim, nkv, kvOf, headDim, tokens.offsets(), kv.cache(name), kv.past(),
                scale, ctxOut);
          } else {
            be.attention(h, 0, nq * headDim, (nq + nkv) * headDim, kvOf, headDim, tokens.offsets(), causal, scale,
                ctxOut);
          }
        } finally {
          h.close();
        }
        ctx.addCompute(System.nanoTime() - t0);
        ctx.addAttention(System.nanoTime() - t0);
        boolean single = ctx.size() == 1;
        Tensor y = out.apply(ctxOut, single, ctx, name + ".o");
        return single ? DistTensor.replicated(y) : DistTensor.partial(y, out.bias());
      } catch (RuntimeException e) {
        closeQuietly(x, e);
        throw e;
      } finally {
        if (ctxOut != null) {
          ctxOut.close();
        }
      }
    };
  }

  /** RMSNorm of each of {@code n} heads at column {@code col} of {@code h}, in place (Qwen3's q_norm, k_norm). */
  private void headNorm(Backend be, Tensor h, int col, int n, Tensor gamma) {
    int w = n * headDim;
    try (Tensor t = be.allocate(h.rows(), w, h.dtype())) {
      be.copyBlock(h, 0, col, t, 0, 0, h.rows(), w);
      Tensor perHead = t.reshape(h.rows() * n, headDim);
      be.rmsNorm(perHead, gamma, normEps);
      be.copyBlock(t, 0, 0, h, 0, col, h.rows(), w);
    }
  }

  static void closeQuietly(DistTensor x, RuntimeException e) {
    try {
      if (!x.local().isClosed()) {
        x.close();
      }
    } catch (RuntimeException s) {
      e.addSuppressed(s);
    }
  }
}
