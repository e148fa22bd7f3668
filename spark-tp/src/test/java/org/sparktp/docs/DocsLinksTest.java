package org.sparktp.docs;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/**
 * The README and the pages in {@code docs/}: every relative link points at a file that exists and every
 * {@code #anchor} at a heading of its page (GitHub's anchor rule); every page is linked from the README; the
 * README stays a front page (at most 400 lines).
 */
class DocsLinksTest {
  static final Path ROOT = Paths.get("..").toAbsolutePath().normalize();
  private static final Pattern LINK = Pattern.compile("\\[[^\\]]*\\]\\(([^)\\s]+)\\)");
  private static final Pattern HEADING = Pattern.compile("^#{1,6}\\s+(.*?)\\s*#*\\s*$");

  static List<Path> pages() {
    List<Path> out = new ArrayList<>();
    out.add(ROOT.resolve("README.md"));
    try (Stream<Path> s = Files.list(ROOT.resolve("docs"))) {
      s.filter(p -> p.toString().endsWith(".md")).sorted().forEach(out::add);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return out;
  }

  /** The lines outside fenced code blocks, with inline code spans blanked. */
  static List<String> prose(Path file) throws IOException {
    List<String> out = new ArrayList<>();
    boolean fence = false;
    for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
      if (line.trim().startsWith("```")) {
        fence = !fence;
        out.add("");
        continue;
      }
      out.add(fence ? "" : line.replaceAll("`[^`]*`", "``"));
    }
    return out;
  }

  /** GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces made '-'. */
  static String anchor(String heading) {
    String s = heading.replace("`", "").toLowerCase(Locale.ROOT);
    StringBuilder b = new StringBuilder();
    for (int i = 0; i < s.length(); i++) {
      char c = s.charAt(i);
      if (Character.isLetterOrDigit(c) || c == '-' || c == '_') {
        b.append(c);
      } else if (c == ' ') {
        b.append('-');
      }
    }
    return b.toString();
  }

  static Set<String> anchors(Path file) throws IOException {
    Set<String> out = new LinkedHashSet<>();
    boolean fence = false;
    for (String line : Files.readAllLines(file, StandardCharsets.UTF_8)) {
      if (line.trim().startsWith("```")) {
        fence = !fence;
      }
      Matcher m = HEADING.matcher(line);
      if (!fence && m.matches()) {
        String a = anchor(m.group(1));
        for (int n = 1; !out.add(a); n++) { // GitHub numbers repeated headings: a, a-1, a-2
          a = anchor(m.group(1)) + "-" + n;
        }
      }
    }
    return out;
  }

  /** "file:line: target (why)" for every broken relative link of {@code file}, paths shown relative to {@code root}. */
  static List<String> brokenLinks(Path root, Path file) throws IOException {
    List<String> broken = new ArrayList<>();
    List<String> lines = prose(file);
    for (int i = 0; i < lines.size(); i++) {
      Matcher m = LINK.matcher(lines.get(i));
      while (m.find()) {
        String target = m.group(1);
        if (target.matches("^[a-zA-Z][a-zA-Z0-9+.-]*:.*")) {
          continue; // https:, mailto: ...
        }
        int hash = target.indexOf('#');
        String path = hash < 0 ? target : target.substring(0, hash);
        String frag = hash < 0 ? null : target.substring(hash + 1);
        Path to = path.isEmpty() ? file : file.getParent().resolve(path).normalize();
        String where = root.relativize(file) + ":" + (i + 1) + ": " + target;
        if (!Files.exists(to)) {
          broken.add(where + " (no file " + root.relativize(to) + ")");
        } else if (frag != null && !(to.toString().endsWith(".md") && anchors(to).contains(frag))) {
          broken.add(where + " (no heading with anchor #" + frag + " in " + root.relativize(to) + ")");
        }
      }
    }
    return broken;
  }

  @Test
  void everyRelativeLinkAndAnchorOfTheReadmeAndTheDocsResolves() throws IOException {
    List<String> broken = new ArrayList<>();
    for (Path p : pages()) {
      broken.addAll(brokenLinks(ROOT, p));
    }
    assertThat(broken).as("broken links").isEmpty();
  }

  @Test
  void theReadmeIsAFrontPageThatLinksEveryDocsPage() throws IOException {
    Path readme = ROOT.resolve("README.md");
    List<String> lines = Files.readAllLines(readme, StandardCharsets.UTF_8);
    assertThat(lines.size()).as("README.md lines (the reference belongs in docs/)").isLessThanOrEqualTo(400);
    String text = String.join("\n", lines);
    List<Path> docs = pages().subList(1, pages().size());
    assertThat(docs.size()).isGreaterThanOrEqualTo(5);
    for (Path d : docs) {
      assertThat(text).as("README.md links " + ROOT.relativize(d)).contains("](docs/" + d.getFileName() + ")");
    }
  }

  @Test
  void theCheckerFindsABrokenLinkAndABrokenAnchor(@org.junit.jupiter.api.io.TempDir Path dir) throws IOException {
    Path a = dir.resolve("a.md");
    Files.writeString(a, "# Page A\n\n## How `rows` flow (today)\n\n[ok](#how-rows-flow-today) [ok2](b.md#b-title)"
        + " [bad](#nowhere) [gone](c.md) [web](https://example.org/x) `[code](nope.md)`\n\n```\n[fenced](nope.md)\n```\n");
    Files.writeString(dir.resolve("b.md"), "# B title\n");
    assertThat(brokenLinks(dir, a)).containsExactly("a.md:5: #nowhere (no heading with anchor #nowhere in a.md)",
        "a.md:5: c.md (no file c.md)");
  }
}
