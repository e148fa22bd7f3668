package org.sparktp.nn.gen;

import java.util.Map;
import org.sparktp.tensor.Tensor;

/**
 * What one forward pass of generation needs besides its tokens, set on the
 * {@link org.sparktp.nn.RunContext} by the {@link Generator}: each sequence's KV cache per attention
 * layer and how many of its tokens the cache already holds ({@code past}; the step's tokens are at
 * positions {@code past[s] ..}), and for the sequences whose next token is drawn ({@code sampleSeqs}, in
 * order) the seed, the index of the token being drawn, and the ids seen so far (for the repetition
 * penalty).
 */
public final class DecodeStep {
  private final Map<String, Tensor[]> caches;
  private final int[] past;
  private final int[] sampleSeqs;
  private final long[] seeds;
  private final int[] steps;
  private final int[][] history;
  private final GenerateParams params;

  DecodeStep(Map<String, Tensor[]> caches, int[] past, int[] sampleSeqs, long[] seeds, int[] steps,
      int[][] history, GenerateParams params) {
    this.caches = caches;
    this.past = past;
    this.sampleSeqs = sampleSeqs;
    this.seeds = seeds;
    this.steps = steps;
    this.history = history;
    this.params = params;
  }

  /** The caches of layer {@code layer}, one per sequence of the step. */
  public Tensor[] cache(String layer) {
    Tensor[] c = caches.get(layer);
    if (c == null) {
      throw new IllegalStateException("No KV cache for attention layer '" + layer + "' (layers cached: "
          + caches.keySet() + ")");
    }
    return c;
  }

  public int[] past() {
    return past;
  }

  public int[] sampleSeqs() {
    return sampleSeqs;
  }

  public long[] seeds() {
    return seeds;
  }

  public int[] steps() {
    return steps;
  }

  public int[][] history() {
    return history;
  }

  public GenerateParams params() {
    return params;
  }
}
