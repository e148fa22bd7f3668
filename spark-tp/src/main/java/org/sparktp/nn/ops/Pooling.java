package org.sparktp.nn.ops;

import java.util.Locale;

/** How {@code embed} pools a row's last hidden states: mean over its tokens, the first token, the last. */
public enum Pooling {
  MEAN, CLS, LAST;

  public static Pooling parse(String s) {
    for (Pooling p : values()) {
      if (p.name().equalsIgnoreCase(s == null ? "" : s.trim())) {
        return p;
      }
    }
    throw new IllegalArgumentException("Unknown pooling '" + s + "': use mean, cls or last");
  }

  public String id() {
    return name().toLowerCase(Locale.ROOT);
  }
}
