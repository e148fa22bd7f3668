package org.sparktp.nn.ops;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.Layout;
import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * An embedding lookup, vocab-parallel. Two kinds ({@link Lookup}):
 *
 * <p>Rows of ids (a spark-tp layer list's {@code embedding} / {@code embedding_bag}): {@code y = E[id]} for one id
 * per row, or the sum or mean of {@code E[id]} over a row's bag of ids; rank {@code r} looks up the ids it holds
 * (zeros elsewhere; a mean divides by the whole bag size on every rank, so the partial sums still add up) and gives
 * a {@link Layout#PARTIAL} sum ({@link Layout#REPLICATED} with one rank): the planner inserts its reduction where
 * the next op needs whole rows, or the row return reduce-scatters it.
 *
 * <p>Token embeddings of a ragged batch ({@code TOKENS}): {@code h_t = E[id_t] (+ P[pos_t + positionOffset]) (+ T[0])},
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
    int positionOffset, String tokenTypes, int types, String normWeight, String normBias, float eps, Lookup lookup,
    Layout out) implements Op {

  /** What a row of the input is: a sequence of tokens, one id, or a bag of ids summed or averaged. */
  public enum Lookup { TOKENS, ID, SUM, MEAN }

  /** Token embeddings of a transformer (reduced here, then positions, token types and the norm added). */
  public EmbeddingOp(String name, int vocab, int hidden, String table, String positions, int maxPositions,
      int positionOffset, String tokenTypes, int types, String normWeight, String normBias, float eps) {
    this(name, vocab, hidden, table, positions, maxPositions, positionOffset, tokenTypes, types, normWeight, normBias,
        eps, Lookup.TOKENS, Layout.REPLICATED);
  }

  /** A lookup of one id ({@code ID}) or a bag of ids ({@code SUM}, {@code MEAN}) per row in {@code <name>.weight}. */
  public static EmbeddingOp rows(String name, int vocab, int dim, Lookup lookup) {
    if (lookup == Lookup.TOKENS) {
      throw new IllegalArgumentException("A row lookup is ID, SUM or MEAN");
    }
    return new EmbeddingOp(name, vocab, dim, name + ".weight", null, 0, 0, null, 0, null, null, 0f, lookup,
        Layout.PARTIAL);
  }

  @Override
  public Layout in() {
    return Layout.REPLICATED;
  }

  /** True when the input is rows of ids (one or a bag per row), not token sequences. */
  public boolean takesIdRows() {
    return lookup != Lookup.TOKENS;
  }

  /** True for a bag of ids per row. */
  public boolean bag() {
    return lookup == Lookup.SUM || lookup == Lookup.MEAN;
  }

  @Override
  public void place(Planner pl) {
    pl.require(Layout.REPLICATED);
    Layout o = lookup == Lookup.TOKENS || pl.p() == 1 ? Layout.REPLICATED : Layout.PARTIAL;
    pl.add(new EmbeddingOp(name, vocab, hidden, table, positions, maxPositions, positionOffset, tokenTypes, types,
        normWeight, normBias, eps, lookup, o), null, hidden);
  }

  @Override
  public int collectives(int p) {
    return p > 1 && lookup == Lookup.TOKENS ? 1 : 0;
  }

  @Override
  public String label(int p) {
    if (lookup == Lookup.TOKENS) {
      return describe(p);
    }
    return (lookup == Lookup.ID ? "embedding " : "embedding_bag(" + (lookup == Lookup.MEAN ? "mean" : "sum") + ") ")
        + name + " [" + vocab + "x" + hidden + "] vocab-parallel";
  }

  @Override
  public String unsplit(int p) {
    return vocab < p ? name + " [vocab " + vocab + "]" : null;
  }

  @Override
  public int splitDim() {
    return vocab;
  }

  /** The vocabulary rows per rank (shared with a tied LM head). */
  public Split vocabSplit(int p) {
    return Split.balanced(vocab, p, 1, "the vocabulary of '" + table + "' (vocab_size)");
  }

  @Override
  public List<Slice> slices(int p, int rank) {
    Split s = vocabSplit(p);
    List<Slice> out = new ArrayList<>();
    out.add(Slice.rows(table, s.offset(rank), s.length(rank), vocab, hidden).table());
    if (positions != null) {
      out.add(Slice.all(positions, maxPositions, hidden).table());
    }
    if (tokenTypes != null) {
      out.add(Slice.rows(tokenTypes, 0, 1, types, hidden).table());
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
    if (lookup != Lookup.TOKENS) {
      return label(p) + " " + Arrays.toString(vocabSplit(p).lengths());
    }
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
    if (lookup != Lookup.TOKENS) {
      return (x, tokens, ctx) -> lookupRows(tab, idStart, tokens, ctx);
    }
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

  /** One id or a bag of ids per row: this rank's partial sum {@code [rows, hidden]}. */
  private DistTensor lookupRows(Tensor tab, int idStart, Tokens tokens, org.sparktp.nn.RunContext ctx) {
    int rows = tokens.rows();
    int[] ids = tokens.ids();
    int[] off = tokens.offsets();
    for (int i = 0; i < tokens.count(); i++) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        int row = 0;
        while (row < rows - 1 && i >= off[row + 1]) {
          row++;
        }
        throw new IllegalArgumentException("Row " + row + " of the batch has id " + ids[i]
            + " outside the vocabulary [0, " + vocab + ") of " + (lookup == Lookup.ID ? "embedding "
                : "embedding_bag(" + (lookup == Lookup.MEAN ? "mean" : "sum") + ") ") + name);
      }
    }
    Backend be = ctx.backend();
    long t0 = System.nanoTime();
    Tensor out = be.empty(rows, hidden);
    try {
      if (lookup == Lookup.ID) { // a bf16/f16 table's rows are widened to f32 as they are gathered
        be.embedding(tab, idStart, ids.length == rows ? ids : Arrays.copyOf(ids, rows), out);
      } else {
        be.embeddingBag(tab, idStart, ids, off.length == rows + 1 ? off : Arrays.copyOf(off, rows + 1),
            lookup == Lookup.MEAN, out);
      }
    } catch (RuntimeException e) {
      out.close();
      throw e;
    }
    ctx.addCompute(System.nanoTime() - t0);
    return ctx.size() == 1 ? DistTensor.replicated(out) : DistTensor.partial(out, null);
  }
}
