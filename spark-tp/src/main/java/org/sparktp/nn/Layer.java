package org.sparktp.nn;

/**
 * One op of a model on one rank, holding that rank's weight shards. {@link #forward} consumes its
 * input: it either returns it (an in-place op) or closes it and returns a new activation.
 */
public interface Layer extends AutoCloseable {

  /** What the op does, for plans and errors. */
  String describe();

  /** Runs the op on this rank's part of the activation. */
  DistTensor forward(DistTensor x, RunContext ctx);

  /** Bytes of weights this rank holds for the op. */
  long weightBytes();

  /** Frees the weight shards; harmless when called again. */
  @Override
  void close();
}
