package org.sparktp.model;

import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;

/**
 * An open safetensors file, read through Hadoop's {@link FileSystem} (so {@code file:}, {@code hdfs:},
 * {@code s3a:} … paths work) with positioned reads only: whole tensors, a block of rows, or a block of
 * columns, converted to float32.
 *
 * <p>The format: an 8-byte little-endian length {@code N}, {@code N} bytes of JSON header
 * {@code {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}}, then the
 * data section, little-endian and row-major; offsets are relative to the start of the data section.
 * {@link #open} validates the whole header (length, JSON, dtypes, sizes, ranges, overlaps) before any
 * tensor is read. A tensor's dtype must be loadable ({@link DType#isLoadable()}) only when it is read.
 *
 * <p>Reads are bounded: no single read asks for more than {@link #MAX_READ_BYTES}, so memory beyond the
 * result is one buffer of that size at most. Only positioned reads are used, so reads never depend on
 * a shared stream position. Closing closes the stream.
 */
public final class SafetensorsFile implements AutoCloseable {
  /** The largest header the reference implementation accepts. */
  public static final long MAX_HEADER_BYTES = 100_000_000L;

  /** The largest single read (and read buffer), in bytes. */
  public static final int MAX_READ_BYTES = 8 << 20;

  /**
   * In a column read, the row slices are read as one range when the gap between them is at most this
   * many bytes (reading a small gap is cheaper than another request); otherwise each row's slice is read
   * alone. Hadoop's vectored reads use the same 4 KiB default ({@code fs.s3a.vectored.read.min.seek.size}).
   */
  public static final int MERGE_GAP_BYTES = 4096;

  private static final String METADATA = "__metadata__";

  private final Path path;
  private final FSDataInputStream in;
  private final long fileLength;
  private final long dataStart;
  private final Map<String, TensorInfo> tensors;
  private final Map<String, String> metadata;
  private final AtomicLong bytesRead = new AtomicLong();
  private volatile boolean closed;

  private SafetensorsFile(Path path, FSDataInputStream in, long fileLength, long dataStart,
      Map<String, TensorInfo> tensors, Map<String, String> metadata) {
    this.path = path;
    this.in = in;
    this.fileLength = fileLength;
    this.dataStart = dataStart;
    this.tensors = tensors;
    this.metadata = metadata;
  }

  /** Opens {@code path} and validates its header; throws {@link ModelFormatException} naming the problem. */
  public static SafetensorsFile open(Path path, Configuration conf) throws IOException {
    FileSystem fs = path.getFileSystem(conf);
    long length = fs.getFileStatus(path).getLen();
    FSDataInputStream in = fs.open(path);
    try {
      return read(path, in, length);
    } catch (IOException | RuntimeException e) {
      try {
        in.close();
      } catch (IOException suppressed) {
        e.addSuppressed(suppressed);
      }
      throw e;
    }
  }

  /** Opens a local or Hadoop path given as a string, with a default Hadoop configuration. */
  public static SafetensorsFile open(String path) throws IOException {
    return open(new Path(path), new Configuration());
  }

  private static SafetensorsFile read(Path path, FSDataInputStream in, long fileLength) throws IOException {
    if (fileLength < 8) {
      throw new ModelFormatException("Invalid safetensors file " + path + ": it has " + fileLength
          + " bytes, too short for the 8-byte header length");
    }
    byte[] len = new byte[8];
    in.readFully(0, len, 0, 8);
    long n = ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getLong();
    if (n < 0 || n > fileLength - 8) {
      throw new ModelFormatException("Invalid safetensors file " + path + ": the header length "
          + Long.toUnsignedString(n) + " runs past the end of the file (" + fileLength + " bytes)");
    }
    if (n > MAX_HEADER_BYTES) {
      throw new ModelFormatException("Invalid safetensors file " + path + ": the header length " + n
          + " exceeds the limit of " + MAX_HEADER_BYTES + " bytes");
    }
    byte[] header = new byte[(int) n];
    in.readFully(8, header, 0, header.length);
    long dataStart = 8 + n;
    Map<String, String> metadata = new LinkedHashMap<>();
    Map<String, TensorInfo> tensors = parseHeader(path.toString(), header, fileLength - dataStart, metadata);
    return new SafetensorsFile(path, in, fileLength, dataStart, tensors, metadata);
  }

