package org.sparktp.tensor;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import org.sparktp.model.SafetensorsFile;
import org.sparktp.model.SafetensorsWriter;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

public class HalfFloatsTest {
  @TempDir Path tmp;

  /** The value of binary16 bits, written plainly from the definition. */
  public static double halfReference(int h) {
    int sign = (h >>> 15) & 1;
    int e = (h >>> 10) & 0x1f;
    int m = h & 0x3ff;
    double s = sign == 1 ? -1 : 1;
    if (e == 0) {
      return s * Math.pow(2, -14) * (m / 1024.0);
    }
    return s * Math.pow(2, e - 15) * (1 + m / 1024.0);
  }

  @Test
  void everyFiniteHalfWidensToTheValueOfItsDefinition() {
    for (int h = 0; h < 0x10000; h++) {
      if (((h >>> 10) & 0x1f) == 0x1f) {
        continue;
      }
      assertThat((double) HalfFloats.halfToFloat(h)).as("half 0x%04x", h).isEqualTo(halfReference(h));
    }
    assertThat(HalfFloats.halfToFloat(0x7c00)).isEqualTo(Float.POSITIVE_INFINITY);
    assertThat(HalfFloats.halfToFloat(0xfc00)).isEqualTo(Float.NEGATIVE_INFINITY);
    assertThat(HalfFloats.halfToFloat(0x7e00)).isNaN();
  }

  @Test
  void narrowingToHalfRoundsToNearestEven() {
    for (int h = 0; h < 0x10000; h++) {
      if (((h >>> 10) & 0x1f) == 0x1f) {
        continue;
      }
      float v = (float) halfReference(h);
      assertThat(HalfFloats.floatToHalf(v) & 0xffff).as("half 0x%04x", h).isEqualTo(h);
    }
    // between consecutive positive halves a < b: a quarter of the way rounds down, three quarters up,
    // the midpoint to the one with an even mantissa
    for (int h = 0; h < 0x7bff; h++) {
      double a = halfReference(h);
      double b = halfReference(h + 1);
      assertThat(HalfFloats.floatToHalf((float) (a + (b - a) / 4)) & 0xffff).isEqualTo(h);
      assertThat(HalfFloats.floatToHalf((float) (a + 3 * (b - a) / 4)) & 0xffff).isEqualTo(h + 1);
      assertThat(HalfFloats.floatToHalf((float) ((a + b) / 2)) & 0xffff).isEqualTo((h & 1) == 0 ? h : h + 1);
    }
    assertThat(HalfFloats.floatToHalf(65504f) & 0xffff).isEqualTo(0x7bff);
    assertThat(HalfFloats.floatToHalf(65519f) & 0xffff).isEqualTo(0x7bff);
    assertThat(HalfFloats.floatToHalf(65520f) & 0xffff).isEqualTo(0x7c00);
    assertThat(HalfFloats.floatToHalf(-1e6f) & 0xffff).isEqualTo(0xfc00);
    assertThat(HalfFloats.floatToHalf((float) Math.pow(2, -25)) & 0xffff).isEqualTo(0);
    assertThat(HalfFloats.floatToHalf(Math.nextUp((float) Math.pow(2, -25))) & 0xffff).isEqualTo(1);
    assertThat(HalfFloats.halfToFloat(HalfFloats.floatToHalf(Float.NaN))).isNaN();
  }

