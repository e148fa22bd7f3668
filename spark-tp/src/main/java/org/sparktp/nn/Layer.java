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

  /**
   * True when the op takes its input as it is stored between ops (e.g. bf16, {@link RunContext#activationDtype})
   * instead of widened to f32: layout changes that only move or slice elements, which are exact in any dtype.
   */
  default boolean takesStored() {
    return false;
  }

  /**
   * Runs {@code layers} in order on {@code x} (consumed), with the op boundaries of {@link RunContext#store}: each
   * op gets its input widened to f32 (unless it {@linkplain #takesStored takes it stored}) and its output is
   * stored in the activation dtype. The result is as stored (the caller widens it where it needs f32).
   */
  static DistTensor runAll(java.util.List<Layer> layers, DistTensor x, RunContext ctx) {
    DistTensor h = x;
    try {
      for (Layer l : layers) {
        if (!l.takesStored()) {
          h = ctx.widen(h);
        }
        h = ctx.store(l.forward(h, ctx));
      }
      return h;
    } catch (RuntimeException e) {
      if (!h.local().isClosed()) {
        h.close();
      }
      throw e;
    }
  }

  /** Bytes of weights this rank holds for the op. */
  long weightBytes();

  /** Frees the weight shards; harmless when called again. */
  @Override
  void close();
}
