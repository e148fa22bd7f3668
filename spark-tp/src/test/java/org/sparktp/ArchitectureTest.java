package org.sparktp;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The library's package structure, read from its sources: the package dependency graph has no cycle other than the
 * known ones below, and the engine packages do not depend on Spark.
 *
 * <p>A dependency of package {@code P} on package {@code Q} is an {@code import} (plain, static or on demand) of
 * {@code Q} in a file of {@code P}, or a fully-qualified reference {@code org.sparktp.q.Type} in its code (comments and
 * string literals are skipped). A cycle is a strongly connected component of that graph with more than one package.
 */
class ArchitectureTest {

  /**
   * Package cycles that exist today, each owned by the engineer who breaks it. The list only shrinks: a cycle that is
   * not listed fails this test, and so does a listed cycle that no longer exists exactly (remove or narrow its entry
   * when you break it). Each entry is the full set of packages of one strongly connected component.
   */
  private static final List<Set<String>> KNOWN_CYCLES = List.of();

  /** Packages of the engine: they run and are tested without Spark. */
  private static final List<String> ENGINE_PACKAGES = List.of("org.sparktp.tensor", "org.sparktp.shard",
      "org.sparktp.backend", "org.sparktp.comm", "org.sparktp.nn", "org.sparktp.model");

  private static final String ROOT = "org.sparktp";

  private static Sources sources;

  @BeforeAll
  static void readSources() {
    Path dir = Path.of("src/main/java");
    if (!Files.isDirectory(dir)) {
      dir = Path.of("spark-tp/src/main/java");
    }
    assertThat(dir).as("the library's sources (run from the spark-tp module or the repository root)").isDirectory();
    sources = Sources.read(dir);
    assertThat(sources.files).as("Java files under " + dir).hasSizeGreaterThan(50);
  }

  @Test
  void thePackageGraphHasNoCycleBeyondTheKnownOnes() {
    List<Set<String>> cycles = sources.graph.cycles();
    List<String> problems = new ArrayList<>();
    for (Set<String> cycle : cycles) {
      if (!KNOWN_CYCLES.contains(cycle)) {
        problems.add("New package cycle " + cycle + ":\n" + sources.graph.describe(cycle));
      }
    }
    for (Set<String> known : KNOWN_CYCLES) {
      if (!cycles.contains(known)) {
        problems.add("KNOWN_CYCLES lists " + known + ", which is no longer a cycle as such (today's cycles: " + cycles
            + "): remove or narrow its entry in ArchitectureTest so the list only shrinks");
      }
    }
    assertThat(problems).withFailMessage(String.join("\n\n", problems)).isEmpty();
  }

  @Test
  void enginePackagesDoNotDependOnSpark() {
    List<String> problems = new ArrayList<>();
    for (SourceFile file : sources.files) {
      if (!isEngine(file.pkg)) {
        continue;
      }
      for (Reference ref : file.references) {
        if (ref.target.startsWith("org.apache.spark")) {
          problems.add(file.pkg + " depends on Spark: " + ref);
        }
      }
    }
    assertThat(problems).withFailMessage("engine packages " + ENGINE_PACKAGES + " must not use org.apache.spark:\n"
        + String.join("\n", problems)).isEmpty();
  }

  @Test
  void theScannerSeesImportsAndInlineReferencesButNotCommentsOrStrings() {
    String code = "package org.sparktp.a;\n"
        + "import org.sparktp.b.B;\n"
        + "import static org.sparktp.c.C.member;\n"
        + "import org.sparktp.d.*;\n"
        + "/** see {@link org.sparktp.x.X} */\n"
        + "class A { // org.sparktp.y.Y\n"
        + "  String s = \"org.sparktp.z.Z\"; char c = '\"';\n"
        + "  String t = \"\"\"\n    org.sparktp.w.W\n    \"\"\";\n"
        + "  Object o = new org.sparktp.e.sub.E(); org.apache.spark.sql.Dataset<?> ds;\n"
        + "  int n = org.sparktp.f.F.N; Object r = org.sparktp.TpConf.COMM_SHM;\n"
        + "}\n";
    SourceFile file = SourceFile.parse(Path.of("A.java"), code);
    assertThat(file.pkg).isEqualTo("org.sparktp.a");
    assertThat(file.references.stream().map(r -> r.target + "@" + r.line).toList()).containsExactly(
        "org.sparktp.b@2", "org.sparktp.c@3", "org.sparktp.d@4", "org.sparktp.e.sub@11", "org.apache.spark.sql@11",
        "org.sparktp.f@12", "org.sparktp@12");

    // a graph a -> b -> c -> a, d -> a: one cycle {a, b, c}, described edge by edge with an example
    Graph graph = new Graph();
    graph.add("a", "b", new Reference("b", Path.of("A.java"), 1, "b.B"));
    graph.add("b", "c", new Reference("c", Path.of("B.java"), 2, "c.C"));
    graph.add("c", "a", new Reference("a", Path.of("C.java"), 3, "a.A"));
    graph.add("d", "a", new Reference("a", Path.of("D.java"), 4, "a.A"));
    assertThat(graph.cycles()).containsExactly(Set.of("a", "b", "c"));
    assertThat(graph.describe(Set.of("a", "b", "c"))).isEqualTo("  a -> b  (A.java:1 b.B)\n"
        + "  b -> c  (B.java:2 c.C)\n  c -> a  (C.java:3 a.A)");
  }

