package org.sparktp.cli;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;

/** Parses {@code --flag value} arguments against the flags a subcommand accepts. */
final class Args {
  private final String command;
  private final Map<String, String> values = new LinkedHashMap<>();
  private final List<String> confs = new ArrayList<>();
  /** Flags that may be given more than once (each value kept, in order). */
  private static final Set<String> REPEATABLE = Set.of("stop");
  private final Map<String, List<String>> repeated = new LinkedHashMap<>();

  private Args(String command) {
    this.command = command;
  }

  /**
   * @param flags the flags this subcommand takes (without {@code --}); {@code conf} may repeat
   * @param switches flags that take no value
   */
  static Args parse(String command, String[] args, int from, Set<String> flags, Set<String> switches) {
    Args a = new Args(command);
    for (int i = from; i < args.length; i++) {
      String s = args[i];
      if (s.startsWith("--")) {
        String name = s.substring(2);
        String value = null;
        int eq = name.indexOf('=');
        if (eq > 0 && !name.startsWith("conf")) {
          value = name.substring(eq + 1);
          name = name.substring(0, eq);
        }
        if (switches.contains(name)) {
          a.values.put(name, "true");
          continue;
        }
        if (!flags.contains(name)) {
          throw new UsageException("unknown flag '" + s + "' for '" + command + "'");
        }
        if (value == null) {
          if (i + 1 >= args.length) {
            throw new UsageException("flag --" + name + " needs a value");
          }
          value = args[++i];
        }
        if (name.equals("conf")) {
          if (!value.contains("=") || value.startsWith("=")) {
            throw new UsageException("--conf takes key=value, got '" + value + "'");
          }
          int sep = value.indexOf('=');
          try {
            org.sparktp.TpConf.check(value.substring(0, sep).trim(), value.substring(sep + 1));
          } catch (IllegalArgumentException e) {
            throw new UsageException("--conf " + e.getMessage());
          }
          a.confs.add(value);
        } else if (REPEATABLE.contains(name)) {
          a.repeated.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
          a.values.put(name, value);
        } else if (a.values.put(name, value) != null) {
          throw new UsageException("flag --" + name + " given twice");
        }
      } else {
        throw new UsageException("unexpected argument '" + s + "' for '" + command + "'");
      }
    }
    return a;
  }

  String get(String name, String def) {
    return values.getOrDefault(name, def);
  }

  String require(String name) {
    String v = values.get(name);
    if (v == null) {
      throw new UsageException("'" + command + "' needs --" + name);
    }
    return v;
  }

  /** Every value of a flag that may repeat ({@code --stop A --stop B}), in order; empty when not given. */
  List<String> all(String name) {
    return repeated.getOrDefault(name, List.of());
  }

  boolean has(String name) {
    return values.containsKey(name);
  }

  int intValue(String name, int def, int min) {
    String v = values.get(name);
    if (v == null) {
      return def;
    }
    try {
      int n = Integer.parseInt(v.trim());
      if (n < min) {
        throw new UsageException("--" + name + " must be at least " + min + ", got " + n);
      }
      return n;
    } catch (NumberFormatException e) {
      throw new UsageException("--" + name + " takes an integer, got '" + v + "'");
    }
  }

  /** The {@code --conf key=value} pairs, in order. */
  Map<String, String> confs() {
    Map<String, String> m = new LinkedHashMap<>();
    for (String c : confs) {
      int eq = c.indexOf('=');
      m.put(c.substring(0, eq).trim(), c.substring(eq + 1));
    }
    return m;
  }
}
