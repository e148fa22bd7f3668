package org.sparktp.nn.gen;

import java.io.Serializable;

/**
 * Stops a row on what its new tokens spell (stop strings, through a tokenizer). Every rank of a group
 * evaluates it on the same tokens, so it must be a deterministic function of them.
 */
@FunctionalInterface
public interface StopCheck extends Serializable {

  /** True when the row ends after {@code generated[0 .. count)}. */
  boolean stops(int[] generated, int count);
}