  private static boolean isEngine(String pkg) {
    // a prefix: org.sparktp.backend covers backend.cpu and backend.cuda (and a sibling such as backends)
    return ENGINE_PACKAGES.stream().anyMatch(pkg::startsWith);
  }

  /** One reference from a file to a package: where it is and how it reads. */
  record Reference(String target, Path file, int line, String text) {
    @Override
    public String toString() {
      return file + ":" + line + " " + text;
    }
  }

  /** A source file's package and every reference it makes to another package (ours or Spark's). */
  static final class SourceFile {
    private static final Pattern PACKAGE = Pattern.compile("\\bpackage\\s+([\\w.]+)\\s*;");
    private static final Pattern IMPORT =
        Pattern.compile("\\bimport\\s+(?:static\\s+)?((?:org\\.sparktp|org\\.apache\\.spark)[\\w.]*?)(\\.\\*)?\\s*;");
    /** A qualified name in code: lower-case package segments, then a type (upper case first). */
    private static final Pattern QUALIFIED =
        Pattern.compile("(?<![\\w.])((?:org\\.sparktp|org\\.apache\\.spark)(?:\\.[a-z_][a-z0-9_]*)*)\\.[A-Z]\\w*");

    final Path path;
    final String pkg;
    final List<Reference> references;

    private SourceFile(Path path, String pkg, List<Reference> references) {
      this.path = path;
      this.pkg = pkg;
      this.references = references;
    }

    static SourceFile parse(Path path, String text) {
      String code = blankCommentsAndStrings(text);
      Matcher p = PACKAGE.matcher(code);
      if (!p.find()) {
        throw new IllegalStateException(path + " has no package declaration");
      }
      String pkg = p.group(1);
      List<Reference> refs = new ArrayList<>();
      int from = p.end();
      Matcher imp = IMPORT.matcher(code);
      int importsEnd = from;
      imp.region(from, code.length());
      while (imp.find()) {
        String name = imp.group(1);
        String target = imp.group(2) != null && isPackageName(name) ? name : packageOf(name);
        refs.add(new Reference(target, path, lineOf(code, imp.start()), "import " + name
            + (imp.group(2) == null ? "" : ".*")));
        importsEnd = imp.end();
      }
      Matcher q = QUALIFIED.matcher(code);
      q.region(importsEnd, code.length());
      while (q.find()) {
        refs.add(new Reference(q.group(1), path, lineOf(code, q.start()), q.group()));
      }
      refs.removeIf(r -> r.target.equals(pkg));
      return new SourceFile(path, pkg, List.copyOf(refs));
    }

    /** The package part of a qualified name: the segments before the first that starts with an upper-case letter. */
    private static String packageOf(String name) {
      String[] parts = name.split("\\.");
      StringBuilder pkg = new StringBuilder();
      for (String part : parts) {
        if (Character.isUpperCase(part.charAt(0))) {
          break;
        }
        pkg.append(pkg.length() == 0 ? "" : ".").append(part);
      }
      return pkg.toString();
    }

    private static boolean isPackageName(String name) {
      return packageOf(name).equals(name);
    }

    private static int lineOf(String code, int offset) {
      int line = 1;
      for (int i = 0; i < offset; i++) {
        if (code.charAt(i) == '\n') {
          line++;
        }
      }
      return line;
    }

