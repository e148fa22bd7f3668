package org.sparktp.backend.cuda;

import java.util.ArrayList;
import java.util.List;

/**
 * The launch of the attention kernels ({@code tp_attention}, {@code tp_cached_attention_*}) worked out in plain
 * Java, so that it is checked without a GPU: the shape checks with their messages, the grid (one block per token
 * and KV head), the int32 metadata the kernels read ({@code offsets[nseq + 1]}, {@code kvOf[heads]}, then for
 * decode {@code past[nseq]}), and the two device-side lookups written as the kernels do them ({@link #sequenceOf},
 * {@link #group}), which the tests replay to prove every (token, query head) is computed exactly once.
 *
 * @param tokens grid x: the batch's tokens ({@code offsets[nseq]})
 * @param kvHeads grid y: KV heads (for prefill, one more than the largest {@code kvOf})
 * @param sequences {@code nseq}
 * @param offsets the sequences' token offsets
 * @param kvOf each query head's KV head
 */
public record AttentionLaunch(int tokens, int kvHeads, int sequences, int[] offsets, int[] kvOf) {
  /** Largest head size the kernels take ({@code TP_ATT_MAXD}). */
  public static final int MAX_HEAD_DIM = 256;
  /** Query heads one block serves at a time ({@code TP_ATT_MAXG}); a larger group takes several passes. */
  public static final int MAX_GROUP = 8;

  /** The prefill launch over {@code qkv [rows, cols]}, checked. */
  public static AttentionLaunch prefill(int rows, int cols, int qCol, int kCol, int vCol, int[] kvOf, int headDim,
      int[] offsets, int outRows, int outCols) {
    int tokens = checkCommon("attention", rows, cols, qCol, kvOf, headDim, offsets, outRows, outCols);
    int kvHeads = 0;
    for (int g : kvOf) {
      kvHeads = Math.max(kvHeads, g + 1);
    }
    long kvEnd = (long) kvHeads * headDim;
    if (kCol < 0 || vCol < 0 || kCol + kvEnd > cols || vCol + kvEnd > cols) {
      throw new IllegalArgumentException("attention: K at column " + kCol + " and V at column " + vCol + " with "
          + kvHeads + " KV heads of " + headDim + " do not fit in " + cols + " columns");
    }
    return new AttentionLaunch(tokens, kvHeads, offsets.length - 1, offsets.clone(), kvOf.clone());
  }

  /** The decode launch over {@code qkv [rows, cols]} and caches of {@code capacity[s]} rows, checked. */
  public static AttentionLaunch decode(int rows, int cols, int qCol, int kvCol, int kvHeads, int[] kvOf,
      int headDim, int[] offsets, int[] capacity, int[] past, int outRows, int outCols) {
    int tokens = checkCommon("cachedAttention", rows, cols, qCol, kvOf, headDim, offsets, outRows, outCols);
    int nseq = offsets.length - 1;
    if (capacity.length != nseq || past.length != nseq) {
      throw new IllegalArgumentException("cachedAttention: " + nseq + " sequences but " + capacity.length
          + " caches and " + past.length + " past lengths");
    }
    if (kvCol < 0 || kvCol + 2L * kvHeads * headDim > cols) {
      throw new IllegalArgumentException("cachedAttention: " + kvHeads + " K and V heads of " + headDim
          + " from column " + kvCol + " do not fit in " + cols + " columns");
    }
    for (int h = 0; h < kvOf.length; h++) {
      if (kvOf[h] >= kvHeads) {
        throw new IllegalArgumentException("cachedAttention: query head " + h + " reads KV head " + kvOf[h]
            + " of " + kvHeads);
      }
    }
    for (int s = 0; s < nseq; s++) {
      int n = offsets[s + 1] - offsets[s];
      if (past[s] < 0 || (long) past[s] + n > capacity[s]) {
        throw new IllegalArgumentException("cachedAttention: cache of sequence " + s + " holds " + capacity[s]
            + " tokens, cannot take " + n + " after " + past[s]);
      }
    }
    return new AttentionLaunch(tokens, kvHeads, nseq, offsets.clone(), kvOf.clone());
  }

