package org.sparktp.spark;

import org.apache.spark.SparkContext;

/** What the SQL layer ({@code org.sparktp.sql}) needs from this package's internals, kept in one place. */
public final class SqlSupport {
  private SqlSupport() {}

  /** Groups a job of {@code tpSize} ranks gets when none are asked for: as many as the task slots allow (0 if none fit). */
  public static int defaultGroups(SparkContext sc, int tpSize) {
    return Slots.of(sc) / tpSize;
  }
}