    /** The text with comments, string and character literals replaced by spaces (line breaks kept). */
    static String blankCommentsAndStrings(String s) {
      StringBuilder out = new StringBuilder(s.length());
      int i = 0;
      int n = s.length();
      while (i < n) {
        char c = s.charAt(i);
        if (c == '/' && i + 1 < n && s.charAt(i + 1) == '/') {
          while (i < n && s.charAt(i) != '\n') {
            out.append(' ');
            i++;
          }
        } else if (c == '/' && i + 1 < n && s.charAt(i + 1) == '*') {
          int end = s.indexOf("*/", i + 2);
          end = end < 0 ? n : end + 2;
          blank(s, i, end, out);
          i = end;
        } else if (s.startsWith("\"\"\"", i)) {
          int end = s.indexOf("\"\"\"", i + 3);
          while (end > 0 && s.charAt(end - 1) == '\\') {
            end = s.indexOf("\"\"\"", end + 1);
          }
          end = end < 0 ? n : end + 3;
          blank(s, i, end, out);
          i = end;
        } else if (c == '"' || c == '\'') {
          int j = i + 1;
          while (j < n && s.charAt(j) != c && s.charAt(j) != '\n') {
            j += s.charAt(j) == '\\' ? 2 : 1;
          }
          int end = Math.min(n, j + 1);
          blank(s, i, end, out);
          i = end;
        } else {
          out.append(c);
          i++;
        }
      }
      return out.toString();
    }

    private static void blank(String s, int from, int to, StringBuilder out) {
      for (int k = from; k < to; k++) {
        out.append(s.charAt(k) == '\n' ? '\n' : ' ');
      }
    }
  }

  /** A directed graph of packages, each edge with the first reference that made it. */
  static final class Graph {
    final Map<String, Map<String, Reference>> edges = new TreeMap<>();

    void node(String pkg) {
      edges.computeIfAbsent(pkg, k -> new TreeMap<>());
    }

    void add(String from, String to, Reference example) {
      node(from);
      node(to);
      edges.get(from).putIfAbsent(to, example);
    }

    /** The strongly connected components of more than one package (Tarjan), each as a sorted set. */
    List<Set<String>> cycles() {
      Map<String, Integer> index = new HashMap<>();
      Map<String, Integer> low = new HashMap<>();
      Deque<String> stack = new ArrayDeque<>();
      Set<String> onStack = new TreeSet<>();
      List<Set<String>> out = new ArrayList<>();
      int[] counter = {0};
      for (String v : edges.keySet()) {
        if (!index.containsKey(v)) {
          connect(v, index, low, stack, onStack, out, counter);
        }
      }
      out.sort((a, b) -> a.iterator().next().compareTo(b.iterator().next()));
      return out;
    }

    private void connect(String v, Map<String, Integer> index, Map<String, Integer> low, Deque<String> stack,
        Set<String> onStack, List<Set<String>> out, int[] counter) {
      index.put(v, counter[0]);
      low.put(v, counter[0]);
      counter[0]++;
      stack.push(v);
      onStack.add(v);
      for (String w : edges.get(v).keySet()) {
        if (!index.containsKey(w)) {
          connect(w, index, low, stack, onStack, out, counter);
          low.put(v, Math.min(low.get(v), low.get(w)));
        } else if (onStack.contains(w)) {
          low.put(v, Math.min(low.get(v), index.get(w)));
        }
      }
      if (low.get(v).equals(index.get(v))) {
        Set<String> component = new TreeSet<>();
        String w;
        do {
          w = stack.pop();
          onStack.remove(w);
          component.add(w);
        } while (!w.equals(v));
        if (component.size() > 1) {
          out.add(component);
        }
      }
    }

    /** Every edge inside a cycle, one line each with an example reference. */
    String describe(Set<String> cycle) {
      List<String> lines = new ArrayList<>();
      for (String from : new TreeSet<>(cycle)) {
        for (Map.Entry<String, Reference> e : edges.get(from).entrySet()) {
          if (cycle.contains(e.getKey())) {
            lines.add("  " + from + " -> " + e.getKey() + "  (" + e.getValue() + ")");
          }
        }
      }
      return String.join("\n", lines);
    }
  }

  /** Every main source file, parsed, and the graph of our packages they make. */
  static final class Sources {
    final List<SourceFile> files;
    final Graph graph = new Graph();

    private Sources(List<SourceFile> files) {
      this.files = files;
      for (SourceFile file : files) {
        graph.node(file.pkg);
        for (Reference ref : file.references) {
          if (ref.target.equals(ROOT) || ref.target.startsWith(ROOT + ".")) {
            graph.add(file.pkg, ref.target, ref);
          }
        }
      }
    }

    static Sources read(Path dir) {
      try (Stream<Path> walk = Files.walk(dir)) {
        List<SourceFile> files = new ArrayList<>();
        for (Path p : walk.filter(f -> f.toString().endsWith(".java")).sorted().collect(Collectors.toList())) {
          files.add(SourceFile.parse(dir.relativize(p), Files.readString(p)));
        }
        return new Sources(files);
      } catch (IOException e) {
        throw new UncheckedIOException("Cannot read the sources under " + dir, e);
      }
    }
  }
}
