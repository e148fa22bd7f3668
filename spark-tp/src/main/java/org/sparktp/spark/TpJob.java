package org.sparktp.spark;

import java.io.Serializable;
import org.apache.spark.sql.types.StructType;
import org.sparktp.nn.Plan;

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
    long cacheMaxBytes,
    NullPolicy nullPolicy,
    long commTimeoutMillis,
    boolean retryable,
    int failRank,
    CommFactory comm,
    TpMetrics metrics,
    org.sparktp.TpSettings settings) implements Serializable {

  int tpSize() {
    return plan.tpSize();
  }

  /** Model width checked against each row: the input width, or the vocabulary for ids. */
  int checkWidth() {
    return plan.inputDim();
  }
}