  @Test
  void bf16IsTheUpperHalfOfFloat32WithRoundingToNearestEven() {
    Random rnd = new Random(11);
    for (int i = 0; i < 10_000; i++) {
      int bits = Float.floatToIntBits((float) (rnd.nextGaussian() * Math.pow(10, rnd.nextInt(10) - 5)));
      int upper = bits >>> 16;
      assertThat(HalfFloats.bf16ToFloat(upper)).isEqualTo(Float.intBitsToFloat(upper << 16));
      // nearest even: compare the distances to the two neighbours in double
      double x = Float.intBitsToFloat(bits);
      double lo = Float.intBitsToFloat(upper << 16);
      double hi = Float.intBitsToFloat((upper + 1) << 16);
      double dLo = Math.abs(x - lo);
      double dHi = Math.abs(hi - x);
      int expected = dLo < dHi ? upper : dHi < dLo ? upper + 1 : ((upper & 1) == 0 ? upper : upper + 1);
      assertThat(HalfFloats.floatToBf16(Float.intBitsToFloat(bits)) & 0xffff).isEqualTo(expected & 0xffff);
    }
  }

  @Test
  void f16AndBf16TensorsWrittenByteByByteReadAsTheirFloatValues() throws Exception {
    Random rnd = new Random(5);
    int n = 3 * 257;
    int[] halves = new int[n];
    float[] floats = new float[n];
    ByteBuffer f16 = ByteBuffer.allocate(2 * n).order(ByteOrder.LITTLE_ENDIAN);
    ByteBuffer bf16 = ByteBuffer.allocate(2 * n).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < n; i++) {
      // sign, exponent 0..30 (subnormals included), mantissa: exactly representable values
      halves[i] = (rnd.nextInt(2) << 15) | (rnd.nextInt(31) << 10) | rnd.nextInt(1024);
      f16.putShort((short) halves[i]);
      floats[i] = (float) (rnd.nextGaussian() * 100);
      bf16.putShort((short) (Float.floatToIntBits(floats[i]) >>> 16));
    }
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    new SafetensorsWriter()
        .addRaw("h", "F16", new long[] {3, 257}, f16.array())
        .addRaw("b", "BF16", new long[] {3, 257}, bf16.array())
        .write(bytes);
    Path file = tmp.resolve("half.safetensors");
    Files.write(file, bytes.toByteArray());
    try (SafetensorsFile f = SafetensorsFile.open(file.toString())) {
      float[] h = f.readAll("h");
      float[] b = f.readAll("b");
      for (int i = 0; i < n; i++) {
        assertThat((double) h[i]).isEqualTo(halfReference(halves[i]));
        assertThat(b[i]).isEqualTo(Float.intBitsToFloat((Float.floatToIntBits(floats[i]) >>> 16) << 16));
      }
      // a column block of a half tensor converts the same way
      float[] cols = f.readColumns("h", 100, 57);
      for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 57; c++) {
          assertThat(cols[r * 57 + c]).isEqualTo(h[r * 257 + 100 + c]);
        }
      }
    }
  }

  @Test
  void theWriterStoresF16AndBf16ThatReadBackRounded() throws Exception {
    Random rnd = new Random(9);
    float[] data = new float[500];
    for (int i = 0; i < data.length; i++) {
      data[i] = (float) (rnd.nextGaussian() * 3 + 0.1);
    }
    org.apache.hadoop.fs.Path file = new org.apache.hadoop.fs.Path(tmp.resolve("w.safetensors").toString());
    new SafetensorsWriter().add("h", DType.F16, new long[] {500}, data).add("b", DType.BF16, new long[] {500}, data)
        .write(file, new org.apache.hadoop.conf.Configuration());
    try (SafetensorsFile f = SafetensorsFile.open(file, new org.apache.hadoop.conf.Configuration())) {
      assertThat(f.info("h").dtypeName()).isEqualTo("F16");
      float[] h = f.readAll("h");
      float[] b = f.readAll("b");
      for (int i = 0; i < data.length; i++) {
        assertThat(h[i]).isCloseTo(data[i], org.assertj.core.data.Offset.offset(Math.abs(data[i]) / 1024));
        assertThat(b[i]).isCloseTo(data[i], org.assertj.core.data.Offset.offset(Math.abs(data[i]) / 128));
        assertThat(h[i]).isEqualTo(HalfFloats.halfToFloat(HalfFloats.floatToHalf(data[i])));
      }
    }
  }
}
