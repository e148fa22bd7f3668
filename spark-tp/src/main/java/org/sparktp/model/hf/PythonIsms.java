package org.sparktp.model.hf;

import com.hubspot.jinjava.interpret.JinjavaInterpreter;
import com.hubspot.jinjava.lib.filter.Filter;
import java.beans.FeatureDescriptor;
import java.time.ZonedDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import jinjava.javax.el.ELContext;
import jinjava.javax.el.ELResolver;

/**
 * What published chat templates take from Python and jinjava lacks: {@code str} methods called on strings
 * ({@code .startswith}, {@code .strip()}, {@code .split}, ...), transformers' {@code tojson} (Python's
 * {@code json.dumps}: {@code ", "} and {@code ": "} separators, non-ASCII kept, {@code indent}), Python's
 * {@code strftime} codes for {@code strftime_now}, and the reversing slice {@code [::-1]}.
 */
final class PythonIsms {
  private PythonIsms() {}

  /** {@code x[::-1]} (jinjava slices have no step) becomes {@code x|reverse|list}. */
  private static final Pattern REVERSE_SLICE = Pattern.compile("\\[\\s*:\\s*:\\s*-1\\s*\\]");

  /** The template as jinjava should see it: {@code [::-1]} rewritten, and one trailing newline dropped (as Jinja's
   * default {@code keep_trailing_newline=False} does). */
  static String rewrite(String template) {
    String t = template.endsWith("\n") ? template.substring(0, template.length() - 1) : template;
    return REVERSE_SLICE.matcher(t).replaceAll("|reverse|list");
  }

  /** Resolves Python {@code str} methods on Java strings; everything else falls through to jinjava's resolvers. */
  static final class StringMethods extends ELResolver {
    @Override
    public Object invoke(ELContext context, Object base, Object method, Class<?>[] paramTypes, Object[] params) {
      if (!(base instanceof String s) || method == null) {
        return null;
      }
      Object[] a = params == null ? new Object[0] : params;
      Object out = call(s, method.toString(), a);
      if (out != NONE) {
        context.setPropertyResolved(true);
        return out;
      }
      return null;
    }

    @Override
    public Class<?> getCommonPropertyType(ELContext context, Object base) {
      return null;
    }

    @Override
    public Iterator<FeatureDescriptor> getFeatureDescriptors(ELContext context, Object base) {
      return null;
    }

    @Override
    public Class<?> getType(ELContext context, Object base, Object property) {
      return null;
    }

    @Override
    public Object getValue(ELContext context, Object base, Object property) {
      return null;
    }

    @Override
    public boolean isReadOnly(ELContext context, Object base, Object property) {
      return true;
    }

    @Override
    public void setValue(ELContext context, Object base, Object property, Object value) {}
  }

  private static final Object NONE = new Object();

  static Object call(String s, String name, Object[] a) {
    return switch (name) {
      case "startswith" -> anyOf(a[0], p -> s.startsWith(p));
      case "endswith" -> anyOf(a[0], p -> s.endsWith(p));
      case "strip" -> rstrip(lstrip(s, chars(a)), chars(a));
      case "lstrip" -> lstrip(s, chars(a));
      case "rstrip" -> rstrip(s, chars(a));
      case "split" -> split(s, a.length > 0 ? (String) a[0] : null, a.length > 1 ? ((Number) a[1]).intValue() : -1);
      case "upper" -> s.toUpperCase(Locale.ROOT);
      case "lower" -> s.toLowerCase(Locale.ROOT);
      case "title" -> title(s);
      case "capitalize" -> s.isEmpty() ? s : s.substring(0, 1).toUpperCase(Locale.ROOT)
          + s.substring(1).toLowerCase(Locale.ROOT);
      case "replace" -> a.length > 2 ? replaceN(s, (String) a[0], (String) a[1], ((Number) a[2]).intValue())
          : s.replace((String) a[0], (String) a[1]);
      case "find" -> (long) s.indexOf((String) a[0]);
      case "count" -> (long) (s.isEmpty() && ((String) a[0]).isEmpty() ? 1
          : ((String) a[0]).isEmpty() ? s.length() + 1 : s.split(Pattern.quote((String) a[0]), -1).length - 1);
      case "join" -> join(s, a[0]);
      default -> NONE;
    };
  }

  private interface StrTest {
    boolean test(String prefix);
  }

  private static boolean anyOf(Object arg, StrTest t) {
    if (arg instanceof Collection<?> c) { // Python accepts a tuple of prefixes
      for (Object o : c) {
        if (t.test(String.valueOf(o))) {
          return true;
        }
      }
      return false;
    }
    return t.test(String.valueOf(arg));
  }

  private static String chars(Object[] a) {
    return a.length == 0 || a[0] == null ? null : a[0].toString();
  }

  private static boolean strips(char c, String chars) {
    return chars == null ? Character.isWhitespace(c) || Character.isSpaceChar(c) : chars.indexOf(c) >= 0;
  }

