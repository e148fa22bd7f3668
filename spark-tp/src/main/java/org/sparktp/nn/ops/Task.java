package org.sparktp.nn.ops;

import java.util.Locale;

/**
 * What a transformer computes per row: {@code embed} (pooled last hidden state, {@code [hidden]}),
 * {@code logits} (at the row's last position, {@code [vocab]}), {@code score} (sum of the log-probabilities
 * of tokens 2..n under a causal LM, one number).
 */
public enum Task {
  EMBED, LOGITS, SCORE;

  public static Task parse(String s) {
    for (Task t : values()) {
      if (t.name().equalsIgnoreCase(s == null ? "" : s.trim())) {
        return t;
      }
    }
    throw new IllegalArgumentException("Unknown task '" + s + "': use embed, logits or score");
  }

  public String id() {
    return name().toLowerCase(Locale.ROOT);
  }
}
