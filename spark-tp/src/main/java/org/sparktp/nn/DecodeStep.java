package org.sparktp.nn;

import java.util.Map;
import org.sparktp.backend.Tensor;

/**
 * What one forward pass of generation needs besides its tokens, set on the
 * {@link RunContext} by the generator ({@code org.sparktp.nn.gen.Generator}; decode state lives here, below the
 * ops, so that generation sits above them): each sequence's KV cache per attention
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
  private final Sampling sampling;

  /**
   * How the next token is drawn: greedy (argmax), or from the logits divided by {@code temperature}, cut to the
   * {@code topK} largest (0: all) and to the smallest set of probability {@code topP}, with HF's repetition penalty.
   */
  public record Sampling(boolean greedy, double temperature, int topK, double topP, double repetitionPenalty) {}

  public DecodeStep(Map<String, Tensor[]> caches, int[] past, int[] sampleSeqs, long[] seeds, int[] steps,
      int[][] history, Sampling sampling) {
    this.caches = caches;
    this.past = past;
    this.sampleSeqs = sampleSeqs;
    this.seeds = seeds;
    this.steps = steps;
    this.history = history;
    this.sampling = sampling;
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

  public Sampling sampling() {
    return sampling;
  }
}
