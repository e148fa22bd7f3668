package org.sparktp.kernel;

import java.awt.BasicStroke;
import java.awt.Color;
import java.awt.Font;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.util.Locale;

/** Small charts drawn with Java2D (headless, no browser): bars of labelled values, and a scatter of points. */
public final class Plot {
  private static final int W = 640;
  private static final int H = 360;
  private static final int LEFT = 80;
  private static final int RIGHT = 20;
  private static final int TOP = 60;
  private static final int BOTTOM = 50;

  private Plot() {}

  /** One bar per label, height {@code values[i]}, the value written on each bar. */
  public static BufferedImage bars(String title, String[] labels, double[] values, String yLabel) {
    BufferedImage img = canvas();
    Graphics2D g = graphics(img, title);
    double max = 0;
    for (double v : values) {
      max = Math.max(max, v);
    }
    max = max <= 0 ? 1 : max * 1.15;
    axes(g, 0, max, yLabel);
    int n = values.length;
    int plotW = W - LEFT - RIGHT;
    int slot = plotW / Math.max(1, n);
    Color[] colors = {new Color(0x4C72B0), new Color(0xDD8452), new Color(0x55A868), new Color(0xC44E52)};
    for (int i = 0; i < n; i++) {
      int h = (int) Math.round(values[i] / max * (H - TOP - BOTTOM));
      int x = LEFT + i * slot + slot / 5;
      g.setColor(colors[i % colors.length]);
      g.fillRect(x, H - BOTTOM - h, slot * 3 / 5, h);
      g.setColor(Color.DARK_GRAY);
      g.drawString(labels[i], x, H - BOTTOM + 18);
      g.drawString(String.format(Locale.ROOT, "%,.0f", values[i]), x, H - BOTTOM - h - 4);
    }
    g.dispose();
    return img;
  }

  /** Points {@code (x[i], y[i])}. */
  public static BufferedImage scatter(String title, double[] x, double[] y, String xLabel, String yLabel) {
    BufferedImage img = canvas();
    Graphics2D g = graphics(img, title);
    double x0 = Double.POSITIVE_INFINITY;
    double x1 = Double.NEGATIVE_INFINITY;
    double y0 = Double.POSITIVE_INFINITY;
    double y1 = Double.NEGATIVE_INFINITY;
    for (int i = 0; i < x.length; i++) {
      x0 = Math.min(x0, x[i]);
      x1 = Math.max(x1, x[i]);
      y0 = Math.min(y0, y[i]);
      y1 = Math.max(y1, y[i]);
    }
    if (x1 <= x0) {
      x1 = x0 + 1;
    }
    if (y1 <= y0) {
      y1 = y0 + 1;
    }
    axes(g, y0, y1, yLabel);
    g.setColor(Color.DARK_GRAY);
    g.drawString(xLabel + String.format(Locale.ROOT, " (%.3g .. %.3g)", x0, x1), LEFT, H - 15);
    g.setColor(new Color(0x4C72B0));
    for (int i = 0; i < x.length; i++) {
      int px = LEFT + (int) ((x[i] - x0) / (x1 - x0) * (W - LEFT - RIGHT));
      int py = H - BOTTOM - (int) ((y[i] - y0) / (y1 - y0) * (H - TOP - BOTTOM));
      g.fillOval(px - 2, py - 2, 5, 5);
    }
    g.dispose();
    return img;
  }

  private static BufferedImage canvas() {
    return new BufferedImage(W, H, BufferedImage.TYPE_INT_RGB);
  }

  private static Graphics2D graphics(BufferedImage img, String title) {
    Graphics2D g = img.createGraphics();
    g.setRenderingHint(RenderingHints.KEY_ANTIALIASING, RenderingHints.VALUE_ANTIALIAS_ON);
    g.setColor(Color.WHITE);
    g.fillRect(0, 0, W, H);
    g.setColor(Color.BLACK);
    g.setFont(new Font(Font.SANS_SERIF, Font.BOLD, 15));
    g.drawString(title, LEFT, 25);
    g.setFont(new Font(Font.SANS_SERIF, Font.PLAIN, 12));
    return g;
  }

  private static void axes(Graphics2D g, double lo, double hi, String yLabel) {
    g.setColor(Color.GRAY);
    g.setStroke(new BasicStroke(1f));
    g.drawLine(LEFT, TOP, LEFT, H - BOTTOM);
    g.drawLine(LEFT, H - BOTTOM, W - RIGHT, H - BOTTOM);
    for (int t = 0; t <= 4; t++) {
      double v = lo + (hi - lo) * t / 4;
      int y = H - BOTTOM - (H - TOP - BOTTOM) * t / 4;
      g.drawLine(LEFT - 4, y, LEFT, y);
      g.drawString(String.format(Locale.ROOT, "%.3g", v), 8, y + 4);
    }
    g.drawString(yLabel, 8, TOP - 14);
  }
}