  /**
   * Parses and validates a header. {@code file} names the file in messages; {@code dataLength} is the
   * size of the data section. Fills {@code metadata} from {@code __metadata__}.
   */
  static Map<String, TensorInfo> parseHeader(String file, byte[] header, long dataLength,
      Map<String, String> metadata) throws ModelFormatException {
    String where = "Invalid safetensors file " + file + ": ";
    JsonNode root;
    try {
      ObjectMapper mapper = new ObjectMapper();
      mapper.enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
      root = mapper.readTree(new String(header, StandardCharsets.UTF_8));
    } catch (JsonProcessingException e) {
      throw new ModelFormatException(where + "the header is not valid JSON: " + e.getOriginalMessage(), e);
    }
    if (root == null || !root.isObject()) {
      throw new ModelFormatException(where + "the header must be a JSON object, found "
          + (root == null ? "nothing" : root.getNodeType()));
    }
    Map<String, TensorInfo> tensors = new LinkedHashMap<>();
    for (Iterator<Map.Entry<String, JsonNode>> it = root.fields(); it.hasNext(); ) {
      Map.Entry<String, JsonNode> e = it.next();
      String name = e.getKey();
      JsonNode v = e.getValue();
      if (METADATA.equals(name)) {
        if (!v.isObject()) {
          throw new ModelFormatException(where + "__metadata__ must be an object of strings");
        }
        v.fields().forEachRemaining(m -> metadata.put(m.getKey(), m.getValue().asText()));
        continue;
      }
      tensors.put(name, parseEntry(where, name, v, dataLength));
    }
    checkOverlaps(where, tensors);
    return Collections.unmodifiableMap(tensors);
  }

  private static TensorInfo parseEntry(String where, String name, JsonNode v, long dataLength)
      throws ModelFormatException {
    String at = where + "tensor '" + name + "' ";
    if (!v.isObject()) {
      throw new ModelFormatException(at + "must be an object with dtype, shape and data_offsets");
    }
    JsonNode dt = v.get("dtype");
    if (dt == null || !dt.isTextual()) {
      throw new ModelFormatException(at + "has no dtype string");
    }
    String dtypeName = dt.asText();
    DType dtype = DType.lookup(dtypeName);
    JsonNode sh = v.get("shape");
    if (sh == null || !sh.isArray()) {
      throw new ModelFormatException(at + "has no shape array");
    }
    long[] shape = new long[sh.size()];
    for (int i = 0; i < shape.length; i++) {
      shape[i] = nonNegativeLong(sh.get(i), at + "has an invalid shape " + sh);
    }
    JsonNode off = v.get("data_offsets");
    if (off == null || !off.isArray() || off.size() != 2) {
      throw new ModelFormatException(at + "needs data_offsets [begin, end], found " + off);
    }
    long begin = nonNegativeLong(off.get(0), at + "has invalid data_offsets " + off);
    long end = nonNegativeLong(off.get(1), at + "has invalid data_offsets " + off);
    if (begin > end || end > dataLength) {
      throw new ModelFormatException(at + "has data_offsets [" + begin + ", " + end
          + "] out of range: the data section has " + dataLength + " bytes");
    }
    // a dtype this code does not know (a newer format's) is accepted: its size cannot be checked, and
    // reading it fails; a checkpoint may hold such tensors that the model does not use
    if (dtype != null) {
      long numel;
      long bytes;
      try {
        numel = 1;
        for (long d : shape) {
          numel = Math.multiplyExact(numel, d);
        }
        bytes = Math.multiplyExact(numel, dtype.size());
      } catch (ArithmeticException overflow) {
        throw new ModelFormatException(at + "has a shape too large: " + TensorInfo.format(shape), overflow);
      }
      if (bytes != end - begin) {
        throw new ModelFormatException(at + "has " + (end - begin) + " bytes, but dtype " + dtypeName
            + " and shape " + TensorInfo.format(shape) + " need " + numel + " x " + dtype.size() + " = " + bytes);
      }
    }
    return new TensorInfo(name, dtypeName, dtype, shape, begin, end);
  }

