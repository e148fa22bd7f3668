package org.sparktp.nn.ops;

import java.util.List;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.RunContext;

/**
 * An op on one rank. {@link #forward} consumes its input in every case: it returns it (in place), or
 * closes it and returns a new activation, and when it throws it has closed it, so that a failed
 * collective leaks nothing and the caller sees the first cause.
 */
public interface OpKernel {

  DistTensor forward(DistTensor x, Tokens tokens, RunContext ctx);

  /**
   * Runs {@code kernels} (of {@code ops}, in order) on {@code x} (consumed; null before an embedding, whose input is
   * the ids) with the op boundaries of {@link RunContext#store}: each op gets its input widened to f32 (unless it
   * {@linkplain Op#takesStored takes it stored}) and its output is stored in the activation dtype, except the last
   * op's when {@code storeLast} is false (a model's output is not rounded). The result may be stored.
   */
  static DistTensor runAll(List<Op> ops, List<OpKernel> kernels, DistTensor x, Tokens tokens, RunContext ctx,
      boolean storeLast) {
    DistTensor h = x;
    try {
      for (int i = 0; i < kernels.size(); i++) {
        if (h != null && !ops.get(i).takesStored()) {
          h = ctx.widen(h);
        }
        DistTensor in = h;
        h = null; // consumed by the kernel, also when it throws
        h = kernels.get(i).forward(in, tokens, ctx);
        if (storeLast || i < kernels.size() - 1) {
          h = ctx.store(h);
        }
      }
      return h;
    } catch (RuntimeException e) {
      if (h != null && !h.local().isClosed()) {
        AttentionOp.closeQuietly(h, e);
      }
      throw e;
    }
  }
}
