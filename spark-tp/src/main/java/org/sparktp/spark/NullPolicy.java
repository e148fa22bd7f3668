package org.sparktp.spark;

import java.util.Locale;
import org.sparktp.TpConf;

/** What a null input value does ({@code spark.tp.null-policy}). */
public enum NullPolicy {
  /** Fail the job, naming the column and the number of nulls in the partition. */
  ERROR,
  /** Drop the row from the output. */
  SKIP,
  /** Keep the row, with a null output. */
  NULL;

  public static NullPolicy parse(String s) {
    String v = s == null ? "" : s.trim().toLowerCase(Locale.ROOT);
    for (NullPolicy p : values()) {
      if (p.name().toLowerCase(Locale.ROOT).equals(v)) {
        return p;
      }
    }
    throw new IllegalArgumentException("Invalid value for " + TpConf.NULL_POLICY + ": '" + s
        + "' (use error, skip or null)");
  }
}
