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
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
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
 * its width); an error names the file and the tensor. Then {@link #toSpec()} loads the whole model, and
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

  private void validate() throws ModelFormatException {
    new Validator().walk(config.layers(), config.inputDim(), "layer ");
  }

  /** Walks the layers with the current width, checking every tensor's shape against it. */
  private final class Validator {
    /** Where the current width came from, for messages. */
    private String widthSource = "input_dim in config.json";

    /** The tensor that last changed the width (named when a residual block does not keep it). */
    private String widthTensor;

    int walk(List<ModelConfig.Layer> layers, int width, String prefix) throws ModelFormatException {
      for (int i = 0; i < layers.size(); i++) {
        ModelConfig.Layer l = layers.get(i);
        String at = prefix + i;
        if (l instanceof ModelConfig.Linear x) {
          long[] w = shape(x.weight());
          if (w.length != 2 || w[1] != width || w[0] <= 0 || w[0] > Integer.MAX_VALUE) {
            throw shapeError(x.weight(), "[*, " + width + "] (a linear weight is [out, in]; " + width
                + " is the input width of " + at + ", from " + widthSource + ")", w);
          }
          width = (int) w[0];
          widthSource = "the output width of " + at + " ('" + x.weight() + "')";
          widthTensor = x.weight();
          if (x.bias() != null) {
            long[] b = shape(x.bias());
            if (b.length != 1 || b[0] != width) {
              throw shapeError(x.bias(), "[" + width + "] (the bias of " + at + ", whose weight '" + x.weight()
                  + "' has " + width + " outputs)", b);
            }
          }
        } else if (l instanceof ModelConfig.LayerNorm x) {
          for (String t : new String[] {x.weight(), x.bias()}) {
            if (t != null) {
              long[] s = shape(t);
              if (s.length != 1 || s[0] != width) {
                throw shapeError(t, "[" + width + "] (the width at " + at + " (layer_norm), from " + widthSource
                    + ")", s);
              }
            }
          }
        } else if (l instanceof ModelConfig.Embedding x) {
          long[] s = shape(x.weight());
          if (s.length != 2 || s[0] != width || s[1] <= 0 || s[1] > Integer.MAX_VALUE) {
            throw shapeError(x.weight(), "[" + width + ", *] (an embedding table is [vocab, dim]; the vocabulary "
                + "size is input_dim in config.json)", s);
          }
          width = (int) s[1];
          widthSource = "the output width of " + at + " ('" + x.weight() + "')";
          widthTensor = x.weight();
        } else if (l instanceof ModelConfig.Residual x) {
          int out = walk(x.layers(), width, at + ".");
          if (out != width) {
            // only linears change the width inside a block, so widthTensor is set here
            throw shapeError(widthTensor, "[" + width + ", *] (" + at + " is a residual block, which must end "
                + "at its input width " + width + ")", shape(widthTensor));
          }
          widthSource = "the output of " + at + " (residual)";
        }
      }
      return width;
    }

    private ModelFormatException shapeError(String tensor, String expected, long[] actual) {
      return new ModelFormatException("Cannot load '" + tensor + "' from " + fileOf(tensor) + ": expected "
          + expected + ", file has " + TensorInfo.format(actual));
    }
  }

  // ---------------------------------------------------------------- access

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

  /**
   * Loads the whole model as a {@link ModelSpec}. Layer names are tensor names without {@code .weight}
   * ({@code fc1.weight -> fc1}); a tensor used by two layers (tied weights) is read once and shared.
   */
  public ModelSpec toSpec() throws IOException {
    Map<String, float[]> loaded = new HashMap<>();
    return new ModelSpec(config.inputDim(), build(config.layers(), config.inputDim(), "", loaded, null));
  }

  /**
   * The model's structure without its weights (every tensor {@link LayerSpec#UNLOADED}): enough to make a
   * {@link org.sparktp.nn.plan.Plan}; each rank then reads only its shards through {@link #weightSource()}.
   */
  public ModelSpec structure() throws IOException {
    return new ModelSpec(config.inputDim(), build(config.layers(), config.inputDim(), "", null, new HashMap<>()));
  }

  /**
   * The checkpoint as a {@link WeightSource}: a plan's tensor names ({@code <layer>.weight},
   * {@code <layer>.bias}) mapped to this directory's tensors, read with positioned reads of only the
   * requested rows or columns.
   */
  public WeightSource weightSource() throws IOException {
    Map<String, String> names = new HashMap<>();
    build(config.layers(), config.inputDim(), "", null, names);
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

  /**
   * Builds the layer list; with {@code loaded} null the tensors are left {@link LayerSpec#UNLOADED} and
   * {@code names} collects plan tensor name -> checkpoint tensor name.
   */
  private List<LayerSpec> build(List<ModelConfig.Layer> layers, int width, String prefix,
      Map<String, float[]> loaded, Map<String, String> names) throws IOException {
    List<LayerSpec> out = new ArrayList<>();
    for (int i = 0; i < layers.size(); i++) {
      ModelConfig.Layer l = layers.get(i);
      String at = prefix + i;
      LayerSpec s;
      if (l instanceof ModelConfig.Linear x) {
        int o = (int) shape(x.weight())[0];
        String name = ModelConfig.layerName(x.weight());
        s = new LayerSpec.Linear(name, width, o, load(x.weight(), loaded, names, name + ".weight"),
            x.bias() == null ? null : load(x.bias(), loaded, names, name + ".bias"), x.parallel());
      } else if (l instanceof ModelConfig.Act x) {
        s = new LayerSpec.Act(x.activation(), width);
      } else if (l instanceof ModelConfig.LayerNorm x) {
        String name = x.weight() != null ? ModelConfig.layerName(x.weight())
            : x.bias() != null ? ModelConfig.layerName(x.bias()) : "layer_norm." + at;
        s = new LayerSpec.LayerNorm(name, width,
            x.weight() == null ? null : load(x.weight(), loaded, names, name + ".weight"),
            x.bias() == null ? null : load(x.bias(), loaded, names, name + ".bias"), x.eps());
      } else if (l instanceof ModelConfig.Embedding x) {
        int dim = (int) shape(x.weight())[1];
        String name = ModelConfig.layerName(x.weight());
        s = new LayerSpec.Embedding(name, width, dim, load(x.weight(), loaded, names, name + ".weight"), x.bag(),
            x.mean());
      } else if (l instanceof ModelConfig.Residual x) {
        s = new LayerSpec.Residual(build(x.layers(), width, at + ".", loaded, names));
      } else {
        throw new IllegalStateException("Unknown layer " + l);
      }
      out.add(s);
      width = s.outWidth();
    }
    return out;
  }

  private float[] load(String tensor, Map<String, float[]> loaded, Map<String, String> names, String planName)
      throws IOException {
    if (loaded == null) {
      names.put(planName, tensor);
      return LayerSpec.UNLOADED;
    }
    float[] a = loaded.get(tensor);
    if (a == null) {
      a = readAll(tensor);
      loaded.put(tensor, a);
    }
    return a;
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
