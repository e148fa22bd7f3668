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
   * stored in the activation dtype, except the last op's when {@code storeLast} is false (a model's output is not
   * rounded). The result may be stored (the caller widens it where it needs f32).
   */
  static DistTensor runAll(java.util.List<Layer> layers, DistTensor x, RunContext ctx, boolean storeLast) {
    DistTensor h = x;
    try {
      for (int i = 0; i < layers.size(); i++) {
        Layer l = layers.get(i);
        if (!l.takesStored()) {
          h = ctx.widen(h);
        }
        h = l.forward(h, ctx);
        if (storeLast || i < layers.size() - 1) {
          h = ctx.store(h);
        }
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
