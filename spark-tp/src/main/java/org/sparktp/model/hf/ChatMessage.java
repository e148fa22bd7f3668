package org.sparktp.model.hf;

import java.io.Serializable;

/**
 * One message of a conversation, as {@code transformers}' {@code apply_chat_template} takes it: a role
 * ({@code system}, {@code user}, {@code assistant}, ...) and its text. Templates see it as the mapping
 * {@code {"role": ..., "content": ...}}.
 */
public record ChatMessage(String role, String content) implements Serializable {
  public ChatMessage {
    if (role == null) {
      throw new IllegalArgumentException("A chat message needs a role (system, user, assistant, ...), got null");
    }
  }
}
