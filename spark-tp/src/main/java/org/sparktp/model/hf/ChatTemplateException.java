package org.sparktp.model.hf;

/**
 * A chat template that cannot be rendered for a conversation: the template called {@code raise_exception}
 * (its message is kept as written), does not parse, or fails while rendering. The message names the model.
 */
public final class ChatTemplateException extends IllegalArgumentException {
  public ChatTemplateException(String message) {
    super(message);
  }
}
