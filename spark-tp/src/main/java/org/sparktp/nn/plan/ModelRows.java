package org.sparktp.nn.plan;

import org.sparktp.nn.InputBatch;

/**
 * What a model takes and gives per row, whatever format it came from: the input kind and width, the output width,
 * and the row-level rules of its task. A {@link ModelGraph} says it; its {@link ModelPlan} passes it on unchanged
 * (planning changes how the work is split, never what a row is).
 */
public interface ModelRows {

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

  /** True when each row's output is new tokens (task generate: decoded by the generator above the ops). */
  default boolean generates() {
    return false;
  }

  /** The length a row of text is cut to when it is tokenized (truncation on), else 0. */
  default int truncateTo() {
    return 0;
  }
}
