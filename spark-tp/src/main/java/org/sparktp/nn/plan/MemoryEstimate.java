package org.sparktp.nn.plan;

import java.util.Locale;
import org.sparktp.nn.ops.Slice;
import org.sparktp.nn.ops.Task;
import org.sparktp.tensor.DType;

/**
 * What one rank of a plan needs in memory, from the plan and the job's batch settings alone (before any job): an
 * estimate, upper-bounded where the rows are not known yet.
 *
 * <ul>
 *   <li><b>weights</b>: {@link ModelPlan#weightBytes} in the storage dtype (a tied LM head's packed copy included);
 *   <li><b>load</b>: while the rank model is built, a linear's weight as read and its packed copy coexist: the largest
 *       slice more;
 *   <li><b>KV cache</b> (generation): {@code layers x 2 x kv heads on the rank x head_dim x dtype bytes} per token
 *       ({@link ModelPlan#kvBytesPerToken}) times the tokens of the rows in flight ({@code (prompt + max_new_tokens) x
 *       rows}), capped by {@code spark.tp.kv-cache.max-bytes};
 *   <li><b>activations</b> of one step, f32: {@code (4 x width + 3 x widest GEMM output on the rank) x 4 bytes} per
 *       token the step runs (every rank runs the group's rows);
 *   <li><b>logits</b>: the positions that go through the LM head x the rank's vocabulary slice x 4 bytes (task score:
 *       every position, in chunks of at most {@link #LOGIT_CHUNK_BYTES}; once more on the Java heap).
 * </ul>
 *
 * Off-heap need = weights + max(load, KV cache + activations + logits).
 */
