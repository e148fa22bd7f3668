package org.sparktp.nn.plan;

import java.io.Serializable;
import java.util.List;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.ops.Op;
import org.sparktp.tensor.DType;

/**
 * A model before planning, whatever format it came from: its ops (unplanned), the rows it takes and the output it
 * gives each row, and how its plan reads in {@code explain}. A model's loader makes it (a spark-tp layer list:
 * {@link LayerGraph}; a Hugging Face transformer and its task: {@link TransformerGraph}); {@link Plan#build} places
 * its ops for a group of ranks. Holds no weights.
 */
public interface ModelGraph extends Serializable {

  /** The model's ops, unplanned (a linear's mode is the planner's choice). */
  List<Op> ops();

  /** The kind of rows it takes: vectors, one id, or a list of ids per row (a bag, or a sequence of tokens). */
  InputBatch.Kind inputKind();

  /** True when rows are ids (one per row, or a list per row), not vectors. */
  default boolean takesIds() {
    return inputKind() != InputBatch.Kind.DENSE;
  }

  /** True when each row is a list of ids (a bag, or a sequence of tokens). */
  default boolean takesBags() {
    return inputKind() == InputBatch.Kind.BAGS;
  }

  /** The width of a vector row, or the vocabulary size for ids. */
  int inputDim();

  /** The width of the replicated activation the first op takes (the planner starts from it). */
  int inputWidth();

  /** Width of each row's output. */
  int outputDim();

  /** What a row is, for errors ({@code vectors of width 784}, {@code a sequence of token ids per row}). */
  String describeInput();

  /** True when a row is a sequence of tokens (micro-batches are bounded by a token budget too). */
  default boolean sequences() {
    return false;
  }

  /** The longest row accepted before the barrier stage, in ids (0: no limit). */
  default int maxTokens() {
    return 0;
  }

  /** True when each row's output is one number (a score). */
  default boolean scalarOutput() {
    return false;
  }

  /** A rank's own rows as they go to the group: checked, and cut where the model says so. As they are by default. */
  default InputBatch admit(InputBatch mine) {
    return mine;
  }

  /** True when each row's output is new tokens (task generate). */
  default boolean generates() {
    return false;
  }

  /** The length a row of text is cut to when it is tokenized (truncation on), else 0. */
  default int truncateTo() {
    return 0;
  }

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
