package org.sparktp.model;

import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.sparktp.model.TestData.assertSameFloats;
import static org.sparktp.model.TestData.cutColumns;
import static org.sparktp.model.TestData.cutRows;
import static org.sparktp.model.TestData.random;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.shard.Split;

class SafetensorsFileTest {
  @TempDir java.nio.file.Path tmp;

  private Path write(String name, byte[] bytes) throws IOException {
    java.nio.file.Path p = tmp.resolve(name);
    Files.write(p, bytes);
    return new Path(p.toString());
  }

  private static byte[] bytes(SafetensorsWriter w) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    w.write(out);
    return out.toByteArray();
  }

  /** A file made of an explicit header length, header text and data bytes. */
  private static byte[] file(long headerLength, String header, int dataBytes) {
    byte[] h = header.getBytes(StandardCharsets.UTF_8);
    ByteBuffer b = ByteBuffer.allocate(8 + h.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
    b.putLong(headerLength).put(h);
    for (int i = 0; i < dataBytes; i++) {
      b.put((byte) (i * 7 + 1));
    }
    return b.array();
  }

  private static byte[] file(String header, int dataBytes) {
    return file(header.getBytes(StandardCharsets.UTF_8).length, header, dataBytes);
  }

  private String openError(byte[] bytes) throws IOException {
    Path p = write("bad.safetensors", bytes);
    try (SafetensorsFile f = SafetensorsFile.open(p, new Configuration())) {
      throw new AssertionError("expected the header of " + p + " to be rejected, opened " + f);
    } catch (ModelFormatException e) {
      assertThat(e.getMessage()).contains(p.toString());
      return e.getMessage();
    }
  }

  @Test
  void writtenTensorsReadBackExactlyWithTheirHeaderAndPaddedAlignment() throws Exception {
    Random rnd = new Random(1);
    float[] w = random(rnd, 7 * 5);
    float[] b = random(rnd, 7);
    float[] s = random(rnd, 1);
    byte[] bytes = bytes(new SafetensorsWriter().metadata("format", "pt").add("w", new long[] {7, 5}, w)
        .add("b", new long[] {7}, b).add("s", new long[] {}, s));
    long n = ByteBuffer.wrap(bytes, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
    assertThat(n % 8).isZero();
    assertThat(new String(bytes, 8, (int) n, StandardCharsets.UTF_8)).endsWith(" ").startsWith("{");
    try (SafetensorsFile f = SafetensorsFile.open(write("ok.safetensors", bytes), new Configuration())) {
      assertThat(f.tensors().keySet()).containsExactly("w", "b", "s");
      assertThat(f.metadata()).containsEntry("format", "pt");
      assertThat(f.info("w").shape()).containsExactly(7, 5);
      assertThat(f.info("w").dtype()).isEqualTo(DType.F32);
      assertSameFloats(f.readAll("w"), w);
      assertSameFloats(f.readAll("b"), b);
      assertSameFloats(f.readAll("s"), s);
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 4, 7})
  void rowAndColumnShardsEqualTheBlocksCutFromTheWholeTensor(int p) throws Exception {
    Random rnd = new Random(100 + p);
    int rows = 13;
    int narrowCols = 2048; // rows wider than the merge gap: each row's slice is read alone
    int wideCols = 29; // narrow rows: slices of consecutive rows are read as one range
    float[] narrow = random(rnd, rows * narrowCols);
    float[] wide = random(rnd, rows * wideCols);
    float[] bias = random(rnd, rows);
    Path path = write("t.safetensors", bytes(new SafetensorsWriter().add("a", new long[] {rows, narrowCols}, narrow)
        .add("b", new long[] {rows, wideCols}, wide).add("bias", new long[] {rows}, bias)));
    try (SafetensorsFile f = SafetensorsFile.open(path, new Configuration())) {
      Split rs = Split.balanced(rows, p);
      for (int r = 0; r < p; r++) {
        assertSameFloats(f.readRows("a", rs.offset(r), rs.length(r)),
            cutRows(narrow, narrowCols, rs.offset(r), rs.length(r)));
        assertSameFloats(f.readRows("bias", rs.offset(r), rs.length(r)),
            cutRows(bias, 1, rs.offset(r), rs.length(r)));
      }
      Split cn = Split.balanced(narrowCols, p);
      Split cw = Split.balanced(wideCols, p);
      for (int r = 0; r < p; r++) {
        assertSameFloats(f.readColumns("a", cn.offset(r), cn.length(r)),
            cutColumns(narrow, rows, narrowCols, cn.offset(r), cn.length(r)));
        assertSameFloats(f.readColumns("b", cw.offset(r), cw.length(r)),
            cutColumns(wide, rows, wideCols, cw.offset(r), cw.length(r)));
      }
      assertSameFloats(f.readColumns("a", 5, 1), cutColumns(narrow, rows, narrowCols, 5, 1));
      assertThat(f.readColumns("b", 0, 0)).isEmpty();
    }
  }

  @Test
  void aColumnReadLargerThanOneReadBufferIsSplitAcrossReads() throws Exception {
    Random rnd = new Random(3);
    int rows = 1100;
    int cols = 2100; // 8400-byte rows: 998 rows per 8 MiB read, so two merged reads
    float[] a = random(rnd, rows * cols);
    Path path = write("big.safetensors", bytes(new SafetensorsWriter().add("a", new long[] {rows, cols}, a)));
    try (SafetensorsFile f = SafetensorsFile.open(path, new Configuration())) {
      assertSameFloats(f.readColumns("a", 100, 2000), cutColumns(a, rows, cols, 100, 2000));
      assertSameFloats(f.readAll("a"), a);
      assertSameFloats(f.readRows("a", 3, 1097), cutRows(a, cols, 3, 1097));
    }
  }

  @Test
  void aNarrowColumnReadAsksTheFileSystemForFewerBytesThanTheTensor() throws Exception {
    Random rnd = new Random(4);
    int rows = 64;
    int cols = 2048;
    float[] a = random(rnd, rows * cols);
    java.nio.file.Path local = tmp.resolve("count.safetensors");
    Files.write(local, bytes(new SafetensorsWriter().add("a", new long[] {rows, cols}, a)));
    Configuration conf = CountingFileSystem.conf();
    Path path = new Path("counting://" + local);
    try (SafetensorsFile f = SafetensorsFile.open(path, conf)) {
      CountingFileSystem.reset();
      float[] block = f.readColumns("a", 1000, 100);
      assertSameFloats(block, cutColumns(a, rows, cols, 1000, 100));
      long tensorBytes = (long) rows * cols * 4;
      assertThat(CountingFileSystem.BYTES.get()).isEqualTo(rows * 100 * 4L).isLessThan(tensorBytes / 10);
      assertThat(f.bytesRead()).isEqualTo(rows * 100 * 4L);

      CountingFileSystem.reset();
      assertSameFloats(f.readRows("a", 10, 3), cutRows(a, cols, 10, 3));
      assertThat(CountingFileSystem.BYTES.get()).isEqualTo(3L * cols * 4);
      assertThat(CountingFileSystem.READS.get()).isEqualTo(1);
    }
  }

  @Test
  void aHeaderLengthPastTheEndOfTheFileIsRejected() throws Exception {
    String header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    assertThat(openError(file(10_000, header, 8))).contains("header length 10000 runs past the end of the file");
    assertThat(openError(file(-1, header, 8))).contains("header length 18446744073709551615 runs past the end");
    assertThat(openError(new byte[] {1, 2, 3})).contains("too short");
  }

  @Test
  void aHeaderThatIsNotJsonIsRejected() throws Exception {
    assertThat(openError(file("{\"a\": {\"dtype\": \"F32\", ", 8))).contains("the header is not valid JSON");
    assertThat(openError(file("[1, 2]", 0))).contains("the header must be a JSON object");
    assertThat(openError(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        + "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8))).contains("Duplicate field 'a'");
    assertThat(openError(file("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8))).contains("tensor 'a' has no dtype");
    assertThat(openError(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8)))
        .contains("tensor 'a' has an invalid shape [-2]");
  }

  @Test
  void offsetsOutsideTheDataSectionAreRejected() throws Exception {
    assertThat(openError(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8)))
        .contains("tensor 'a' has data_offsets [0, 16] out of range: the data section has 8 bytes");
    assertThat(openError(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8)))
        .contains("tensor 'a' has data_offsets [8, 4] out of range");
    assertThat(openError(file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8)))
        .contains("tensor 'a' needs data_offsets [begin, end]");
  }

  @Test
  void overlappingTensorsAreRejected() throws Exception {
    String header = "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]},"
        + "\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[8,20]}}";
    assertThat(openError(file(header, 24))).contains("tensors 'a' [0, 12) and 'b' [8, 20) overlap");
  }

  @Test
  void aByteSizeThatDisagreesWithDtypeAndShapeIsRejected() throws Exception {
    assertThat(openError(file("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24)))
        .contains("tensor 'w' has 20 bytes, but dtype F32 and shape [2, 3] need 6 x 4 = 24");
    assertThat(openError(file("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 24)))
        .contains("tensor 'w' has 24 bytes, but dtype BF16 and shape [2, 3] need 6 x 2 = 12");
  }

  @Test
  void anUnsupportedDtypeOpensButCannotBeRead() throws Exception {
    Random rnd = new Random(6);
    float[] a = random(rnd, 4);
    byte[] ids = new byte[3 * 8];
    rnd.nextBytes(ids);
    Path p = write("ids.safetensors", bytes(new SafetensorsWriter().addRaw("position_ids", "I64", new long[] {3}, ids)
        .add("a", new long[] {4}, a)));
    try (SafetensorsFile f = SafetensorsFile.open(p, new Configuration())) {
      assertSameFloats(f.readAll("a"), a);
      assertThatThrownBy(() -> f.readAll("position_ids")).isInstanceOf(ModelFormatException.class)
          .hasMessage("Cannot load 'position_ids' from " + p + ": dtype I64 is not supported; spark-tp loads "
              + "F32, F16, BF16 (converted to float32)");
      assertThatThrownBy(() -> f.readAll("nope")).hasMessageContaining("Cannot load 'nope' from " + p
          + ": the file has no such tensor");
    }
    // an I64 tensor whose size does not fit its shape is still caught when opening
    assertThat(openError(bytes(new SafetensorsWriter().addRaw("ids", "I64", new long[] {4}, ids))))
        .contains("tensor 'ids' has 24 bytes, but dtype I64 and shape [4] need 4 x 8 = 32");
  }

  @Test
  void readsOutsideTheTensorAndReadsAfterCloseFail() throws Exception {
    Random rnd = new Random(8);
    Path p = write("r.safetensors", bytes(new SafetensorsWriter().add("w", new long[] {4, 6}, random(rnd, 24))
        .add("v", new long[] {6}, random(rnd, 6))));
    SafetensorsFile f = SafetensorsFile.open(p, new Configuration());
    assertThatThrownBy(() -> f.readRows("w", 3, 2)).isInstanceOf(IndexOutOfBoundsException.class)
        .hasMessageContaining("rows [3, 5) of 'w'");
    assertThatThrownBy(() -> f.readColumns("w", -1, 2)).isInstanceOf(IndexOutOfBoundsException.class);
    assertThatThrownBy(() -> f.readColumns("v", 0, 2)).hasMessageContaining("column reads need a 2-D tensor");
    f.close();
    f.close();
    assertThatThrownBy(() -> f.readAll("w")).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
  }
}