public record MemoryEstimate(int rank, DType storage, long weights, long load, long kvCache, long kvPerToken,
    long kvTokens, long kvCap, long activations, long stepTokens, long logits, long heap) {

  /** Bytes of f32 logits one chunk of task score's LM head holds (the head runs over the positions in chunks). */
  public static final long LOGIT_CHUNK_BYTES = org.sparktp.nn.ops.LmHeadOp.LOGIT_CHUNK_BYTES;

  /**
   * The job's batch settings: rows and tokens (sequences) each rank brings to a micro-batch
   * ({@code spark.tp.batch-size}, {@code spark.tp.batch-tokens}); for generation the tokens of one step
   * ({@code spark.tp.generate.max-batch-tokens}), the prompt length (0: unknown, bounded by the token budget),
   * {@code max_new_tokens} and the KV cache budget ({@code spark.tp.kv-cache.max-bytes}).
   */
  public record Workload(int rowsPerRank, int tokensPerRank, int generateStepTokens, int promptTokens,
      int maxNewTokens, long kvCacheMaxBytes) {}

  /** Off-heap bytes the rank needs at its peak. */
  public long offHeap() {
    return weights + Math.max(load, kvCache + activations + logits);
  }

  /** The rank of {@code plan} that needs the most off-heap memory, with {@code w}. */
  public static MemoryEstimate largest(ModelPlan plan, DType storage, DType activationDtype, Workload w) {
    MemoryEstimate best = null;
    for (int r = 0; r < plan.tpSize(); r++) {
      MemoryEstimate e = of(plan, r, storage, activationDtype, w);
      if (best == null || e.offHeap() > best.offHeap()) {
        best = e;
      }
    }
    return best;
  }

  /** The estimate for rank {@code rank} of {@code plan}, linears stored in {@code storage}. */
  public static MemoryEstimate of(ModelPlan plan, int rank, DType storage, DType activationDtype, Workload w) {
    int p = plan.tpSize();
    long weights = plan.weightBytes(rank, storage);
    String head = plan.sequences() ? plan.graph().transformer().model().lmHead() : null;
    Task task = plan.sequences() ? plan.graph().transformer().task() : null;
    long load = 0;
    int widest = 0;
    int vocabSlice = 0;
    for (Slice s : plan.slices(rank).values()) {
      load = Math.max(load, s.bytes(storage.isFloat() ? storage : DType.F32));
      if (s.tensor().equals(head)) {
        vocabSlice = s.blockRows();
      } else if (s.kind() == Slice.Kind.WEIGHT) {
        widest = Math.max(widest, s.blockRows());
      }
    }
    int width = plan.sequences() ? plan.graph().transformer().model().hidden()
        : Math.max(plan.inputDim(), plan.outputDim());
    boolean seq = plan.sequences();
    int prompt = w.promptTokens();
    // rows a rank brings to a micro-batch: the row bound, and the token budget when the prompt length is known
    long rows = seq && prompt > 0 ? Math.max(1, Math.min(w.rowsPerRank(), w.tokensPerRank() / prompt))
        : w.rowsPerRank();
    long tokensPerRank = !seq ? rows : prompt > 0 ? rows * prompt : w.tokensPerRank();
    long step = p * tokensPerRank;
    long logitRows = 0;
    long kvPerToken = 0;
    long kvTokens = 0;
    long kv = 0;
    if (plan.generates()) {
      step = Math.min(step, w.generateStepTokens());
      logitRows = Math.min(step, p * rows);
      DType kvType = activationDtype != null && activationDtype.isHalf() ? activationDtype : DType.F32;
      kvPerToken = plan.kvBytesPerToken(kvType);
      kvTokens = p * (tokensPerRank + rows * w.maxNewTokens());
      kv = Math.min(w.kvCacheMaxBytes(), kvPerToken * kvTokens);
    } else if (task == Task.SCORE) {
      logitRows = Math.min(step, Math.max(1, LOGIT_CHUNK_BYTES / (4L * Math.max(1, vocabSlice))));
    } else if (task == Task.LOGITS) {
      logitRows = p * rows;
    }
    long act = step * 4L * (4L * width + 3L * widest);
    long logits = logitRows * vocabSlice * 4L;
    long heap = task == Task.SCORE || plan.generates() ? logits : 0;
    return new MemoryEstimate(rank, storage, weights, load, kv, kvPerToken, kvTokens, w.kvCacheMaxBytes(), act, step,
        logits, heap);
  }

  /** The estimate as explain prints it. */
  public String explain() {
    StringBuilder b = new StringBuilder(String.format(Locale.ROOT, "memory per rank (rank %d, estimate): weights %s"
        + " (%s) + the larger of loading (%s: a weight as read while its packed copy is made) and running (KV cache"
        + " %s + activations %s for %d tokens a step + logits %s) = %s off-heap (JavaCPP: "
        + "org.bytedeco.javacpp.maxBytes); Java heap %s%n", rank, size(weights), storage.id(), size(load), size(kvCache),
        size(activations), stepTokens, size(logits), size(offHeap()), size(heap)));
    if (kvPerToken > 0) {
      b.append(String.format(Locale.ROOT, "KV cache: %d bytes per token (layers x 2 x kv heads on the rank x head_dim"
          + " x dtype bytes) x %d tokens in flight ((prompt + max_new_tokens) x rows of the group) = %s, capped by"
          + " spark.tp.kv-cache.max-bytes (%s)%n", kvPerToken, kvTokens, size(kvPerToken * kvTokens), size(kvCap)));
    }
    return b.toString();
  }

  /** Bytes in the largest binary unit below them, two decimals ({@code 1.50 GiB}, {@code 140.25 KiB}, {@code 96 B}). */
  public static String size(long bytes) {
    String[] units = {"KiB", "MiB", "GiB", "TiB"};
    if (bytes < 1024) {
      return bytes + " B";
    }
    int u = 0;
    double v = bytes / 1024.0;
    while (v >= 1024 && u < units.length - 1) {
      v /= 1024;
      u++;
    }
    return String.format(Locale.ROOT, "%.2f %s", v, units[u]);
  }
}
