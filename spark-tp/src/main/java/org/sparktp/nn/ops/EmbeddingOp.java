package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.shard.Split;
import org.sparktp.tensor.Tensor;

/**
 * Token embeddings of a ragged batch: {@code h_t = E[id_t] (+ P[pos_t + positionOffset]) (+ T[0])},
 * then layer norm when set (BERT). {@code E} {@code [vocab, hidden]} is vocab-parallel: rank {@code r}
 * holds the rows {@code Split.balanced(vocab, p)} gives it (the same rows a tied LM head uses, so the
 * two share one copy), looks up the ids it holds (zeros for the others) and the partial sums are
 * all-reduced. Learned position ({@code P}) and token-type ({@code T}, type 0) tables are replicated.
 *
 * @param positions the position table {@code [maxPositions, hidden]} or null (RoPE models)
 * @param tokenTypes the token-type table {@code [types, hidden]} or null
 * @param normWeight layer-norm gamma or null (no norm)
 */
public record EmbeddingOp(String name, int vocab, int hidden, String table, String positions, int maxPositions,
    int positionOffset, String tokenTypes, int types, String normWeight, String normBias, float eps) implements Op {

  @Override
  public Layout in() {
    return Layout.REPLICATED;
  }

  @Override
  public Layout out() {
    return Layout.REPLICATED;
  }

  @Override
  public int collectives(int p) {
    return p > 1 ? 1 : 0;
  }

  /** The vocabulary rows per rank (shared with a tied LM head). */
  public Split vocabSplit(int p) {
    return Split.balanced(vocab, p, 1, "the vocabulary of '" + table + "' (vocab_size)");
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    Split s = vocabSplit(p);
    List<Slice> out = new ArrayList<>();
    out.add(Slice.rows(table, s.offset(rank), s.length(rank), vocab, hidden));
    if (positions != null) {
      out.add(Slice.all(positions, maxPositions, hidden));
    }
    if (tokenTypes != null) {
      out.add(Slice.rows(tokenTypes, 0, 1, types, hidden));
    }
    if (normWeight != null) {
      out.add(Slice.elements(normWeight, 0, hidden, hidden));
      if (normBias != null) {
        out.add(Slice.elements(normBias, 0, hidden, hidden));
      }
    }
    return out;
  }

  @Override
  public String describe(int p) {
    return "embedding " + table + " [" + vocab + "x" + hidden + "] vocab-parallel " + Arrays.toString(
        vocabSplit(p).lengths()) + (positions != null ? " + positions" : "") + (tokenTypes != null ? " + token type"
        : "") + (normWeight != null ? " + layer_norm" : "") + (p > 1 ? ", all-reduce" : "");
  }

  @Override
  public OpKernel build(int p, int rank, Weights w, Backend backend) {
    List<Slice> sl = slices(p, rank);
    int i = 0;
    // the tables in the storage dtype (bf16 halves them; rows are widened to f32 as they are gathered; int8: f32)
    Tensor tab = w.tensor(sl.get(i++), w.tableDtype());
    Tensor pos = positions != null ? w.tensor(sl.get(i++), w.tableDtype()) : null;
    Tensor typ = tokenTypes != null ? w.tensor(sl.get(i++), w.tableDtype()) : null;
    Tensor g = normWeight != null ? w.tensor(sl.get(i++)) : null;
    Tensor b = normWeight != null && normBias != null ? w.tensor(sl.get(i)) : null;
    int idStart = vocabSplit(p).offset(rank);
    return (x, tokens, ctx) -> {
      // x is unused (the input is the ids); it is an empty placeholder owned by the caller
      Backend be = ctx.backend();
      int n = tokens.count();
      long t0 = System.nanoTime();
      Tensor h = be.empty(n, hidden);
      try {
        be.embedding(tab, idStart, tokens.ids().length == n ? tokens.ids() : Arrays.copyOf(tokens.ids(), n), h);
        ctx.addCompute(System.nanoTime() - t0);
        if (ctx.size() > 1) {
          ctx.comm().allReduce(h);
        }
        t0 = System.nanoTime();
        if (pos != null || typ != null) {
          try (Tensor add = be.empty(n, hidden)) {
            if (pos != null) {
              int[] ids = new int[n];
              for (int t = 0; t < n; t++) {
                ids[t] = tokens.positions()[t] + positionOffset;
              }
              be.embedding(pos, 0, ids, add);
              be.add(h, add);
            }
            if (typ != null) {
              be.embedding(typ, 0, new int[n], add);
              be.add(h, add);
            }
          }
        }
        if (g != null) {
          be.layerNorm(h, g, b, eps);
        }
        ctx.addCompute(System.nanoTime() - t0);
        return DistTensor.replicated(h);
      } catch (RuntimeException e) {
        h.close();
        throw e;
      }
    };
  }
}
