package org.sparktp.backend;

import java.util.Locale;

/**
 * Activation functions, exactly as PyTorch defines them.
 *
 * <ul>
 *   <li>{@code GELU}: {@code x * 0.5 * (1 + erf(x / sqrt(2)))} ({@code nn.GELU()})
 *   <li>{@code GELU_TANH}: {@code 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))}
 *       ({@code nn.GELU(approximate='tanh')})
 *   <li>{@code RELU}: {@code max(0, x)}; {@code SILU}: {@code x * sigmoid(x)}; {@code TANH};
 *       {@code SIGMOID}: {@code 1 / (1 + exp(-x))}
 *   <li>{@code SOFTMAX}: {@code exp(x_i - max x) / sum_j exp(x_j - max x)} over each row (needs the
 *       whole row)
 *   <li>{@code IDENTITY}: {@code x}
 * </ul>
 */
public enum Activation {
  GELU("gelu"),
  GELU_TANH("gelu_tanh"),
  RELU("relu"),
  SILU("silu"),
  TANH("tanh"),
  SIGMOID("sigmoid"),
  SOFTMAX("softmax"),
  IDENTITY("identity");

  private final String id;

  Activation(String id) {
    this.id = id;
  }

  /** The name used in configuration files and plans. */
  public String id() {
    return id;
  }

  /** True when each output element depends only on the matching input element. */
  public boolean isElementwise() {
    return this != SOFTMAX;
  }

  /** Parses a name such as {@code gelu} or {@code gelu_tanh}. */
  public static Activation parse(String name) {
    String n = name == null ? "" : name.trim().toLowerCase(Locale.ROOT);
    for (Activation a : values()) {
      if (a.id.equals(n)) {
        return a;
      }
    }
    StringBuilder known = new StringBuilder();
    for (Activation a : values()) {
      known.append(known.length() == 0 ? "" : ", ").append(a.id);
    }
    throw new IllegalArgumentException("Unknown activation '" + name + "'; use one of: " + known);
  }
}
