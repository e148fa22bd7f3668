package org.sparktp.nn.ops;

/**
 * A counter-based random number: a pure function of (seed, step, token id), SplitMix64's finalizer over
 * the three mixed. Sampling draws one Gumbel variable per vocabulary entry from it, so a row's draw
 * depends on nothing else: not on the other rows of its batch, nor on which rank holds the token.
 */
final class CounterRng {
  private CounterRng() {}

  static long mix(long z) {
    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
    return z ^ (z >>> 31);
  }

  /** Uniform in (0, 1). */
  static double uniform(long seed, int step, int id) {
    long z = mix(seed * 0x9E3779B97F4A7C15L + 0x632BE59BD9B4E019L);
    z = mix(z ^ ((long) step * 0xC2B2AE3D27D4EB4FL + 0x165667B19E3779F9L));
    z = mix(z ^ ((long) id * 0xD6E8FEB86659FD93L + 0x27D4EB2F165667C5L));
    return ((z >>> 11) + 0.5) * 0x1.0p-53;
  }

  /** A standard Gumbel variable {@code -log(-log u)}. */
  static double gumbel(long seed, int step, int id) {
    return -Math.log(-Math.log(uniform(seed, step, id)));
  }
}
