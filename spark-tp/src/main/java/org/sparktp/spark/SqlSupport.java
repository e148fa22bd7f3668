package org.sparktp.spark;

import org.apache.spark.SparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;

/** What the SQL layer ({@code org.sparktp.sql}) needs from this package's internals, kept in one place. */
public final class SqlSupport {
  private SqlSupport() {}

  /** Groups a job of {@code tpSize} ranks gets when none are asked for: as many as the task slots allow (0 if none fit). */
  public static int defaultGroups(SparkContext sc, int tpSize) {
    return Slots.of(sc) / tpSize;
  }

  /** The task slots of {@code sc} as a barrier stage counts them. */
  public static int slots(SparkContext sc) {
    return Slots.of(sc);
  }

  /**
   * Throws {@link IllegalStateException}, saying what to change, when a barrier stage of {@code groups x tpSize}
   * tasks cannot start on {@code sc} (too few task slots after waiting up to {@code waitMillis} for executors, or
   * dynamic allocation): the checks {@code transform} makes before its job, made when a SQL query is analysed.
   */
  public static void checkSlots(SparkContext sc, int tpSize, int groups, long waitMillis) {
    int slots = Slots.await(sc, Math.max(1, groups) * tpSize, waitMillis);
    Slots.check(Slots.dynamicAllocation(sc), slots, groups == 0 ? Slots.defaultGroups(slots, tpSize) : groups,
        tpSize);
  }

  /** True when {@code m} is a Hugging Face model whose directory has a {@code tokenizer.json}. */
  public static boolean hasTokenizer(TensorParallelModel m) {
    return m.loaded.tokenizerDir() != null;
  }

  /** The model directory of a Hugging Face model, or null for a layer-list model. */
  public static String hfDirectory(TensorParallelModel m) {
    return m.loaded.hasTasks() ? m.loaded.dir : null;
  }

  /**
   * {@code df} with {@code idsCol} ({@code array<int>}) appended: the text of {@code textCol} tokenized with the
   * tokenizer of {@code m}'s directory, special tokens added as its post-processor says (a null text gives null).
   */
  public static Dataset<Row> tokenize(Dataset<Row> df, String textCol, String idsCol, TensorParallelModel m) {
    return Tokenize.apply(df, textCol, idsCol, m.loaded.tokenizerDir(), 0, true, m.chatTemplateVariables());
  }
}
