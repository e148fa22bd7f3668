package org.sparktp.nn.plan;

import java.io.Serializable;
import java.util.List;
import org.sparktp.backend.Backend;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.Layout;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.ops.Op;
import org.sparktp.tensor.DType;

/**
 * A model planned for a group of {@link #tpSize} ranks, whatever format it came from (a spark-tp layer list,
 * a Hugging Face transformer and its task, a single layer: one {@link Plan} of its {@link ModelGraph}): its ops as the planner placed
 * them, the rows it takes and gives, the slices each rank reads, its weight bytes and its explain text. This is what
 * travels to the ranks of a job; nothing above it asks which format a model came from.
 */
public interface ModelPlan extends Serializable {

  int tpSize();

  /** The model that was planned: its unplanned ops, its rows and its output ({@link ModelGraph#transformer()}). */
  ModelGraph graph();

  /** The planned ops, layout changes included. */
  List<Op> ops();

  /** The kind of rows it takes: vectors, one id, or a list of ids per row (a bag, or a sequence of tokens). */
  InputBatch.Kind inputKind();

  /** The width of a vector row, or the vocabulary size for ids. */
  int inputDim();

  /** Width of each row's output. */
  int outputDim();

  /** The layout of the output (the row return hands each row to its owner accordingly). */
  Layout outputLayout();

  /** What a row is, for errors ({@code vectors of width 784}, {@code a sequence of token ids per row}). */
  String describeInput();

  /** A rank's own rows as they go to the group: checked, and cut where the model says so (see ModelGraph#admit). */
  default InputBatch admit(InputBatch mine) {
    return mine;
  }

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

  /** True when each row's output is new tokens (task generate: decoded by the generator above the ops). */
  default boolean generates() {
    return false;
  }

  /** The length a row of text is cut to when it is tokenized (truncation on), else 0. */
  default int truncateTo() {
    return 0;
  }

  /** Rank {@code rank}'s weight slices as host blocks. */
  RankWeights shard(WeightSource src, int rank);

  /** Rank {@code rank}'s weight slices read straight into tensors on {@code be}; the caller closes the result. */
  RankWeights shard(WeightSource src, int rank, Backend be, DType storage);

  /** Bytes of weights rank {@code rank} holds with linears stored in {@code dtype}, from the plan alone. */
  long weightBytes(int rank, DType dtype);

  /** The plan as text. */
  String explain();

  /** A stable text that identifies the plan (for caches). */
  String fingerprint();
}
