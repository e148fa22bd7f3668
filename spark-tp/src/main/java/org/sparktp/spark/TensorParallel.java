package org.sparktp.spark;

import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.sparktp.backend.Activation;
import org.sparktp.model.LayerModel;
import org.sparktp.nn.Parallel;

/**
 * Single tensor-parallel layers on a DataFrame, for weights held in memory as {@code float[]} in
 * PyTorch's {@code nn.Linear} layout ({@code weight} is {@code [out, in]} row-major, {@code bias} is
 * {@code [out]} or null). Each call runs a {@link TensorParallelModel} of one layer (or two) over
 * {@code df}: the input column is {@code array<float>}, {@code array<double>} or an ML vector of width
 * {@code in}; {@code outputCol} ({@code array<float>}) is appended and every other column passes through.
 * The other settings ({@code groups}, {@code batchSize}, backend, null policy) come from the
 * {@code spark.tp.*} session conf. Each call makes a new model, so repeated calls load their shards
 * again; keep a {@link TensorParallelModel} to reuse loaded shards.
 */
public final class TensorParallel {
  private TensorParallel() {}

  /**
   * {@code Y = X W^T + b} with {@code W} split by output rows across the {@code tpSize} ranks: rank
   * {@code i} computes {@code Y_i = X W_i^T + b_i} for its slice of the output columns; each row's
   * output is assembled on the rank that owns the row (all-to-all).
   */
  public static Dataset<Row> columnParallelLinear(Dataset<?> df, String inputCol, String outputCol, float[] weight,
      float[] bias, int in, int out, int tpSize) {
    return linear(df, inputCol, outputCol, weight, bias, in, out, tpSize, Parallel.COLUMN);
  }

  /**
   * {@code Y = X W^T + b} with {@code W} split by input columns: rank {@code i} computes the partial sum
   * {@code X_i W_i^T} from its slice of the input; the partial sums are reduced onto the rank that owns
   * each row (reduce-scatter) and the bias is added once.
   */
  public static Dataset<Row> rowParallelLinear(Dataset<?> df, String inputCol, String outputCol, float[] weight,
      float[] bias, int in, int out, int tpSize) {
    return linear(df, inputCol, outputCol, weight, bias, in, out, tpSize, Parallel.ROW);
  }

  /**
   * The Megatron MLP {@code Y = act(X W1^T + b1) W2^T + b2}: {@code W1} ({@code [hidden, in]}) column-split,
   * {@code W2} ({@code [out, hidden]}) row-split, so there is no collective between the two GEMMs and one
   * reduction at the end. {@code activation} is a name such as {@code gelu}, {@code gelu_tanh},
   * {@code relu}, {@code silu}.
   */
  public static Dataset<Row> mlp(Dataset<?> df, String inputCol, String outputCol, float[] w1, float[] b1,
      String activation, float[] w2, float[] b2, int in, int hidden, int out, int tpSize) {
    Activation act = Activation.parse(activation);
    return run(LayerModel.builder(in).linear("fc1", hidden, w1, b1, Parallel.COLUMN).activation(act)
        .linear("fc2", out, w2, b2, Parallel.ROW).build(), df, inputCol, outputCol, tpSize);
  }

  private static Dataset<Row> linear(Dataset<?> df, String inputCol, String outputCol, float[] weight, float[] bias,
      int in, int out, int tpSize, Parallel mode) {
    return run(LayerModel.builder(in).linear("linear", out, weight, bias, mode).build(), df, inputCol, outputCol,
        tpSize);
  }

  private static Dataset<Row> run(LayerModel model, Dataset<?> df, String inputCol, String outputCol, int tpSize) {
    return new TensorParallelModel(model).setInputCol(inputCol).setOutputCol(outputCol).setTpSize(tpSize)
        .transform(df);
  }
}
