package org.sparktp.spark;

import java.io.Serializable;
import java.util.Map;
import java.util.TreeMap;
import org.apache.spark.sql.types.StructType;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.tensor.DType;

/**
 * Everything the tasks of one tensor-parallel job need, shipped with the task closure (weights go by
 * broadcast, or each rank reads its own from the checkpoint). {@code settings} holds every
 * {@code spark.tp.*} value as the driver resolved it (the model's params included): the tasks read their settings
 * from it, never from their executor's conf. {@code dtype} and {@code activationDtype} are the weights' and the
 * activations' storage types, resolved on the driver ({@code auto} against the checkpoint and the driver's CPU).
 */
record TpJob(
    String jobKey,
    String modelId,
    ModelPlan plan,
    String fingerprint,
    ShardSource shards,
    int groups,
    String inputCol,
    int inputOrdinal,
    InputKind kind,
    StructType outSchema,
    TpSettings settings,
    DType dtype,
    DType activationDtype,
    CommFactory comm,
    TpMetrics metrics,
    GenerateJob generate) implements Serializable {

  TpJob {
    java.util.Objects.requireNonNull(settings, "settings");
    java.util.Objects.requireNonNull(dtype, "dtype");
    java.util.Objects.requireNonNull(activationDtype, "activationDtype");
    if (generate != null && plan.maxTokens() > 0 && generate.params().maxNewTokens() >= plan.maxTokens()) {
      // found here, before the job, not by every rank after the stage's retries
      throw new IllegalArgumentException("maxNewTokens " + generate.params().maxNewTokens() + " leaves no room for"
          + " a prompt: the model's context (max_position_embeddings) is " + plan.maxTokens() + " tokens, prompt"
          + " included; set maxNewTokens (--max-new-tokens, max_new_tokens) to at most " + (plan.maxTokens() - 1));
    }
    if (generate != null) {
      for (int id : generate.params().stopIds()) {
        if (id < 0 || id >= plan.inputDim()) {
          throw new IllegalArgumentException("stopIds holds " + id + ", which is not a token id of the model: its"
              + " vocabulary has ids 0.." + (plan.inputDim() - 1));
        }
      }
    }
  }

  /** What a row that cannot run does ({@code spark.tp.on-error}). */
  OnError onError() {
    return OnError.parse(settings.get(TpConf.ON_ERROR));
  }

  /** Ordinal of the column the tag stage writes a row's error into, or -1 ({@code spark.tp.on-error=fail}). */
  int errorOrdinal() {
    return outSchema.getFieldIndex(OnError.HELPER).isDefined() ? (Integer) outSchema.getFieldIndex(OnError.HELPER)
        .get() : -1;
  }

  /** Rows each rank brings to one step ({@code spark.tp.batch-size}, or the model's {@code batchSize} param). */
  int batchSize() {
    return settings.getInt(TpConf.BATCH_SIZE, 1);
  }

  /** Token budget of one micro-batch of sequences per rank ({@code spark.tp.batch-tokens}). */
  int batchTokens() {
    return settings.getInt(TpConf.BATCH_TOKENS, 1);
  }

  /** {@code auto}, {@code cpu} or {@code cuda} ({@code spark.tp.backend}, or the model's {@code backend} param). */
  String backend() {
    return RankTask.checkBackend(settings.get(TpConf.BACKEND));
  }

  /**
   * The settings a rank's backend is made with: every resolved {@code spark.tp.*} value (the CUDA backend reads its
   * {@code spark.tp.cuda.*} keys), with {@code spark.tp.cpu.threads} the CPU thread budget (that key when set above
   * 1, else {@code spark.tp.cpu.blas-threads}) and {@code spark.tp.dtype} the resolved dtype.
   */
  Map<String, String> backendSettings() {
    Map<String, String> m = new TreeMap<>(settings.asMap());
    int threads = settings.getInt(TpConf.CPU_THREADS, 1);
    m.put(TpConf.CPU_THREADS, Integer.toString(threads != 1 ? threads : settings.getInt(TpConf.CPU_BLAS_THREADS, 1)));
    m.put(TpConf.CPU_GEMM, CpuBackend.checkGemm(settings.get(TpConf.CPU_GEMM)));
    m.put(TpConf.DTYPE, dtype.id());
    m.put(TpConf.ACTIVATION_DTYPE, activationDtype.id());
    return m;
  }

  /** Bound on the weights the executor's shard cache holds ({@code spark.tp.cache.max-bytes}). */
  long cacheMaxBytes() {
    return settings.bytes(TpConf.CACHE_MAX_BYTES);
  }

  NullPolicy nullPolicy() {
    return NullPolicy.parse(settings.get(TpConf.NULL_POLICY));
  }

  long commTimeoutMillis() {
    return settings.durationMillis(TpConf.COMM_TIMEOUT);
  }

  boolean retryable() {
    return settings.bool(TpConf.RETRYABLE);
  }

  /** Tests only: the partition that fails in the stage's first attempt ({@code spark.tp.test.fail-rank}); -1 none. */
  int failRank() {
    return settings.getInt(TpConf.TEST_FAIL_RANK, -1);
  }

  int tpSize() {
    return plan.tpSize();
  }

  /** Model width checked against each row: the input width, or the vocabulary for ids and sequences. */
  int checkWidth() {
    return plan.inputDim();
  }

  /** Longest sequence accepted before the barrier stage (0: no limit: not a sequence model, or truncation is on). */
  int maxTokens() {
    int max = plan.maxTokens();
    return max == 0 ? 0 : max - (generate == null ? 0 : generate.params().maxNewTokens());
  }

  /** What {@link #maxTokens} is, for errors. */
  String tokenLimit() {
    return plan.maxTokens() == 0 ? null : generate == null
        ? "the model's max_position_embeddings (" + maxTokens() + ")"
        : maxTokens() + " (the model's max_position_embeddings " + plan.maxTokens() + " minus maxNewTokens "
            + generate.params().maxNewTokens() + ")";
  }

  /** Width of each row's output. */
  int outputDim() {
    return plan.outputDim();
  }

  /** True when each row's output is one double ({@code score}). */
  boolean scalarOutput() {
    return plan.scalarOutput();
  }

  String explain() {
    return plan.explain();
  }

  /** Bytes of weights rank {@code rank} will hold, in the weights' storage dtype (the shard cache makes room for them). */
  long weightBytes(int rank) {
    return plan.weightBytes(rank, dtype);
  }
}
