package org.sparktp.nn.plan;

import java.io.Serializable;
import java.util.List;
import org.sparktp.nn.ops.Op;
import org.sparktp.tensor.DType;

/**
 * A model before planning, whatever format it came from: its ops (unplanned), the rows it takes and the output it
 * gives each row ({@link ModelRows}), and how its plan reads in {@code explain}. A model's loader makes it (a
 * spark-tp layer list: {@link LayerGraph}; a Hugging Face transformer and its task: {@link TransformerGraph});
 * {@link Plan#build} places its ops for a group of ranks. Holds no weights.
 */
public interface ModelGraph extends ModelRows, Serializable {

  /** The model's ops, unplanned (a linear's mode is the planner's choice). */
  List<Op> ops();

  /** The width of the replicated activation the first op takes (the planner starts from it). */
  int inputWidth();

  /** The transformer this graph is (its model, task and truncation), for generation. */
  default TransformerGraph transformer() {
    throw new IllegalStateException("This model takes " + describeInput() + "; it is not a transformer with a task");
  }

  /** {@code plan} (of this graph) as text: its ops, layouts, collectives and weight bytes per rank. */
  String explain(Plan plan);

  /**
   * The precision lines of {@code explain}: the storage dtype {@code dtype} of the linears, the GEMM {@code kernel},
   * the weight bytes per rank in that dtype and the dtype of the activations between ops.
   */
  String explainPrecision(Plan plan, DType dtype, String kernel, DType activations);
}
