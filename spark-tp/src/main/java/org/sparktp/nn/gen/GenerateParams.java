package org.sparktp.nn.gen;

import java.io.Serializable;
import java.util.Arrays;

/**
 * How a group generates: decoding ({@code temperature == 0}: greedy; else sampling from
 * {@code softmax(logits / temperature)} restricted to the {@code topK} most likely tokens and to the
 * nucleus of mass {@code topP}), the repetition penalty (HF's: a seen token's logit is divided by it when
 * positive, multiplied when negative), when a row stops ({@code eosIds}: finish reason {@code eos};
 * {@code stopIds}: {@code stop}; {@code maxNewTokens}: {@code length}) and the budgets of a step (the KV
 * cache's bytes per rank, the tokens a forward pass takes). Order of the logits processors as in HF:
 * repetition penalty, temperature, top-k, top-p.
 *
 * @param topK 0: no top-k
 * @param topP 1: no nucleus
 * @param kvCacheMaxBytes bound on one rank's KV cache; a row waits until its whole cache fits
 * @param maxBatchTokens tokens one forward pass takes (decode rows take one each, prompts are chunked)
 * @param prefixSharing a row whose prompt starts like a row already in the batch copies that row's keys and values
 *     of the common prefix instead of computing them ({@code spark.tp.generate.prefix-sharing}; issue 21)
 */
public record GenerateParams(int maxNewTokens, double temperature, int topK, double topP, double repetitionPenalty,
    long seed, int[] eosIds, int[] stopIds, long kvCacheMaxBytes, int maxBatchTokens, boolean prefixSharing)
    implements Serializable {

  /** With prefix sharing on (the default). */
  public GenerateParams(int maxNewTokens, double temperature, int topK, double topP, double repetitionPenalty,
      long seed, int[] eosIds, int[] stopIds, long kvCacheMaxBytes, int maxBatchTokens) {
    this(maxNewTokens, temperature, topK, topP, repetitionPenalty, seed, eosIds, stopIds, kvCacheMaxBytes,
        maxBatchTokens, true);
  }

  public GenerateParams {
    if (maxNewTokens <= 0) {
      throw new IllegalArgumentException("maxNewTokens must be positive, got " + maxNewTokens);
    }
    if (!(temperature >= 0) || Double.isInfinite(temperature)) {
      throw new IllegalArgumentException("temperature must be >= 0 (0 is greedy), got " + temperature);
    }
    if (topK < 0) {
      throw new IllegalArgumentException("topK must be >= 0 (0 keeps every token), got " + topK);
    }
    if (!(topP > 0 && topP <= 1)) {
      throw new IllegalArgumentException("topP must be in (0, 1] (1 keeps every token), got " + topP);
    }
    if (!(repetitionPenalty > 0) || Double.isInfinite(repetitionPenalty)) {
      throw new IllegalArgumentException("repetitionPenalty must be > 0 (1 is none), got " + repetitionPenalty);
    }
    if (kvCacheMaxBytes <= 0) {
      throw new IllegalArgumentException("The KV cache budget (spark.tp.kv-cache.max-bytes) must be positive, got "
          + kvCacheMaxBytes);
    }
    if (maxBatchTokens <= 0) {
      throw new IllegalArgumentException("The token budget of a step (spark.tp.generate.max-batch-tokens) must be "
          + "positive, got " + maxBatchTokens);
    }
    eosIds = eosIds == null ? new int[0] : eosIds.clone();
    stopIds = stopIds == null ? new int[0] : stopIds.clone();
  }

  /** Greedy decoding of {@code maxNewTokens}, stopping on {@code eosIds}, default budgets. */
  public static GenerateParams greedy(int maxNewTokens, int... eosIds) {
    return new GenerateParams(maxNewTokens, 0, 0, 1, 1, 0, eosIds, null, 1L << 30, 2048);
  }

  /** What the LM head's sampler needs of these parameters. */
  public org.sparktp.nn.DecodeStep.Sampling sampling() {
    return new org.sparktp.nn.DecodeStep.Sampling(greedy(), temperature, topK, topP, repetitionPenalty);
  }

  public boolean greedy() {
    return temperature == 0;
  }

  public GenerateParams withSampling(double temperature, int topK, double topP, long seed) {
    return new GenerateParams(maxNewTokens, temperature, topK, topP, repetitionPenalty, seed, eosIds, stopIds,
        kvCacheMaxBytes, maxBatchTokens, prefixSharing);
  }

  public GenerateParams withBudgets(long kvCacheMaxBytes, int maxBatchTokens) {
    return new GenerateParams(maxNewTokens, temperature, topK, topP, repetitionPenalty, seed, eosIds, stopIds,
        kvCacheMaxBytes, maxBatchTokens, prefixSharing);
  }

  /** The same with prefix sharing on or off (issue 21). */
  public GenerateParams withPrefixSharing(boolean on) {
    return new GenerateParams(maxNewTokens, temperature, topK, topP, repetitionPenalty, seed, eosIds, stopIds,
        kvCacheMaxBytes, maxBatchTokens, on);
  }

  public GenerateParams withStops(int[] eosIds, int[] stopIds) {
    return new GenerateParams(maxNewTokens, temperature, topK, topP, repetitionPenalty, seed, eosIds, stopIds,
        kvCacheMaxBytes, maxBatchTokens, prefixSharing);
  }

  public GenerateParams withRepetitionPenalty(double penalty) {
    return new GenerateParams(maxNewTokens, temperature, topK, topP, penalty, seed, eosIds, stopIds,
        kvCacheMaxBytes, maxBatchTokens, prefixSharing);
  }

  @Override
  public String toString() {
    return "GenerateParams[maxNewTokens=" + maxNewTokens + ", temperature=" + temperature + ", topK=" + topK
        + ", topP=" + topP + ", repetitionPenalty=" + repetitionPenalty + ", seed=" + seed + ", eos="
        + Arrays.toString(eosIds) + ", stop=" + Arrays.toString(stopIds) + ", kvCacheMaxBytes=" + kvCacheMaxBytes
        + ", maxBatchTokens=" + maxBatchTokens + ", prefixSharing=" + prefixSharing + "]";
  }
}