  private static long nonNegativeLong(JsonNode n, String message) throws ModelFormatException {
    if (n == null || !n.isIntegralNumber() || !n.canConvertToLong() || n.asLong() < 0) {
      throw new ModelFormatException(message);
    }
    return n.asLong();
  }

  private static void checkOverlaps(String where, Map<String, TensorInfo> tensors) throws ModelFormatException {
    List<TensorInfo> sorted = new ArrayList<>();
    for (TensorInfo t : tensors.values()) {
      if (t.byteLength() > 0) {
        sorted.add(t);
      }
    }
    sorted.sort(Comparator.comparingLong(TensorInfo::begin));
    for (int i = 1; i < sorted.size(); i++) {
      TensorInfo a = sorted.get(i - 1);
      TensorInfo b = sorted.get(i);
      if (b.begin() < a.end()) {
        throw new ModelFormatException(where + "tensors '" + a.name() + "' [" + a.begin() + ", " + a.end()
            + ") and '" + b.name() + "' [" + b.begin() + ", " + b.end() + ") overlap");
      }
    }
  }

  /** The file's path. */
  public Path path() {
    return path;
  }

  /** The file's size in bytes. */
  public long fileLength() {
    return fileLength;
  }

  /** Every tensor in header order (unmodifiable). */
  public Map<String, TensorInfo> tensors() {
    return tensors;
  }

  /** The header's {@code __metadata__} (unmodifiable, possibly empty). */
  public Map<String, String> metadata() {
    return Collections.unmodifiableMap(metadata);
  }

  /** True when the file holds a tensor named {@code name}. */
  public boolean contains(String name) {
    return tensors.containsKey(name);
  }

  /** The header entry of {@code name}; throws {@link ModelFormatException} when it is absent. */
  public TensorInfo info(String name) throws ModelFormatException {
    TensorInfo t = tensors.get(name);
    if (t == null) {
      throw new ModelFormatException("Cannot load '" + name + "' from " + path + ": the file has no such tensor");
    }
    return t;
  }

  /** Bytes read from the data section so far (the header is not counted). */
  public long bytesRead() {
    return bytesRead.get();
  }

  /** Reads a whole tensor as float32, in row-major order. */
  public float[] readAll(String name) throws IOException {
    TensorInfo t = loadable(name);
    float[] out = new float[resultLength(t, t.numel())];
    readRange(t, t.begin(), out.length, out, 0);
    return out;
  }

  /**
   * Reads rows {@code [rowStart, rowStart + rowCount)} of a tensor seen as {@code [shape[0], rest]} (a
   * column-parallel shard of an {@code [out, in]} weight, a row range of an embedding table, or an
   * element range of a 1-D tensor): one contiguous byte range.
   */
  public float[] readRows(String name, long rowStart, long rowCount) throws IOException {
    TensorInfo t = loadable(name);
    if (t.rank() == 0) {
      throw new IllegalArgumentException("Cannot read rows of scalar '" + name + "' in " + path);
    }
    long rows = t.dim(0);
    long cols = rows == 0 ? 0 : t.numel() / rows;
    checkRange("rows", name, rowStart, rowCount, rows);
    float[] out = new float[resultLength(t, rowCount * cols)];
    readRange(t, t.begin() + rowStart * cols * t.dtype().size(), out.length, out, 0);
    return out;
  }

