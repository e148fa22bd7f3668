package org.sparktp.nn;

import java.util.Locale;

/** How a linear layer's weight is split: chosen by the planner ({@code AUTO}) or forced. */
public enum Parallel {
  AUTO,
  COLUMN,
  ROW,
  REPLICATED;

  public String id() {
    return name().toLowerCase(Locale.ROOT);
  }

  public static Parallel parse(String s) {
    if (s == null) {
      return AUTO;
    }
    for (Parallel p : values()) {
      if (p.id().equals(s.trim().toLowerCase(Locale.ROOT))) {
        return p;
      }
    }
    throw new IllegalArgumentException("Unknown parallel mode '" + s + "'; use one of: auto, column, row, replicated");
  }
}