  static String lstrip(String s, String chars) {
    int i = 0;
    while (i < s.length() && strips(s.charAt(i), chars)) {
      i++;
    }
    return s.substring(i);
  }

  static String rstrip(String s, String chars) {
    int j = s.length();
    while (j > 0 && strips(s.charAt(j - 1), chars)) {
      j--;
    }
    return s.substring(0, j);
  }

  /** Python's {@code str.split}: runs of whitespace without {@code sep}, else every {@code sep}, at most {@code max} times. */
  static List<String> split(String s, String sep, int max) {
    List<String> out = new ArrayList<>();
    if (sep == null) {
      int i = 0;
      int n = s.length();
      while (true) {
        while (i < n && strips(s.charAt(i), null)) {
          i++;
        }
        if (i >= n) {
          return out;
        }
        if (max >= 0 && out.size() == max) {
          out.add(rstrip(s.substring(i), null));
          return out;
        }
        int j = i;
        while (j < n && !strips(s.charAt(j), null)) {
          j++;
        }
        out.add(s.substring(i, j));
        i = j;
      }
    }
    if (sep.isEmpty()) {
      throw new IllegalArgumentException("empty separator");
    }
    int from = 0;
    int at;
    while ((max < 0 || out.size() < max) && (at = s.indexOf(sep, from)) >= 0) {
      out.add(s.substring(from, at));
      from = at + sep.length();
    }
    out.add(s.substring(from));
    return out;
  }

  private static String title(String s) {
    StringBuilder b = new StringBuilder(s.length());
    boolean prevCased = false;
    for (char c : s.toCharArray()) {
      b.append(prevCased ? Character.toLowerCase(c) : Character.toUpperCase(c));
      prevCased = Character.isLetter(c);
    }
    return b.toString();
  }

  private static String replaceN(String s, String from, String to, int n) {
    if (n < 0) {
      return s.replace(from, to);
    }
    StringBuilder b = new StringBuilder();
    int i = 0;
    int at;
    while (n-- > 0 && (at = s.indexOf(from, i)) >= 0) {
      b.append(s, i, at).append(to);
      i = at + from.length();
    }
    return b.append(s.substring(i)).toString();
  }

  private static String join(String sep, Object items) {
    List<Object> xs = elements(items);
    List<String> parts = new ArrayList<>();
    (xs == null ? List.of(items) : xs).forEach(o -> parts.add(String.valueOf(o)));
    return String.join(sep, parts);
  }

  /** The elements of a Jinja sequence (an Iterable or an array), or null when {@code v} is not one. */
  private static List<Object> elements(Object v) {
    List<Object> xs = new ArrayList<>();
    if (v instanceof Iterable<?> it) {
      it.forEach(xs::add);
    } else if (v instanceof Object[] arr) {
      xs.addAll(Arrays.asList(arr));
    } else {
      return null;
    }
    return xs;
  }

  /** transformers' {@code tojson}: {@code json.dumps(x, ensure_ascii=False, indent=indent, sort_keys=sort_keys)}. */
  static final class ToJson implements Filter {
    @Override
    public String getName() {
      return "tojson";
    }

    @Override
    public Object filter(Object var, JinjavaInterpreter interpreter, String... args) {
      Integer indent = args.length > 0 && args[0] != null ? Integer.valueOf(args[0]) : null;
      return dumps(var, indent, false);
    }

    @Override
    public Object filter(Object var, JinjavaInterpreter interpreter, Object[] args, Map<String, Object> kwargs) {
      Object ind = kwargs.containsKey("indent") ? kwargs.get("indent") : args.length > 0 ? args[0] : null;
      Integer indent = ind == null ? null : ((Number) ind).intValue();
      return dumps(var, indent, Boolean.TRUE.equals(kwargs.get("sort_keys")));
    }
  }

  static String dumps(Object v, Integer indent, boolean sortKeys) {
    StringBuilder b = new StringBuilder();
    dump(v, indent, sortKeys, 0, b);
    return b.toString();
  }

  private static void newline(StringBuilder b, Integer indent, int depth) {
    b.append('\n').append(" ".repeat(indent * depth));
  }

