package org.sparktp.cli;

import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;

/**
 * {@code spark-tp sql [--master URL] [--conf k=v]... (-e "STATEMENTS" | -f FILE)}: runs {@code ;}-separated
 * SQL statements on a session with spark-tp's SQL functions loaded and prints each result as a table
 * (statements without result columns, such as {@code CREATE VIEW} or {@code INSERT OVERWRITE DIRECTORY}, print
 * nothing). Stops at the first failing statement, naming it.
 */
final class Sql {
  static final Set<String> FLAGS = Set.of("master", "conf", "e", "f", "max-rows", "truncate");

  private Sql() {}

  /** The arguments with {@code -e}/{@code -f} spelled {@code --e}/{@code --f}, as {@link Args} reads them. */
  static Args parse(String[] args) {
    String[] a = args.clone();
    for (int i = 1; i < a.length; i++) {
      if (a[i].equals("-e") || a[i].equals("-f")) {
        a[i] = "-" + a[i];
      }
      if (a[i].startsWith("--")) {
        i++; // skip the flag's value
      }
    }
    return Args.parse("sql", a, 1, FLAGS, Set.of());
  }

  static void run(Args a, PrintStream out) throws Exception {
    if (a.has("e") == a.has("f")) {
      throw new UsageException("'sql' needs exactly one of -e \"STATEMENTS\" or -f FILE");
    }
    String text;
    if (a.has("e")) {
      text = a.get("e", "");
    } else {
      Path file = Path.of(a.get("f", ""));
      if (!Files.isRegularFile(file)) {
        throw new UsageException("-f " + file + ": no such file");
      }
      text = Files.readString(file, StandardCharsets.UTF_8);
    }
    List<String> statements = split(text);
    if (statements.isEmpty()) {
      throw new UsageException("'sql' got no statements");
    }
    int maxRows = a.intValue("max-rows", 1000, 1);
    int truncate = a.intValue("truncate", 0, 0);
    SparkSession spark = Sessions.open("sql", a.get("master", null), Sessions.withExtensions(a.confs()));
    try {
      for (int i = 0; i < statements.size(); i++) {
        String s = statements.get(i);
        try {
          Dataset<Row> df = spark.sql(s);
          if (s.regionMatches(true, 0, "EXPLAIN", 0, 7) && df.schema().fields().length == 1) {
            // the plan as text, as spark-sql prints it (a table cell would show its line breaks as \n)
            for (Row r : df.collectAsList()) {
              out.println(r.getString(0).stripTrailing());
            }
          } else if (df.schema().fields().length > 0) {
            out.print(((org.apache.spark.sql.classic.Dataset<Row>) df).showString(maxRows, truncate, false));
          }
        } catch (Exception e) {
          // analysis errors and failures of the statement's jobs alike name the statement
          throw new IllegalStateException("statement " + (i + 1) + " (" + head(s) + "): " + (e instanceof
              AnalysisException ? e.getMessage() : SparkTpCli.message(e)), e);
        }
      }
    } finally {
      spark.stop();
    }
  }

  private static String head(String s) {
    String one = s.strip().replaceAll("\\s+", " ");
    return one.length() > 60 ? one.substring(0, 57) + "..." : one;
  }

  /** Splits on {@code ;} outside quotes, back-ticks and comments; drops empty statements. */
  static List<String> split(String text) {
    List<String> out = new ArrayList<>();
    StringBuilder cur = new StringBuilder();
    char quote = 0;
    for (int i = 0; i < text.length(); i++) {
      char c = text.charAt(i);
      char next = i + 1 < text.length() ? text.charAt(i + 1) : 0;
      if (quote != 0) {
        cur.append(c);
        if (c == '\\' && quote != '`' && next != 0) {
          cur.append(next);
          i++;
        } else if (c == quote) {
          quote = 0;
        }
      } else if (c == '\'' || c == '"' || c == '`') {
        quote = c;
        cur.append(c);
      } else if (c == '-' && next == '-') {
        while (i < text.length() && text.charAt(i) != '\n') {
          i++;
        }
        cur.append('\n');
      } else if (c == '/' && next == '*') {
        int end = text.indexOf("*/", i + 2);
        i = end < 0 ? text.length() : end + 1;
        cur.append(' ');
      } else if (c == ';') {
        add(out, cur);
      } else {
        cur.append(c);
      }
    }
    add(out, cur);
    return out;
  }

  private static void add(List<String> out, StringBuilder cur) {
    String s = cur.toString().strip();
    if (!s.isEmpty()) {
      out.add(s);
    }
    cur.setLength(0);
  }
}
