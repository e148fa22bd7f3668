package org.sparktp.nn.run;

import org.sparktp.backend.Backend;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.RunContext;

/**
 * What the {@link TpRunner} runs: one rank's model of a group of {@link #tpSize} ranks, taking rows of one
 * {@link #inputKind kind} (vectors, one id, a bag of ids, or a sequence of token ids per row) and giving each row an
 * output {@link #outputWidth} wide, in whatever layout its last op leaves (the runner returns each row to its owner).
 */
public interface RowModel extends AutoCloseable {

  int tpSize();

  int rank();

  Backend backend();

  /** The kind of rows it takes. */
  InputBatch.Kind inputKind();

  /** What a row is, for errors ({@code vectors of width 784}, {@code a sequence of token ids}). */
  String describeInput();

  /** Width of a dense row (0 for ids). */
  int inputWidth();

  /** Width of each row's output. */
  int outputWidth();

  /**
   * This rank's own rows as they go to the group: checked, and cut where the model says so (a sequence longer than
   * the model's positions with truncation on). The default takes them as they are.
   */
  default InputBatch admit(InputBatch mine) {
    return mine;
  }

  /** Frees the weights; harmless when called again. */
  @Override
  void close();

  /** Runs the group's rows (identical on every rank); the caller closes the result. */
  DistTensor forward(InputBatch rows, RunContext ctx);

  /** Runs the group's dense rows, already on the backend and replicated (consumed); for models of vectors. */
  default DistTensor forward(DistTensor rows, RunContext ctx) {
    rows.close();
    throw new IllegalStateException("This model takes " + describeInput() + ", not vectors");
  }
}
