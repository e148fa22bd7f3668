package org.sparktp.nn.ops;

import org.sparktp.nn.DistTensor;
import org.sparktp.nn.RunContext;

/**
 * An op on one rank. {@link #forward} consumes its input in every case: it returns it (in place), or
 * closes it and returns a new activation, and when it throws it has closed it, so that a failed
 * collective leaks nothing and the caller sees the first cause.
 */
public interface OpKernel {

  DistTensor forward(DistTensor x, Tokens tokens, RunContext ctx);
}
