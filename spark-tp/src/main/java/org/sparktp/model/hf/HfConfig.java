package org.sparktp.model.hf;

import com.fasterxml.jackson.databind.JsonNode;
import org.sparktp.model.ModelFormatException;

/** Typed reads of a Hugging Face {@code config.json}, each error naming the file and the key. */
final class HfConfig {
  private final JsonNode root;
  private final String file;

  HfConfig(JsonNode root, String file) {
    this.root = root;
    this.file = file;
  }

  String file() {
    return file;
  }

  boolean has(String key) {
    JsonNode n = root.get(key);
    return n != null && !n.isNull();
  }

  JsonNode node(String key) {
    JsonNode n = root.get(key);
    return n == null || n.isNull() ? null : n;
  }

  int integer(String key) throws ModelFormatException {
    JsonNode n = node(key);
    if (n == null) {
      throw new ModelFormatException(file + ": missing key '" + key + "' (an integer)");
    }
    if (!n.canConvertToInt() || !n.isIntegralNumber() || n.asInt() <= 0) {
      throw new ModelFormatException(file + ": key '" + key + "' must be a positive integer, got " + n);
    }
    return n.asInt();
  }

  int integer(String key, int dflt) throws ModelFormatException {
    return has(key) ? integer(key) : dflt;
  }

  int integerOrZero(String key, int dflt) throws ModelFormatException {
    JsonNode n = node(key);
    if (n == null) {
      return dflt;
    }
    if (!n.isIntegralNumber()) {
      throw new ModelFormatException(file + ": key '" + key + "' must be an integer, got " + n);
    }
    return n.asInt();
  }

  double number(String key, double dflt) throws ModelFormatException {
    JsonNode n = node(key);
    if (n == null) {
      return dflt;
    }
    if (!n.isNumber()) {
      throw new ModelFormatException(file + ": key '" + key + "' must be a number, got " + n);
    }
    return n.asDouble();
  }

  String text(String key, String dflt) throws ModelFormatException {
    JsonNode n = node(key);
    if (n == null) {
      return dflt;
    }
    if (!n.isTextual()) {
      throw new ModelFormatException(file + ": key '" + key + "' must be a string, got " + n);
    }
    return n.asText();
  }

  boolean bool(String key, boolean dflt) throws ModelFormatException {
    JsonNode n = node(key);
    if (n == null) {
      return dflt;
    }
    if (!n.isBoolean()) {
      throw new ModelFormatException(file + ": key '" + key + "' must be true or false, got " + n);
    }
    return n.asBoolean();
  }
}