  /**
   * Reads columns {@code [colStart, colStart + colCount)} of every row of a 2-D tensor (a row-parallel
   * shard of an {@code [out, in]} weight), as a row-major {@code [rows, colCount]} array.
   *
   * <p>Only the needed byte ranges are read, except that when the gap between one row's slice and the
   * next is at most {@link #MERGE_GAP_BYTES} the slices of consecutive rows are read as one range (up to
   * {@link #MAX_READ_BYTES}) and the gaps dropped: this bounds the number of requests (one per row
   * would be costly on object stores) while reading at most {@code MERGE_GAP_BYTES} extra per row.
   */
  public float[] readColumns(String name, long colStart, long colCount) throws IOException {
    TensorInfo t = loadable(name);
    if (t.rank() != 2) {
      throw new IllegalArgumentException("Cannot read columns of '" + name + "' in " + path
          + ": it has shape " + t.shapeString() + ", column reads need a 2-D tensor");
    }
    long rows = t.dim(0);
    long cols = t.dim(1);
    checkRange("columns", name, colStart, colCount, cols);
    float[] out = new float[resultLength(t, rows * colCount)];
    int es = t.dtype().size();
    long rowBytes = cols * es;
    long sliceBytes = colCount * es;
    long gap = rowBytes - sliceBytes;
    if (colCount == 0 || rows == 0) {
      return out;
    }
    if (gap == 0) {
      readRange(t, t.begin(), out.length, out, 0);
      return out;
    }
    long first = t.begin() + colStart * es;
    if (gap > MERGE_GAP_BYTES || rowBytes > MAX_READ_BYTES) {
      for (long r = 0; r < rows; r++) {
        readRange(t, first + r * rowBytes, (int) colCount, out, (int) (r * colCount));
      }
      return out;
    }
    int rowsPerRead = (int) Math.max(1, MAX_READ_BYTES / rowBytes);
    byte[] buf = new byte[(int) Math.min((long) rowsPerRead * rowBytes, (rows - 1) * rowBytes + sliceBytes)];
    for (long r = 0; r < rows; r += rowsPerRead) {
      int k = (int) Math.min(rowsPerRead, rows - r);
      int span = (int) ((k - 1) * rowBytes + sliceBytes);
      readBytes(t, first + r * rowBytes, buf, span);
      for (int i = 0; i < k; i++) {
        t.dtype().toFloats(buf, (int) (i * rowBytes), out, (int) ((r + i) * colCount), (int) colCount);
      }
    }
    return out;
  }

  /** Receives a tensor's raw little-endian bytes in row-major order, in consecutive pieces. */
  @FunctionalInterface
  public interface RawSink {
    void accept(byte[] buf, int off, int len);
  }

  /**
   * Rows {@code [rowStart, rowStart + rowCount)} (as {@link #readRows}) in the file's own dtype, handed to
   * {@code sink} in pieces of at most {@link #MAX_READ_BYTES}: no float32 copy and no whole-shard array on
   * the heap (the bytes go where the sink puts them, e.g. an off-heap tensor).
   */
  public void readRowsRaw(String name, long rowStart, long rowCount, RawSink sink) throws IOException {
    TensorInfo t = loadable(name);
    if (t.rank() == 0) {
      throw new IllegalArgumentException("Cannot read rows of scalar '" + name + "' in " + path);
    }
    long rows = t.dim(0);
    long cols = rows == 0 ? 0 : t.numel() / rows;
    checkRange("rows", name, rowStart, rowCount, rows);
    long es = t.dtype().size();
    long total = rowCount * cols * es;
    long pos = t.begin() + rowStart * cols * es;
    byte[] buf = new byte[(int) Math.min(total, MAX_READ_BYTES)];
    for (long done = 0; done < total; ) {
      int n = (int) Math.min(buf.length, total - done);
      readBytes(t, pos + done, buf, n);
      sink.accept(buf, 0, n);
      done += n;
    }
  }

