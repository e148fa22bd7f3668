package org.sparktp.sql;

import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.execution.SparkPlan;
import org.apache.spark.sql.execution.SparkStrategy;
import scala.collection.immutable.Seq;

/** Plans a {@link TpInference} as a {@link TpInferenceExec} over its planned child. */
final class TpStrategy extends SparkStrategy {
  @Override
  public Seq<SparkPlan> apply(LogicalPlan plan) {
    if (plan instanceof TpInference t) {
      return Sc.seq(new TpInferenceExec(t.call(), t.result(), planLater(t.child())));
    }
    return Sc.seq();
  }
}
