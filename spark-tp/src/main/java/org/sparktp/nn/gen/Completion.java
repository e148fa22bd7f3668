package org.sparktp.nn.gen;

/**
 * One row's generation: the new token ids (with the EOS or stop token that ended it, as HF's
 * {@code generate} returns them), why it ended, and how many prompt tokens it kept (fewer than the row
 * had when it was truncated from the left).
 */
public record Completion(int[] ids, Finish finish, int promptTokens) {

  /** Why a row stopped. */
  public enum Finish {
    /** An end-of-sequence token of the model. */
    EOS,
    /** A stop id or stop string. */
    STOP,
    /** {@code maxNewTokens} generated. */
    LENGTH;

    public String id() {
      return name().toLowerCase(java.util.Locale.ROOT);
    }
  }
}
