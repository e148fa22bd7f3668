package org.sparktp.nn.ops;

import java.io.Serializable;
import java.util.List;

/**
 * A transformer as ops, without weights: {@code body} takes a ragged token batch to the last hidden
 * states {@code [tokens, hidden]} (embeddings, blocks, final norm); {@code lmHead} names the
 * {@code [vocab, hidden]} output weight (the embedding table when tied), null for an encoder without
 * one. Made by the Hugging Face loader ({@code org.sparktp.model.hf}) or by hand.
 *
 * @param architecture what it is, for plans ({@code bert}, {@code llama}, ...)
 * @param maxPositions the longest sequence ({@code max_position_embeddings})
 */
public record TransformerModel(String architecture, int vocab, int hidden, int maxPositions, boolean causal,
    List<Op> body, String lmHead) implements Serializable {

  public TransformerModel {
    body = List.copyOf(body);
  }

  /** {@code embed} for encoders, {@code logits} for causal LMs. */
  public Task defaultTask() {
    return causal && lmHead != null ? Task.LOGITS : Task.EMBED;
  }
}