  private static int checkCommon(String op, int rows, int cols, int qCol, int[] kvOf, int headDim, int[] offsets,
      int outRows, int outCols) {
    if (headDim <= 0 || headDim > MAX_HEAD_DIM) {
      throw new IllegalArgumentException(op + " on the CUDA backend takes head sizes 1.." + MAX_HEAD_DIM + ", got "
          + headDim);
    }
    if (offsets.length < 1 || offsets[0] != 0) {
      throw new IllegalArgumentException(op + ": offsets must start at 0, got " + java.util.Arrays.toString(offsets));
    }
    for (int s = 0; s + 1 < offsets.length; s++) {
      if (offsets[s + 1] < offsets[s]) {
        throw new IllegalArgumentException(op + ": offsets must not fall, got " + offsets[s] + " then "
            + offsets[s + 1] + " at sequence " + s);
      }
    }
    int tokens = offsets[offsets.length - 1];
    if (tokens > rows) {
      throw new IllegalArgumentException(op + ": offsets cover " + tokens + " tokens, the batch has " + rows);
    }
    for (int h = 0; h < kvOf.length; h++) {
      if (kvOf[h] < 0) {
        throw new IllegalArgumentException(op + ": query head " + h + " has KV head " + kvOf[h]);
      }
    }
    if (qCol < 0 || qCol + (long) kvOf.length * headDim > cols) {
      throw new IllegalArgumentException(op + ": " + kvOf.length + " query heads of " + headDim + " from column "
          + qCol + " do not fit in " + cols + " columns");
    }
    if (outRows < tokens || outCols != kvOf.length * headDim) {
      throw new IllegalArgumentException(op + ": output [" + outRows + ", " + outCols + "] cannot hold " + tokens
          + " tokens of " + kvOf.length + " heads x " + headDim);
    }
    return tokens;
  }

  /** The int32 metadata: offsets, kvOf, then {@code past} when not null. */
  public int[] meta(int[] past) {
    int[] m = new int[offsets.length + kvOf.length + (past == null ? 0 : past.length)];
    System.arraycopy(offsets, 0, m, 0, offsets.length);
    System.arraycopy(kvOf, 0, m, offsets.length, kvOf.length);
    if (past != null) {
      System.arraycopy(past, 0, m, offsets.length + kvOf.length, past.length);
    }
    return m;
  }

  /** Bytes of {@code n} int32 values rounded up to 8 (the cache addresses follow them). */
  public static long alignedIntBytes(int n) {
    return (4L * n + 7) & ~7L;
  }

  /** {@code tp_seq_of}: the sequence of token {@code t}, the last {@code s} with {@code offsets[s] <= t}. */
  public static int sequenceOf(int[] offsets, int t) {
    int lo = 0;
    int hi = offsets.length - 2;
    while (lo < hi) {
      int mid = (lo + hi + 1) >>> 1;
      if (offsets[mid] <= t) {
        lo = mid;
      } else {
        hi = mid - 1;
      }
    }
    return lo;
  }

  /**
   * {@code tp_group} applied until done: the passes of the block of KV head {@code g}, each the query heads (at
   * most {@link #MAX_GROUP}) it serves together.
   */
  public static List<int[]> group(int[] kvOf, int g) {
    List<int[]> passes = new ArrayList<>();
    int from = 0;
    while (from < kvOf.length) {
      int[] hs = new int[MAX_GROUP];
      int n = 0;
      int h = from;
      for (; h < kvOf.length && n < MAX_GROUP; h++) {
        if (kvOf[h] == g) {
          hs[n++] = h;
        }
      }
      from = h;
      if (n > 0) {
        passes.add(java.util.Arrays.copyOf(hs, n));
      }
    }
    return passes;
  }
}
