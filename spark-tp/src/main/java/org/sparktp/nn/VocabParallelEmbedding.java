package org.sparktp.nn;

import org.sparktp.shard.Split;
import org.sparktp.tensor.Tensor;

/**
 * Vocabulary-parallel embedding: the table {@code E = [vocab, dim]} is split by rows,
 * {@code E = [E_1; ...; E_p]}, rank {@code i} holding ids {@code [v_i, v_i + n_i)}. Each rank looks up
 * the ids in its range and writes zeros for the others; {@code y = sum_i lookup_i(ids)} is the full
 * embedding. With {@code bag}, a row is a list of ids and {@code y} is their sum or mean (the mean
 * divides by the whole bag size on every rank, so the partial sums still add up).
 *
 * <p>The table is stored in the weights' dtype (f32, bf16 or f16); looked-up rows are widened to f32
 * ({@link org.sparktp.backend.Backend#embedding}; bags sum in f32).
 *
 * <p>Input: ids, replicated. Output: {@link Layout#PARTIAL} {@code [rows, dim]} ({@link
 * Layout#REPLICATED} with one rank).
 */
public final class VocabParallelEmbedding implements AutoCloseable {
  private final String name;
  private final Split vocabSplit;
  private final int rank;
  private final Tensor table;
  private final boolean bag;
  private final boolean mean;

  public VocabParallelEmbedding(String name, Split vocabSplit, int rank, Tensor table, boolean bag, boolean mean) {
    this.name = name;
    this.vocabSplit = vocabSplit;
    this.rank = rank;
    Shapes.check(name + ".weight", table, vocabSplit.length(rank), -1);
    this.table = table;
    this.bag = bag;
    this.mean = mean;
  }

  public String describe() {
    return (bag ? "embedding_bag(" + (mean ? "mean" : "sum") + ") " : "embedding ") + name;
  }

  public boolean bag() {
    return bag;
  }

  /**
   * Looks up {@code rows} rows: one id each ({@code offsets == null}), or bags
   * {@code ids[offsets[r] .. offsets[r+1])}.
   */
  public DistTensor forward(int[] ids, int[] offsets, int rows, RunContext ctx) {
    int vocab = vocabSplit.size();
    int n = offsets == null ? rows : offsets[rows];
    for (int i = 0; i < n; i++) {
      if (ids[i] < 0 || ids[i] >= vocab) {
        int row = offsets == null ? i : rowOf(offsets, rows, i);
        throw new IllegalArgumentException("Row " + row + " of the batch has id " + ids[i]
            + " outside the vocabulary [0, " + vocab + ") of " + describe());
      }
    }
    long t0 = System.nanoTime();
    Tensor out = ctx.backend().empty(rows, table.cols());
    if (offsets == null) { // a bf16/f16 table's rows are widened to f32 as they are gathered
      int[] exact = ids.length == rows ? ids : java.util.Arrays.copyOf(ids, rows);
      ctx.backend().embedding(table, vocabSplit.offset(rank), exact, out);
    } else {
      int[] off = offsets.length == rows + 1 ? offsets : java.util.Arrays.copyOf(offsets, rows + 1);
      ctx.backend().embeddingBag(table, vocabSplit.offset(rank), ids, off, mean, out);
    }
    ctx.addCompute(System.nanoTime() - t0);
    return ctx.size() == 1 ? DistTensor.replicated(out) : DistTensor.partial(out, null);
  }

  private static int rowOf(int[] offsets, int rows, int i) {
    for (int r = 0; r < rows; r++) {
      if (i < offsets[r + 1]) {
        return r;
      }
    }
    return rows - 1;
  }

  /** Bytes of the table shard as stored (bf16/f16 tables are half of f32). */
  public long weightBytes() {
    return table.bytes();
  }

  @Override
  public void close() {
    table.close();
  }
}
