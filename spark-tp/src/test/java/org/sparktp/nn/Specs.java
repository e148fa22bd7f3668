package org.sparktp.nn;

final class Specs {
  private Specs() {}

  static void checkName(String name) {
    if (name == null || name.isBlank()) {
      throw new IllegalArgumentException("Every weighted layer needs a name");
    }
  }

  static void checkLength(String what, float[] data, long expected, String shape) {
    if (data == null) {
      throw new IllegalArgumentException("Missing tensor '" + what + "': expected " + shape);
    }
    if (LayerSpec.isUnloaded(data) && expected > 0) {
      return;
    }
    if (data.length != expected) {
      throw new IllegalArgumentException("Tensor '" + what + "' has " + data.length + " elements, expected "
          + shape + " = " + expected);
    }
  }
}
