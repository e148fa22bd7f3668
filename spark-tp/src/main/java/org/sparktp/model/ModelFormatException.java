package org.sparktp.model;

import java.io.IOException;

/**
 * A model directory, a {@code config.json} or a safetensors file that cannot be loaded as it is: the
 * message names the file (and the tensor or layer) and says what is wrong.
 */
public class ModelFormatException extends IOException {
  private static final long serialVersionUID = 1L;

  public ModelFormatException(String message) {
    super(message);
  }

  public ModelFormatException(String message, Throwable cause) {
    super(message, cause);
  }
}
