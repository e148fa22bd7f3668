package org.sparktp.spark;

import java.io.Serializable;
import org.apache.spark.sql.types.StructType;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.ops.TransformerPlan;

/**
 * Everything the tasks of one tensor-parallel job need, shipped with the task closure (weights go by
 * broadcast, or each rank reads its own from the checkpoint). {@code settings} holds every
 * {@code spark.tp.*} value as the driver resolved it; the typed fields are read from it.
 */
record TpJob(
    String jobKey,
    String modelId,
    Plan plan,
    String fingerprint,
    ShardSource shards,
    int groups,
    String inputCol,
    int inputOrdinal,
    InputKind kind,
    StructType outSchema,
    int batchSize,
    String backend,
    int blasThreads,
    String dtype,
    java.util.TreeMap<String, String> backendSettings,
    long cacheMaxBytes,
    NullPolicy nullPolicy,
    long commTimeoutMillis,
    boolean retryable,
    int failRank,
    CommFactory comm,
    TpMetrics metrics,
    org.sparktp.TpSettings settings,
    TransformerPlan transformer,
    int batchTokens,
    GenerateJob generate) implements Serializable {

  int tpSize() {
    return transformer != null ? transformer.tpSize() : plan.tpSize();
  }

  /** Model width checked against each row: the input width, or the vocabulary for ids and sequences. */
  int checkWidth() {
    return transformer != null ? transformer.model().vocab() : plan.inputDim();
  }

  /** Longest sequence accepted before the barrier stage (0: not a sequence model, or truncation is on). */
  int maxTokens() {
    return transformer == null || transformer.truncate() ? 0 : transformer.model().maxPositions()
        - (generate == null ? 0 : generate.params().maxNewTokens());
  }

  /** What {@link #maxTokens} is, for errors. */
  String tokenLimit() {
    return transformer == null ? null : generate == null ? "the model's max_position_embeddings (" + maxTokens() + ")"
        : maxTokens() + " (the model's max_position_embeddings " + transformer.model().maxPositions()
            + " minus maxNewTokens " + generate.params().maxNewTokens() + ")";
  }

  /** Width of each row's output. */
  int outputDim() {
    return transformer != null ? transformer.outputDim() : plan.outputDim();
  }

  /** True when each row's output is one double ({@code score}). */
  boolean scalarOutput() {
    return transformer != null && transformer.task() == Task.SCORE;
  }

  String explain() {
    return transformer != null ? transformer.explain() : plan.explain();
  }

  /**
   * The storage type of the activations between ops ({@code spark.tp.activation-dtype} resolved on the driver
   * against the weights' dtype; carried in {@link #backendSettings}); f32 when absent.
   */
  org.sparktp.tensor.DType activationDtype() {
    String v = backendSettings == null ? null : backendSettings.get(org.sparktp.TpConf.ACTIVATION_DTYPE);
    return v == null ? org.sparktp.tensor.DType.F32
        : org.sparktp.backend.Precision.activation(v, org.sparktp.tensor.DType.F32, org.sparktp.TpConf.ACTIVATION_DTYPE);
  }

  /** Bytes of weights rank {@code rank} will hold, in the weights' storage dtype (the shard cache makes room for them). */
  long weightBytes(int rank) {
    if (transformer != null) {
      return transformer.weightBytes(rank);
    }
    return dtype == null ? plan.weightBytes(rank)
        : plan.weightBytes(rank, org.sparktp.tensor.DType.parseStorage(dtype, org.sparktp.TpConf.DTYPE));
  }
}
