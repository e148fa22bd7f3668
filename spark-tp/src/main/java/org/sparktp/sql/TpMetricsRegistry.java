package org.sparktp.sql;

import org.sparktp.spark.TensorParallelModel;
import org.sparktp.spark.TpMetrics;

/** The metrics of the last tensor-parallel call a query of this JVM ran ({@link TensorParallelExtensions#lastMetrics}). */
final class TpMetricsRegistry {
  private static volatile TensorParallelModel last;

  private TpMetricsRegistry() {}

  static void record(TpCall call, TensorParallelModel model) {
    last = model;
  }

  static TpMetrics last() {
    TensorParallelModel m = last;
    return m == null ? null : m.lastMetrics();
  }
}
