package org.sparktp.nn.run;

import org.sparktp.backend.Backend;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.plan.TransformerPlan;
import org.sparktp.tensor.DType;

/** Makes a rank's model of any {@link ModelPlan}. */
public final class RankModels {
  private RankModels() {}

  /**
   * Rank {@code rank}'s model of {@code plan} on {@code backend}, its linears (and embedding tables) stored in
   * {@code storage}; takes the tensors it uses out of {@code weights} (the caller still closes them).
   */
  public static RowModel load(ModelPlan plan, int rank, Backend backend, RankWeights weights, DType storage) {
    return plan instanceof TransformerPlan t ? new TransformerRankModel(t, rank, backend, weights, storage)
        : new RankModel((Plan) plan, rank, backend, weights, storage);
  }
}