  /** Columns {@code [colStart, colStart + colCount)} of every row (as {@link #readColumns}), raw, to {@code sink}. */
  public void readColumnsRaw(String name, long colStart, long colCount, RawSink sink) throws IOException {
    TensorInfo t = loadable(name);
    if (t.rank() != 2) {
      throw new IllegalArgumentException("Cannot read columns of '" + name + "' in " + path
          + ": it has shape " + t.shapeString() + ", column reads need a 2-D tensor");
    }
    long rows = t.dim(0);
    long cols = t.dim(1);
    checkRange("columns", name, colStart, colCount, cols);
    int es = t.dtype().size();
    long rowBytes = cols * es;
    long sliceBytes = colCount * es;
    if (colCount == 0 || rows == 0) {
      return;
    }
    if (sliceBytes == rowBytes) {
      readRowsRaw(name, 0, rows, sink);
      return;
    }
    long first = t.begin() + colStart * es;
    int rowsPerRead = (int) Math.max(1, Math.min(rows, MAX_READ_BYTES / rowBytes));
    boolean merge = rowBytes - sliceBytes <= MERGE_GAP_BYTES && rowBytes <= MAX_READ_BYTES;
    if (!merge) {
      byte[] buf = new byte[(int) Math.min(sliceBytes, MAX_READ_BYTES)];
      for (long r = 0; r < rows; r++) {
        for (long done = 0; done < sliceBytes; ) {
          int n = (int) Math.min(buf.length, sliceBytes - done);
          readBytes(t, first + r * rowBytes + done, buf, n);
          sink.accept(buf, 0, n);
          done += n;
        }
      }
      return;
    }
    byte[] buf = new byte[(int) ((rowsPerRead - 1) * rowBytes + sliceBytes)];
    for (long r = 0; r < rows; r += rowsPerRead) {
      int k = (int) Math.min(rowsPerRead, rows - r);
      int span = (int) ((k - 1) * rowBytes + sliceBytes);
      readBytes(t, first + r * rowBytes, buf, span);
      for (int i = 0; i < k; i++) {
        sink.accept(buf, (int) (i * rowBytes), (int) sliceBytes);
      }
    }
  }

  /** The header entry of {@code name}, checking that it exists and that its dtype can be loaded. */
  TensorInfo loadable(String name) throws ModelFormatException {
    TensorInfo t = info(name);
    if (t.dtype() == null || !t.dtype().isLoadable()) {
      throw new ModelFormatException("Cannot load '" + name + "' from " + path + ": dtype " + t.dtypeName()
          + " is not supported; spark-tp loads " + DType.loadableNames() + " (converted to float32)");
    }
    return t;
  }

  private void checkRange(String what, String name, long start, long count, long size) {
    if (start < 0 || count < 0 || start + count > size) {
      throw new IndexOutOfBoundsException("Cannot read " + what + " [" + start + ", " + (start + count) + ") of '"
          + name + "' in " + path + ": it has " + size + " " + what);
    }
  }

  private int resultLength(TensorInfo t, long numel) throws ModelFormatException {
    if (numel > Integer.MAX_VALUE - 8) {
      throw new ModelFormatException("Cannot load '" + t.name() + "' from " + path + ": " + numel
          + " elements do not fit one Java array; read it in smaller blocks of rows");
    }
    return (int) numel;
  }

  /** Reads {@code count} elements starting at data-section offset {@code pos} into {@code dst[dstOff..]}. */
  private void readRange(TensorInfo t, long pos, int count, float[] dst, int dstOff) throws IOException {
    int es = t.dtype().size();
    int perRead = MAX_READ_BYTES / es;
    byte[] buf = new byte[(int) Math.min((long) count * es, (long) perRead * es)];
    for (int done = 0; done < count; ) {
      int n = Math.min(perRead, count - done);
      readBytes(t, pos + (long) done * es, buf, n * es);
      t.dtype().toFloats(buf, 0, dst, dstOff + done, n);
      done += n;
    }
  }

  private void readBytes(TensorInfo t, long pos, byte[] buf, int len) throws IOException {
    if (closed) {
      throw new IllegalStateException("Safetensors file " + path + " is closed");
    }
    try {
      in.readFully(dataStart + pos, buf, 0, len);
    } catch (IOException e) {
      throw new IOException("Cannot read '" + t.name() + "' from " + path + " at byte " + (dataStart + pos)
          + ": " + e.getMessage(), e);
    }
    bytesRead.addAndGet(len);
  }

  /** Closes the stream; harmless when called again. */
  @Override
  public void close() throws IOException {
    if (!closed) {
      closed = true;
      in.close();
    }
  }

  @Override
  public String toString() {
    return "SafetensorsFile(" + path + ", " + tensors.size() + " tensors)";
  }

  /** Closes every file of {@code files}; the first failure is thrown, later ones added to it as suppressed. */
  public static void closeAll(Iterable<SafetensorsFile> files) throws IOException {
    IOException first = null;
    for (SafetensorsFile f : files) {
      try {
        f.close();
      } catch (IOException e) {
        if (first == null) {
          first = e;
        } else {
          first.addSuppressed(e);
        }
      }
    }
    if (first != null) {
      throw first;
    }
  }
}
