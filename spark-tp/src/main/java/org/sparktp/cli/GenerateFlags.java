package org.sparktp.cli;

import java.util.List;
import org.sparktp.spark.TensorParallelModel;

/**
 * The flags of {@code infer --task generate}: {@code --max-new-tokens N --temperature T --top-k K --top-p P
 * --seed S --stop STR (repeatable) --repetition-penalty R} ({@code --task} itself is set by {@link Infer}).
 */
final class GenerateFlags {
  private GenerateFlags() {}

  /** {@code --max-new-tokens} when not given. */
  static final int MAX_NEW_TOKENS_DEFAULT = 64;
  static final List<String> GENERATE = List.of("max-new-tokens", "temperature", "top-k", "top-p", "seed", "stop",
      "repetition-penalty");

  static void apply(Args a, TensorParallelModel model) {
    String task = a.get("task", null);
    boolean generate = "generate".equalsIgnoreCase(task);
    for (String f : GENERATE) {
      if (a.has(f) && !generate) {
        throw new UsageException("--" + f + " is a flag of --task generate");
      }
    }
    if (!generate) {
      return;
    }
    for (String f : List.of("pooling", "normalize")) {
      if (a.has(f)) {
        throw new UsageException("--" + f + " is a flag of --task embed; --task generate writes generated text and"
            + " ids, not an embedding: drop --" + f);
      }
    }
    model.setMaxNewTokens(a.intValue("max-new-tokens", MAX_NEW_TOKENS_DEFAULT, 1));
    if (a.has("temperature")) {
      model.setTemperature(number(a, "temperature", 0));
    }
    if (a.has("top-k")) {
      model.setTopK(a.intValue("top-k", 0, 0));
    }
    if (a.has("top-p")) {
      double p = number(a, "top-p", Double.MIN_VALUE);
      if (p > 1) {
        throw new UsageException("--top-p takes a number in (0, 1], got " + p);
      }
      model.setTopP(p);
    }
    if (a.has("repetition-penalty")) {
      model.setRepetitionPenalty(number(a, "repetition-penalty", Double.MIN_VALUE));
    }
    if (a.has("seed")) {
      try {
        model.setSeed(Long.parseLong(a.get("seed", "0").trim()));
      } catch (NumberFormatException e) {
        throw new UsageException("--seed takes an integer, got '" + a.get("seed", "") + "'");
      }
    }
    if (a.has("stop")) {
      model.setStop(a.all("stop").toArray(new String[0])); // --stop may repeat
    }
  }

  private static double number(Args a, String flag, double min) {
    String v = a.get(flag, "");
    double d;
    try {
      d = Double.parseDouble(v.trim());
    } catch (NumberFormatException e) {
      throw new UsageException("--" + flag + " takes a number, got '" + v + "'");
    }
    if (!(d >= min) || Double.isInfinite(d)) {
      throw new UsageException("--" + flag + " takes a number >= " + (min == Double.MIN_VALUE ? "0 (exclusive)" : min)
          + ", got " + v);
    }
    return d;
  }
}