  private static void dump(Object v, Integer indent, boolean sortKeys, int depth, StringBuilder b) {
    if (v == null) {
      b.append("null");
    } else if (v instanceof Boolean) {
      b.append(v);
    } else if (v instanceof Double || v instanceof Float) {
      b.append(pyFloat(((Number) v).doubleValue()));
    } else if (v instanceof Number) {
      b.append(v);
    } else if (v instanceof Map<?, ?> m) {
      if (m.isEmpty()) {
        b.append("{}");
        return;
      }
      List<Map.Entry<?, ?>> es = new ArrayList<>(m.entrySet());
      if (sortKeys) {
        es.sort((x, y) -> String.valueOf(x.getKey()).compareTo(String.valueOf(y.getKey())));
      }
      b.append('{');
      for (int i = 0; i < es.size(); i++) {
        b.append(i == 0 ? "" : indent == null ? ", " : ",");
        if (indent != null) {
          newline(b, indent, depth + 1);
        }
        quote(String.valueOf(es.get(i).getKey()), b);
        b.append(": ");
        dump(es.get(i).getValue(), indent, sortKeys, depth + 1, b);
      }
      if (indent != null) {
        newline(b, indent, depth);
      }
      b.append('}');
    } else if (elements(v) != null) {
      List<Object> xs = elements(v);
      if (xs.isEmpty()) {
        b.append("[]");
        return;
      }
      b.append('[');
      for (int i = 0; i < xs.size(); i++) {
        b.append(i == 0 ? "" : indent == null ? ", " : ",");
        if (indent != null) {
          newline(b, indent, depth + 1);
        }
        dump(xs.get(i), indent, sortKeys, depth + 1, b);
      }
      if (indent != null) {
        newline(b, indent, depth);
      }
      b.append(']');
    } else {
      quote(v.toString(), b);
    }
  }

  /** Python's {@code repr(float)}: shortest round-trip digits, {@code 1.0}, {@code 1e-05}, {@code 1e+16}. */
  static String pyFloat(double d) {
    if (Double.isNaN(d)) {
      return "NaN";
    }
    if (Double.isInfinite(d)) {
      return d > 0 ? "Infinity" : "-Infinity";
    }
    String j = Double.toString(d);
    java.math.BigDecimal bd = new java.math.BigDecimal(j);
    int exp = bd.precision() - bd.scale() - 1;
    if (exp < -4 || exp >= 16) {
      String digits = bd.unscaledValue().abs().toString().replaceAll("0+$", "");
      String mant = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
      return (d < 0 ? "-" : "") + mant + "e" + (exp < 0 ? "-" : "+") + String.format(Locale.ROOT, "%02d",
          Math.abs(exp));
    }
    String plain = bd.toPlainString();
    return plain.contains(".") ? plain : plain + ".0";
  }

  private static void quote(String s, StringBuilder b) {
    b.append('"');
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      switch (c) {
        case '"' -> b.append("\\\"");
        case '\\' -> b.append("\\\\");
        case '\n' -> b.append("\\n");
        case '\r' -> b.append("\\r");
        case '\t' -> b.append("\\t");
        case '\b' -> b.append("\\b");
        case '\f' -> b.append("\\f");
        default -> {
          if (c < 0x20) {
            b.append(String.format(Locale.ROOT, "\\u%04x", (int) c));
          } else {
            b.append(c);
          }
        }
      }
    }
    b.append('"');
  }

  private static final Pattern CODE = Pattern.compile("%(-?)([a-zA-Z%])");

  /** Python's {@code strftime} (C locale) of {@code t}: the codes chat templates use. */
  static String strftime(ZonedDateTime t, String format) {
    Matcher m = CODE.matcher(format);
    StringBuilder b = new StringBuilder();
    while (m.find()) {
      boolean noPad = !m.group(1).isEmpty();
      char c = m.group(2).charAt(0);
      String v = switch (c) {
        case 'Y' -> String.valueOf(t.getYear());
        case 'y' -> String.format(Locale.ROOT, "%02d", t.getYear() % 100);
        case 'm' -> pad(t.getMonthValue(), noPad);
        case 'd' -> pad(t.getDayOfMonth(), noPad);
        case 'e' -> String.format(Locale.ROOT, "%2d", t.getDayOfMonth());
        case 'H' -> pad(t.getHour(), noPad);
        case 'I' -> pad(t.getHour() % 12 == 0 ? 12 : t.getHour() % 12, noPad);
        case 'M' -> pad(t.getMinute(), noPad);
        case 'S' -> pad(t.getSecond(), noPad);
        case 'p' -> t.getHour() < 12 ? "AM" : "PM";
        case 'j' -> noPad ? String.valueOf(t.getDayOfYear()) : String.format(Locale.ROOT, "%03d", t.getDayOfYear());
        case 'b', 'h' -> DateTimeFormatter.ofPattern("MMM", Locale.ENGLISH).format(t);
        case 'B' -> DateTimeFormatter.ofPattern("MMMM", Locale.ENGLISH).format(t);
        case 'a' -> DateTimeFormatter.ofPattern("EEE", Locale.ENGLISH).format(t);
        case 'A' -> DateTimeFormatter.ofPattern("EEEE", Locale.ENGLISH).format(t);
        case '%' -> "%";
        default -> throw new IllegalArgumentException("strftime_now: format code %" + c + " is not supported");
      };
      m.appendReplacement(b, Matcher.quoteReplacement(v));
    }
    m.appendTail(b);
    return b.toString();
  }

  private static String pad(int v, boolean noPad) {
    return noPad ? String.valueOf(v) : String.format(Locale.ROOT, "%02d", v);
  }
}
