package org.sparktp.nn.ops;

import java.util.Locale;

/**
 * What a transformer computes per row: {@code embed} (pooled last hidden state, {@code [hidden]}),
 * {@code logits} (at the row's last position, {@code [vocab]}), {@code score} (sum of the log-probabilities
 * of tokens 2..n under a causal LM, one number), {@code generate} (new tokens after the row, by
 * {@link org.sparktp.nn.gen.Generator}).
 */
public enum Task {
  EMBED, LOGITS, SCORE,
  /** issue 12: the next token of each row, drawn on the vocab-parallel head (see org.sparktp.nn.gen.Generator). */
  GENERATE;

  public static Task parse(String s) {
    for (Task t : values()) {
      if (t.name().equalsIgnoreCase(s == null ? "" : s.trim())) {
        return t;
      }
    }
    throw new IllegalArgumentException("Unknown task '" + s + "': use embed, logits, score or generate");
  }

  public String id() {
    return name().toLowerCase(Locale.ROOT);
  }
}
