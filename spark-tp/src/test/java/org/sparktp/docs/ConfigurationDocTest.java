package org.sparktp.docs;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.sparktp.TpConf;

/**
 * The table of {@code docs/configuration.md} is generated from {@link TpConf}: one row per key constant (every
 * public {@code String} constant whose value starts with {@code spark.tp.}; a value ending in {@code .} is a
 * family of keys), its {@code <NAME>_DEFAULT} and its Javadoc comment as the description. The test fails when
 * the page's table differs from what TpConf declares, so a key added without its comment or without the page
 * regenerated fails the build. Regenerate with
 * {@code mvn -B -ntp -o -q -pl spark-tp test -Dtest=ConfigurationDocTest -Dsparktp.docs.record=true}.
 */
class ConfigurationDocTest {
  static final Path PAGE = Paths.get("..", "docs", "configuration.md").toAbsolutePath().normalize();
  static final Path SOURCE = Paths.get("src", "main", "java", "org", "sparktp", "TpConf.java");
  static final String BEGIN = "<!-- generated from TpConf's key constants by ConfigurationDocTest: edit their Javadoc,"
      + " then run mvn -B -ntp -o -q -pl spark-tp test -Dtest=ConfigurationDocTest -Dsparktp.docs.record=true -->";
  static final String END = "<!-- end of the generated table -->";
  private static final Pattern CONSTANT = Pattern.compile(
      "/\\*\\*((?:(?!\\*/).)*)\\*/\\s*public static final String (\\w+)\\s*=\\s*\"(spark\\.tp\\.[^\"]*)\";",
      Pattern.DOTALL);

  record Key(String name, String key, String description) {}

  /** The key constants of TpConf in declaration order, with their Javadoc, read from its source. */
  static List<Key> keysInSource(String source) {
    List<Key> out = new ArrayList<>();
    Matcher m = CONSTANT.matcher(source);
    while (m.find()) {
      if (!m.group(2).endsWith("_DEFAULT")) {
        out.add(new Key(m.group(2), m.group(3), markdown(m.group(1))));
      }
    }
    return out;
  }

  /** The key constants TpConf declares (by reflection): name to key. */
  static Map<String, String> keysDeclared() throws IllegalAccessException {
    Map<String, String> out = new LinkedHashMap<>();
    for (Field f : TpConf.class.getFields()) {
      if (Modifier.isStatic(f.getModifiers()) && f.getType() == String.class && !f.getName().endsWith("_DEFAULT")
          && ((String) f.get(null)).startsWith("spark.tp.")) {
        out.put(f.getName(), (String) f.get(null));
      }
    }
    return out;
  }

  /** A Javadoc comment as one line of Markdown. */
  static String markdown(String javadoc) {
    String s = javadoc.replaceAll("(?m)^\\s*\\*", " ").replaceAll("\\s+", " ").trim();
    s = s.replaceAll("\\{@code ([^}]*)\\}", "`$1`").replaceAll("\\{@link #?([^}]*)\\}", "`$1`");
    s = s.replaceAll("</?p>", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
    return s.replace("|", "\\|");
  }

  static String defaultOf(Key k) throws IllegalAccessException {
    if (k.key().endsWith(".")) {
      return "(none)";
    }
    try {
      String d = (String) TpConf.class.getField(k.name() + "_DEFAULT").get(null);
      return d.isEmpty() ? "(empty)" : "`" + d + "`";
    } catch (NoSuchFieldException e) {
      throw new AssertionError("TpConf." + k.name() + " (" + k.key() + ") has no " + k.name() + "_DEFAULT", e);
    }
  }

  /** The generated table, between its markers. */
  static String table(List<Key> keys) throws IllegalAccessException {
    StringBuilder b = new StringBuilder(BEGIN).append("\n\n| key | default | meaning |\n| --- | --- | --- |\n");
    for (Key k : keys) {
      String key = k.key().endsWith(".") ? k.key() + "<name>" : k.key();
      b.append("| `").append(key).append("` | ").append(defaultOf(k)).append(" | ").append(k.description())
          .append(" |\n");
    }
    return b.append('\n').append(END).toString();
  }

  /** The page's table between the markers, or null when the markers are missing. */
  static String tableOnPage(String page) {
    int a = page.indexOf(BEGIN);
    int z = page.indexOf(END);
    return a < 0 || z < a ? null : page.substring(a, z + END.length());
  }

  @Test
  void everyKeyConstantOfTpConfHasAJavadocCommentAndADefault() throws Exception {
    List<Key> keys = keysInSource(Files.readString(SOURCE, StandardCharsets.UTF_8));
    Map<String, String> fromSource = new LinkedHashMap<>();
    keys.forEach(k -> fromSource.put(k.name(), k.key()));
    Map<String, String> declared = keysDeclared();
    TreeSet<String> undocumented = new TreeSet<>(declared.keySet());
    undocumented.removeAll(fromSource.keySet());
    assertThat(undocumented).as("TpConf key constants without a /** one-line comment */ right above them").isEmpty();
    assertThat(fromSource).isEqualTo(declared);
    for (Key k : keys) {
      assertThat(k.description()).as("the comment of TpConf." + k.name()).isNotBlank();
      defaultOf(k);
    }
  }

  @Test
  void theTableOfDocsConfigurationIsTheOneTpConfDeclares() throws Exception {
    String expected = table(keysInSource(Files.readString(SOURCE, StandardCharsets.UTF_8)));
    String page = Files.readString(PAGE, StandardCharsets.UTF_8);
    String actual = tableOnPage(page);
    if (Boolean.getBoolean("sparktp.docs.record")) {
      assertThat(actual).as("the markers of the generated table in " + PAGE).isNotNull();
      Files.writeString(PAGE, page.replace(actual, expected), StandardCharsets.UTF_8);
      actual = tableOnPage(Files.readString(PAGE, StandardCharsets.UTF_8));
    }
    assertThat(actual)
        .as("docs/configuration.md's table of spark.tp.* keys differs from TpConf's key constants; regenerate it:"
            + " mvn -B -ntp -o -q -pl spark-tp test -Dtest=ConfigurationDocTest -Dsparktp.docs.record=true")
        .isEqualTo(expected);
  }

  @Test
  void theTableHasOneRowPerKeyAndTheComparisonSeesAMissingRow() throws Exception {
    List<Key> keys = keysInSource(Files.readString(SOURCE, StandardCharsets.UTF_8));
    String t = table(keys);
    assertThat(t.lines().filter(l -> l.startsWith("| `spark.tp.")).count()).isEqualTo(keysDeclared().size());
    assertThat(t).contains("| `spark.tp.comm.timeout` | `" + TpConf.COMM_TIMEOUT_DEFAULT + "` | Bound on every wait")
        .contains("| `spark.tp.models.<name>` | (none) |");
    // a key declared without being documented on the page: the page's table no longer equals the generated one
    String page = "intro\n" + table(keys.subList(0, keys.size() - 1)) + "\nafter\n";
    assertThat(tableOnPage(page)).isNotEqualTo(t);
    assertThat(tableOnPage("no markers")).isNull();
  }
}
