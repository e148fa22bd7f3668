package org.sparktp.model;

import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * Writes a safetensors file: float32 arrays stored as {@code F32}, {@code F16} or {@code BF16}
 * (narrowing rounds to nearest even), or raw bytes of any dtype (for tests). Tensors are stored in the
 * order they were added; the JSON header is padded with spaces to a multiple of 8 bytes, as the
 * reference implementation does, so the data section starts aligned.
 *
 * <pre>{@code
 * new SafetensorsWriter().add("fc1.weight", new long[] {out, in}, w).write(path, conf);
 * }</pre>
 */
public final class SafetensorsWriter {
  private record Entry(String name, String dtype, long[] shape, float[] floats, byte[] raw) {
    long byteLength() {
      return raw != null ? raw.length : (long) floats.length * DType.valueOf(dtype).size();
    }
  }

  private final Map<String, Entry> entries = new LinkedHashMap<>();
  private final Map<String, String> metadata = new LinkedHashMap<>();

  /** Adds a float32 tensor stored as {@code F32}; the array is kept (not copied) until written. */
  public SafetensorsWriter add(String name, long[] shape, float[] data) {
    return add(name, DType.F32, shape, data);
  }

  /** Adds a float32 tensor stored as {@code dtype} ({@code F32}, {@code F16} or {@code BF16}). */
  public SafetensorsWriter add(String name, DType dtype, long[] shape, float[] data) {
    if (dtype != DType.F32 && dtype != DType.F16 && dtype != DType.BF16) {
      throw new IllegalArgumentException("Cannot write '" + name + "' as " + dtype + ": float data is written as "
          + DType.loadableNames());
    }
    checkCount(name, shape, data.length);
    put(new Entry(name, dtype.name(), shape.clone(), data, null));
    return this;
  }

  /**
   * Adds a tensor given as raw little-endian bytes under any dtype name; the byte count is not checked
   * against the shape (tests use this to write invalid files).
   */
  public SafetensorsWriter addRaw(String name, String dtype, long[] shape, byte[] bytes) {
    put(new Entry(name, dtype, shape.clone(), null, bytes.clone()));
    return this;
  }

  /** Adds a {@code __metadata__} entry. */
  public SafetensorsWriter metadata(String key, String value) {
    metadata.put(key, value);
    return this;
  }

  private void put(Entry e) {
    if (e.name == null || e.name.isEmpty() || e.name.equals("__metadata__")) {
      throw new IllegalArgumentException("Invalid tensor name '" + e.name + "'");
    }
    if (entries.putIfAbsent(e.name, e) != null) {
      throw new IllegalArgumentException("Tensor '" + e.name + "' was already added");
    }
  }

  private static void checkCount(String name, long[] shape, int length) {
    long n = 1;
    for (long d : shape) {
      if (d < 0) {
        throw new IllegalArgumentException("Tensor '" + name + "' has a negative dimension: " + Arrays.toString(shape));
      }
      n *= d;
    }
    if (n != length) {
      throw new IllegalArgumentException("Tensor '" + name + "' has " + length + " elements but shape "
          + Arrays.toString(shape) + " needs " + n);
    }
  }

  /** The header bytes: JSON padded with spaces to a multiple of 8. */
  byte[] header() {
    ObjectMapper mapper = new ObjectMapper();
    ObjectNode root = mapper.createObjectNode();
    if (!metadata.isEmpty()) {
      ObjectNode m = root.putObject("__metadata__");
      metadata.forEach(m::put);
    }
    long offset = 0;
    for (Entry e : entries.values()) {
      ObjectNode t = root.putObject(e.name);
      t.put("dtype", e.dtype);
      ArrayNode s = t.putArray("shape");
      for (long d : e.shape) {
        s.add(d);
      }
      long end = offset + e.byteLength();
      t.putArray("data_offsets").add(offset).add(end);
      offset = end;
    }
    byte[] json;
    try {
      json = mapper.writeValueAsString(root).getBytes(StandardCharsets.UTF_8);
    } catch (JsonProcessingException e) {
      throw new IllegalStateException("Cannot serialise a safetensors header", e);
    }
    int padded = (json.length + 7) / 8 * 8;
    byte[] out = Arrays.copyOf(json, padded);
    Arrays.fill(out, json.length, padded, (byte) ' ');
    return out;
  }

  /** Writes the file to {@code out} (which stays open). */
  public void write(OutputStream out) throws IOException {
    byte[] header = header();
    out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length).array());
    out.write(header);
    for (Entry e : entries.values()) {
      if (e.raw != null) {
        out.write(e.raw);
      } else {
        writeFloats(out, DType.valueOf(e.dtype), e.floats);
      }
    }
  }

  /** Writes the file to {@code path} through Hadoop's {@link FileSystem}, replacing any file there. */
  public void write(Path path, Configuration conf) throws IOException {
    try (FSDataOutputStream out = HadoopFiles.create(path, conf)) {
      write(out);
    }
  }

  /** The names of the tensors added so far, in order. */
  public List<String> names() {
    return new ArrayList<>(entries.keySet());
  }

  private static void writeFloats(OutputStream out, DType dtype, float[] data) throws IOException {
    int chunk = 1 << 16;
    ByteBuffer buf = ByteBuffer.allocate(chunk * dtype.size()).order(ByteOrder.LITTLE_ENDIAN);
    for (int i = 0; i < data.length; i += chunk) {
      int n = Math.min(chunk, data.length - i);
      buf.clear();
      for (int j = i; j < i + n; j++) {
        switch (dtype) {
          case F32 -> buf.putFloat(data[j]);
          case F16 -> buf.putShort(HalfFloats.floatToHalf(data[j]));
          case BF16 -> buf.putShort(HalfFloats.floatToBf16(data[j]));
          default -> throw new IllegalStateException(dtype.name());
        }
      }
      out.write(buf.array(), 0, buf.position());
    }
  }
}
