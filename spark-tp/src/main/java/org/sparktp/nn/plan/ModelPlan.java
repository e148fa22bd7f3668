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
public interface ModelPlan extends ModelRows, Serializable {

  int tpSize();

  /** The model that was planned: its unplanned ops, its rows and its output ({@link ModelGraph#transformer()}). */
  ModelGraph graph();

  /** The planned ops, layout changes included. */
  List<Op> ops();

  /**
   * KV cache bytes one token takes on the group's largest rank, keys and values stored as {@code dtype}: the sum of
   * {@link Op#kvFloatsPerToken} over every op, nested ones included.
   */
  default long kvBytesPerToken(DType dtype) {
    long max = 0;
    for (int r = 0; r < tpSize(); r++) {
      max = Math.max(max, (long) dtype.size() * kvFloats(ops(), tpSize(), r));
    }
    return max;
  }

  private static long kvFloats(List<Op> ops, int p, int rank) {
    long n = 0;
    for (Op o : ops) {
      n += o.kvFloatsPerToken(p, rank) + kvFloats(o.children(), p, rank);
    }
    return n;
  }

  /** The layout of the output (the row return hands each row to its owner accordingly). */
  Layout outputLayout();

  // the rows are the graph's: planning never changes what a row is

  @Override
  default InputBatch.Kind inputKind() {
    return graph().inputKind();
  }

  @Override
  default int inputDim() {
    return graph().inputDim();
  }

  @Override
  default int outputDim() {
    return graph().outputDim();
  }

  @Override
  default String describeInput() {
    return graph().describeInput();
  }

  @Override
  default boolean sequences() {
    return graph().sequences();
  }

  @Override
  default int maxTokens() {
    return graph().maxTokens();
  }

  @Override
  default boolean scalarOutput() {
    return graph().scalarOutput();
  }

  @Override
  default InputBatch admit(InputBatch mine) {
    return graph().admit(mine);
  }

  @Override
  default boolean generates() {
    return graph().generates();
  }

  @Override
  default int truncateTo() {
    return graph().truncateTo();
  }

  /** Rank {@code rank}'s weight slices as host blocks. */
  RankWeights shard(WeightSource src, int rank);

  /** Rank {@code rank}'s weight slices read straight into tensors on {@code be}; the caller closes the result. */
  RankWeights shard(WeightSource src, int rank, Backend be, DType storage);

  /** Bytes of weights rank {@code rank} holds with linears stored in {@code dtype}, from the plan alone. */
  long weightBytes(int rank, DType dtype);

  /** Rank {@code rank}'s distinct weight slices, keyed by {@link org.sparktp.nn.ops.Slice#id()}, in op order. */
  java.util.Map<String, org.sparktp.nn.ops.Slice> slices(int rank);

  /** The plan as text. */
  String explain();

  /** A stable text that identifies the plan (for caches). */
  String fingerprint();
}
