package org.sparktp.kernel;

import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.Base64;
import java.util.List;
import javax.imageio.ImageIO;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.dflib.jjava.jupyter.kernel.display.DisplayData;

/**
 * Rich output from a notebook cell: {@code Show.table(df)} (an HTML table plus plain text), {@code
 * Show.png(image)} (a PNG, e.g. from {@link Plot}). Outside a running kernel the plain text goes to stdout.
 */
public final class Show {
  private Show() {}

  /** The first {@code rows} rows of {@code df} as a table. */
  public static void table(Dataset<Row> df, int rows) {
    List<Row> got = df.limit(rows).collectAsList();
    String[] cols = df.columns();
    StringBuilder html = new StringBuilder("<table><thead><tr>");
    StringBuilder text = new StringBuilder(String.join(" | ", cols)).append('\n');
    for (String c : cols) {
      html.append("<th>").append(escape(c)).append("</th>");
    }
    html.append("</tr></thead><tbody>");
    for (Row r : got) {
      html.append("<tr>");
      StringBuilder line = new StringBuilder();
      for (int i = 0; i < cols.length; i++) {
        String v = cell(r.get(i));
        html.append("<td>").append(escape(v)).append("</td>");
        line.append(i > 0 ? " | " : "").append(v);
      }
      html.append("</tr>");
      text.append(line).append('\n');
    }
    html.append("</tbody></table>");
    DisplayData d = new DisplayData(text.toString());
    d.putHTML(html.toString());
    display(d, text.toString());
  }

  public static void table(Dataset<Row> df) {
    table(df, 20);
  }

  /** A PNG image. */
  public static void png(BufferedImage image) {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try {
      ImageIO.write(image, "png", bytes);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    DisplayData d = new DisplayData("[image " + image.getWidth() + "x" + image.getHeight() + "]");
    d.putData("image/png", Base64.getEncoder().encodeToString(bytes.toByteArray()));
    display(d, "[image " + image.getWidth() + "x" + image.getHeight() + "]");
  }

  private static void display(DisplayData d, String text) {
    SparkTpKernel k = SparkTpKernel.current();
    if (k != null) {
      k.display(d);
    } else {
      System.out.println(text);
    }
  }

  private static String cell(Object v) {
    if (v == null) {
      return "null";
    }
    if (v instanceof scala.collection.Seq<?> s) {
      StringBuilder b = new StringBuilder("[");
      int n = s.size();
      for (int i = 0; i < Math.min(n, 6); i++) {
        Object x = s.apply(i);
        b.append(i > 0 ? ", " : "").append(x instanceof Float f ? String.format(java.util.Locale.ROOT, "%.4f", f) : x);
      }
      return b.append(n > 6 ? ", ... (" + n + ")]" : "]").toString();
    }
    String s = v.toString();
    return s.length() > 200 ? s.substring(0, 197) + "..." : s;
  }

  private static String escape(String s) {
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;");
  }
}
