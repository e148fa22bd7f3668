package org.sparktp.model;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparktp.nn.plan.LayerGraph;
import org.sparktp.backend.Backend;
import org.sparktp.nn.WeightSource;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * An open model directory: {@code config.json} plus weights in {@code model.safetensors}, or in several
 * files listed by {@code model.safetensors.index.json} (Hugging Face's {@code {"weight_map": {tensor:
 * file}}}), with tensors in PyTorch's layout ({@code nn.Linear.weight} is {@code [out, in]}).
 *
 * <p>{@link #open} validates everything before anything is read: every tensor the config names must
 * exist, have a loadable dtype, and have the shape its place in the model implies (a linear's
 * {@code in} is the previous width, the first width is {@code input_dim}, a bias is {@code [out]}, layer
 * norm parameters are {@code [width]}, an embedding is {@code [input_dim, dim]}, a residual block keeps
 * its width); an error names the file and the tensor. Then {@link #graph()} is the model's ops, {@link #load()} loads the whole model, and
 * {@link #readRows}/{@link #readColumns} read one rank's shard of a tensor and nothing else.
 *
 * <p>Holds one open stream per weights file that the config uses; close it when done.
 */
public final class ModelDirectory implements AutoCloseable {
  /** The weights file of a single-file checkpoint. */
  public static final String WEIGHTS_FILE = "model.safetensors";

  /** The index of a checkpoint split into several files. */
  public static final String INDEX_FILE = "model.safetensors.index.json";

  private final Path dir;
  private final ModelConfig config;
  private final Map<String, SafetensorsFile> fileOf; // tensor -> file, for every tensor the config names
  private final List<SafetensorsFile> files;
  private LayerGraph graph; // the config's ops, made (and every shape checked) when opened
  private Map<String, String> names; // the ops' tensor names -> the config's

  private ModelDirectory(Path dir, ModelConfig config, Map<String, SafetensorsFile> fileOf,
      List<SafetensorsFile> files) {
    this.dir = dir;
    this.config = config;
    this.fileOf = fileOf;
    this.files = files;
  }

  /** Opens and validates the model directory {@code dir}. */
  public static ModelDirectory open(Path dir, Configuration conf) throws IOException {
    FileSystem fs = dir.getFileSystem(conf);
    Path configPath = new Path(dir, ModelConfig.FILE_NAME);
    if (!fs.exists(configPath)) {
      throw new ModelFormatException("Cannot open model directory " + dir + ": it has no " + ModelConfig.FILE_NAME);
    }
    ModelConfig config = ModelConfig.read(configPath, conf);
    Path indexPath = new Path(dir, INDEX_FILE);
    Path single = new Path(dir, WEIGHTS_FILE);
    Map<String, String> weightMap; // tensor -> file name, null for a single file
    if (fs.exists(indexPath)) {
      weightMap = readIndex(indexPath, fs);
    } else if (fs.exists(single)) {
      weightMap = null;
    } else {
      throw new ModelFormatException("Cannot open model directory " + dir + ": it has neither " + WEIGHTS_FILE
          + " nor " + INDEX_FILE);
    }
    Map<String, SafetensorsFile> byName = new LinkedHashMap<>();
    Map<String, SafetensorsFile> fileOf = new HashMap<>();
    try {
      for (String tensor : config.tensorNames()) {
        String name = WEIGHTS_FILE;
        if (weightMap != null) {
          name = weightMap.get(tensor);
          if (name == null) {
            throw new ModelFormatException("Cannot load '" + tensor + "': " + indexPath
                + " does not list it in its weight_map");
          }
        }
        SafetensorsFile f = byName.get(name);
        if (f == null) {
          Path file = new Path(dir, name);
          if (weightMap != null && !fs.exists(file)) {
            throw new ModelFormatException("Cannot load '" + tensor + "': " + indexPath + " maps it to " + name
                + ", but " + file + " does not exist");
          }
          f = SafetensorsFile.open(file, conf);
          byName.put(name, f);
        }
        if (!f.contains(tensor)) {
          throw new ModelFormatException("Cannot load '" + tensor + "' from " + f.path() + ": the file has no such "
              + "tensor" + (weightMap != null ? " (" + INDEX_FILE + " maps it there)" : "") + "; it has "
              + sample(f.tensors().keySet()));
        }
        f.loadable(tensor);
        fileOf.put(tensor, f);
      }
      ModelDirectory md = new ModelDirectory(dir, config, fileOf, List.copyOf(byName.values()));
      md.validate();
      return md;
    } catch (IOException | RuntimeException e) {
      for (SafetensorsFile f : byName.values()) {
        try {
          f.close();
        } catch (IOException suppressed) {
          e.addSuppressed(suppressed);
        }
      }
      throw e;
    }
  }

  /** Opens a local or Hadoop path given as a string, with a default Hadoop configuration. */
  public static ModelDirectory open(String dir) throws IOException {
    return open(new Path(dir), new Configuration());
  }

  /** Reads the {@code weight_map} of a sharded checkpoint's index: tensor name -> file name. */
  public static Map<String, String> readIndex(Path index, FileSystem fs) throws IOException {
    String text;
    try (FSDataInputStream in = fs.open(index)) {
      text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
    JsonNode root;
    try {
      ObjectMapper mapper = new ObjectMapper();
      mapper.enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
      root = mapper.readTree(text);
    } catch (JsonProcessingException e) {
      throw new ModelFormatException("Invalid " + index + ": not valid JSON: " + e.getOriginalMessage(), e);
    }
    JsonNode map = root == null ? null : root.get("weight_map");
    if (map == null || !map.isObject()) {
      throw new ModelFormatException("Invalid " + index + ": expected {\"weight_map\": {tensor: file, ...}}");
    }
    Map<String, String> out = new HashMap<>();
    for (Iterator<Map.Entry<String, JsonNode>> it = map.fields(); it.hasNext(); ) {
      Map.Entry<String, JsonNode> e = it.next();
      String file = e.getValue().isTextual() ? e.getValue().asText() : "";
      if (file.isEmpty() || new Path(file).isAbsolute() || file.contains("..") || file.contains(":")) {
        throw new ModelFormatException("Invalid " + index + ": weight_map maps '" + e.getKey() + "' to "
            + e.getValue() + "; expected the name of a file in the model directory");
      }
      out.put(e.getKey(), file);
    }
    return out;
  }

  private static String sample(Set<String> names) {
    if (names.isEmpty()) {
      return "no tensors";
    }
    List<String> first = new ArrayList<>();
    for (String n : names) {
      if (first.size() == 10) {
        break;
      }
      first.add("'" + n + "'");
    }
    return String.join(", ", first) + (names.size() > 10 ? " and " + (names.size() - 10) + " more" : "");
  }

  // ---------------------------------------------------------------- validation

  /** Builds the config's ops, checking every tensor's shape against the width its place in the model implies. */
  private void validate() throws ModelFormatException {
    ConfigGraph g = ConfigGraph.build(config, this::shape, t -> fileOf(t).toString());
    graph = g.graph(config);
    names = Map.copyOf(g.tensors());
  }

  /** The directory. */
  public Path path() {
    return dir;
  }

  /**
   * Every file this model consists of: {@code config.json}, the index when there is one, and each
   * safetensors file the config's tensors are in (not other files of the directory).
   */
  public List<Path> files(Configuration conf) throws IOException {
    List<Path> out = new java.util.ArrayList<>();
    out.add(new Path(dir, ModelConfig.FILE_NAME));
    Path index = new Path(dir, INDEX_FILE);
    if (dir.getFileSystem(conf).exists(index)) {
      out.add(index);
    }
    for (SafetensorsFile f : files) {
      out.add(f.path());
    }
    return out;
  }

  /** The parsed {@code config.json}. */
  public ModelConfig config() {
    return config;
  }

  /** The names of every tensor the config uses, in layer order. */
  public Set<String> tensorNames() {
    return config.tensorNames();
  }

  /** The header entry of a tensor the config uses. */
  public TensorInfo info(String tensor) {
    SafetensorsFile f = file(tensor);
    return f.tensors().get(tensor);
  }

  /**
   * The storage dtype of the model's weights: BF16 or F16 when every float tensor the config uses is of that
   * type, else F32 (what {@code spark.tp.dtype=auto} looks at).
   */
  public DType weightDtype() {
    DType seen = null;
    for (String t : config.tensorNames()) {
      DType d = info(t).dtype();
      if (d == null || !d.isLoadable()) {
        continue;
      }
      if (seen == null) {
        seen = d;
      } else if (seen != d) {
        return DType.F32;
      }
    }
    return seen == null ? DType.F32 : seen;
  }

  /** The shape of a tensor the config uses. */
  public long[] shape(String tensor) {
    return info(tensor).shape();
  }

  /** The file that holds a tensor the config uses. */
  public Path fileOf(String tensor) {
    return file(tensor).path();
  }

  /** Reads a whole tensor as float32. */
  public float[] readAll(String tensor) throws IOException {
    return file(tensor).readAll(tensor);
  }

  /**
   * Reads rows {@code [rowStart, rowStart + rowCount)} of a tensor (for {@code [out, in]} weights a
   * column-parallel shard; for an embedding a vocabulary range; for a 1-D tensor an element range):
   * {@code rowCount x (numel / rows)} floats, read as one byte range. Rank {@code r} of {@code p} reads
   * {@code Split.balanced(out, p).offset(r)} / {@code .length(r)}.
   */
  public float[] readRows(String tensor, int rowStart, int rowCount) throws IOException {
    return file(tensor).readRows(tensor, rowStart, rowCount);
  }

  /**
   * Reads columns {@code [colStart, colStart + colCount)} of every row of a 2-D tensor (for
   * {@code [out, in]} weights a row-parallel shard): {@code rows x colCount} floats, row-major, reading
   * only those byte ranges (see {@link SafetensorsFile#readColumns}).
   */
  public float[] readColumns(String tensor, int colStart, int colCount) throws IOException {
    return file(tensor).readColumns(tensor, colStart, colCount);
  }

  /** Bytes read from tensor data so far, over every file. */
  public long bytesRead() {
    long n = 0;
    for (SafetensorsFile f : files) {
      n += f.bytesRead();
    }
    return n;
  }

  private SafetensorsFile file(String tensor) {
    SafetensorsFile f = fileOf.get(tensor);
    if (f == null) {
      throw new IllegalArgumentException("The config of " + dir + " does not use a tensor '" + tensor
          + "'; it uses " + sample(config.tensorNames()));
    }
    return f;
  }

  // ---------------------------------------------------------------- whole model

  /** The model's ops (unplanned), tensors named {@code <layer>.weight} and {@code <layer>.bias}. */
  public LayerGraph graph() {
    return graph;
  }

  /** Loads the whole model into memory; a tensor used by two layers (tied weights) is read once and shared. */
  public LayerModel load() throws IOException {
    Map<String, long[]> shapes = new LinkedHashMap<>();
    Map<String, float[]> values = new LinkedHashMap<>();
    for (String t : config.tensorNames()) {
      shapes.put(t, shape(t));
      values.put(t, readAll(t));
    }
    return LayerModel.of(config, shapes, values);
  }

  /**
   * The checkpoint as a {@link WeightSource}: a plan's tensor names ({@code <layer>.weight},
   * {@code <layer>.bias}) mapped to this directory's tensors, read with positioned reads of only the
   * requested rows or columns.
   */
  public WeightSource weightSource() {
    return new WeightSource() {
      private String tensor(String planName) {
        String t = names.get(planName);
        if (t == null) {
          throw new IllegalArgumentException("The model in " + dir + " has no tensor for '" + planName + "'");
        }
        return t;
      }

      @Override
      public float[] rows(String name, int start, int count) {
        try {
          return readRows(tensor(name), start, count);
        } catch (IOException e) {
          throw new java.io.UncheckedIOException(e);
        }
      }

      @Override
      public float[] columns(String name, int start, int count) {
        try {
          return readColumns(tensor(name), start, count);
        } catch (IOException e) {
          throw new java.io.UncheckedIOException(e);
        }
      }

      @Override
      public float[] all(String name) {
        try {
          return readAll(tensor(name));
        } catch (IOException e) {
          throw new java.io.UncheckedIOException(e);
        }
      }

      @Override
      public DType dtype(String name) {
        return info(tensor(name)).dtype();
      }

      @Override
      public Tensor rows(String name, int start, int count, int cols, DType dtype, Backend be) {
        String t = tensor(name);
        return readTyped(t, count, cols, dtype, be, sink -> file(t).readRowsRaw(t, start, count, sink));
      }

      @Override
      public Tensor columns(String name, int start, int count, int rows, DType dtype, Backend be) {
        String t = tensor(name);
        return readTyped(t, rows, count, dtype, be, sink -> file(t).readColumnsRaw(t, start, count, sink));
      }
    };
  }

  private interface RawRead {
    void run(SafetensorsFile.RawSink sink) throws IOException;
  }

  /**
   * Reads a block in the file's dtype straight into a new tensor on {@code be} (through buffers of at most
   * {@link SafetensorsFile#MAX_READ_BYTES}: no float32 copy, no whole-block array on the heap), then
   * converts it on the backend when {@code dtype} differs.
   */
  private Tensor readTyped(String tensor, int rows, int cols, DType dtype, Backend be, RawRead read) {
    DType stored = info(tensor).dtype();
    if (stored == null || !stored.isLoadable()) {
      throw new IllegalArgumentException("Cannot load '" + tensor + "' from " + dir + ": dtype "
          + info(tensor).dtypeName() + " is not supported; spark-tp loads " + DType.loadableNames());
    }
    DType land = be.supports(stored) ? stored : DType.F32;
    Tensor t = be.allocate(rows, cols, land);
    try {
      long[] at = {0};
      read.run((buf, off, len) -> {
        java.nio.ByteBuffer src = java.nio.ByteBuffer.wrap(buf, off, len).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        if (land == stored) {
          be.write(t, at[0], src);
          at[0] += len;
        } else {
          java.nio.ByteBuffer wide = java.nio.ByteBuffer.allocate(len / stored.size() * 4)
              .order(java.nio.ByteOrder.LITTLE_ENDIAN);
          DType.F32.convertFrom(stored, src, wide, len / stored.size());
          wide.flip();
          be.write(t, at[0], wide);
          at[0] += wide.limit();
        }
      });
      if (land == dtype.weightTensorType(land)) {
        return t; // int8: quantized from the loaded type when the linear's kernel is prepared
      }
      try (Tensor src = t) {
        return be.convert(src, dtype);
      }
    } catch (IOException e) {
      t.close();
      throw new java.io.UncheckedIOException(e);
    } catch (RuntimeException | Error e) {
      t.close();
      throw e;
    }
  }

  /** Closes every weights file; harmless when called again. */
  @Override
  public void close() throws IOException {
    SafetensorsFile.closeAll(files);
  }

  @Override
  public String toString() {
    return "ModelDirectory(" + dir + ", " + fileOf.size() + " tensors in " + files.size() + " files)";
  }
}
