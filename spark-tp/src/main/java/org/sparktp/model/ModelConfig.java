package org.sparktp.model;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparktp.backend.Activation;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.Parallel;

/**
 * A model's {@code config.json}: the input width and the layer list, naming the tensors that hold each
 * layer's weights (shapes come from the weights files, see {@link ModelDirectory}).
 *
 * <pre>{@code
 * {"spark_tp": 1, "input_dim": 784, "layers": [
 *   {"type": "linear", "weight": "fc1.weight", "bias": "fc1.bias", "parallel": "auto"},
 *   {"type": "gelu"},
 *   {"type": "residual", "layers": [{"type": "layer_norm", "weight": "ln.weight", "bias": "ln.bias", "eps": 1e-5},
 *                                   {"type": "linear", "weight": "fc2.weight"}]},
 *   {"type": "softmax"}]}
 * }</pre>
 *
 * <p>{@code input_dim} is the width of the input vector, or the vocabulary size when the first layer is
 * an {@code embedding} (one id per row) or {@code embedding_bag} (a list of ids per row, {@code mode}
 * {@code mean} (the default, as in PyTorch) or {@code sum}); embeddings may only be the first layer. A
 * linear layer's {@code bias} is optional and {@code parallel} defaults to {@code auto}; a layer norm's
 * {@code weight} and {@code bias} are optional (PyTorch's {@code elementwise_affine=False}) and
 * {@code eps} defaults to 1e-5. Unknown keys in a layer are errors (a misspelt {@code "bais"} must not
 * silently drop a bias); unknown top-level keys are ignored.
 */
public record ModelConfig(int inputDim, List<Layer> layers) {
  /** The format version this code reads and writes ({@code "spark_tp": 1}). */
  public static final int VERSION = 1;

  /** The default layer-norm epsilon, as in PyTorch. */
  public static final float DEFAULT_EPS = 1e-5f;

  /** The name of the file inside a model directory. */
  public static final String FILE_NAME = "config.json";

  private static final List<String> WEIGHTED_TYPES = List.of("linear", "layer_norm", "embedding", "embedding_bag",
      "residual");

  /** One entry of the layer list. */
  public sealed interface Layer {
    /** The {@code type} written in the file. */
    String type();

    /** The layers inside this one (a residual block's), else none. */
    default List<Layer> children() {
      return List.of();
    }

    /** The names of the tensors this layer (and its children) refer to, added to {@code out} in order. */
    default void tensorNames(Set<String> out) {
      for (Layer c : children()) {
        c.tensorNames(out);
      }
    }

    /** Writes this layer's fields (besides {@code type}) into {@code o}. */
    default void write(ObjectNode o) {}

    /**
     * Adds this layer's op to {@code out} (layer {@code index} of the list at {@code prefix}, which takes an
     * activation {@code width} wide), its tensors' shapes checked by {@code g}; returns the width it gives.
     */
    int build(ConfigGraph g, int width, String prefix, int index, List<Op> out) throws ModelFormatException;
  }

  private static void addIfSet(Set<String> out, String... names) {
    for (String n : names) {
      if (n != null) {
        out.add(n);
      }
    }
  }

  private static void putIfSet(ObjectNode o, String field, String value) {
    if (value != null) {
      o.put(field, value);
    }
  }

  /** {@code Y = X W^T + b}; {@code weight} names an {@code [out, in]} tensor, {@code bias} an {@code [out]} one or is null. */
  public record Linear(String weight, String bias, Parallel parallel) implements Layer {
    public Linear {
      requireName("linear", "weight", weight);
      parallel = parallel == null ? Parallel.AUTO : parallel;
    }

    @Override
    public int build(ConfigGraph g, int width, String prefix, int index, List<Op> out) throws ModelFormatException {
      return g.linear(this, width, prefix + index, out);
    }

    @Override
    public String type() {
      return "linear";
    }

    @Override
    public void tensorNames(Set<String> out) {
      addIfSet(out, weight, bias);
    }

    @Override
    public void write(ObjectNode o) {
      o.put("weight", weight);
      putIfSet(o, "bias", bias);
      o.put("parallel", parallel.id());
    }
  }

  /** An activation; its width is the previous layer's. */
  public record Act(Activation activation) implements Layer {
    @Override
    public int build(ConfigGraph g, int width, String prefix, int index, List<Op> out) {
      return g.activation(this, width, out);
    }

    @Override
    public String type() {
      return activation.id();
    }
  }

  /** Layer normalisation over each row; {@code weight} and {@code bias} name {@code [width]} tensors or are null. */
  public record LayerNorm(String weight, String bias, float eps) implements Layer {
    public LayerNorm {
      if (!(eps > 0) || Float.isInfinite(eps)) {
        throw new IllegalArgumentException("layer_norm eps must be a positive number, got " + eps);
      }
    }

    @Override
    public int build(ConfigGraph g, int width, String prefix, int index, List<Op> out) throws ModelFormatException {
      return g.layerNorm(this, width, prefix + index, out);
    }

    @Override
    public String type() {
      return "layer_norm";
    }

    @Override
    public void tensorNames(Set<String> out) {
      addIfSet(out, weight, bias);
    }

    @Override
    public void write(ObjectNode o) {
      putIfSet(o, "weight", weight);
      putIfSet(o, "bias", bias);
      // the shortest decimal that reads back as the same float (1e-5f, not 9.99999974e-6)
      o.put("eps", Double.parseDouble(Float.toString(eps)));
    }
  }

  /** An embedding table {@code [vocab, dim]}; with {@code bag}, each row is a list of ids, summed or averaged. */
  public record Embedding(String weight, boolean bag, boolean mean) implements Layer {
    public Embedding {
      requireName(bag ? "embedding_bag" : "embedding", "weight", weight);
    }

    @Override
    public int build(ConfigGraph g, int width, String prefix, int index, List<Op> out) throws ModelFormatException {
      return g.embedding(this, width, prefix + index, out);
    }

    @Override
    public String type() {
      return bag ? "embedding_bag" : "embedding";
    }

    @Override
    public void tensorNames(Set<String> out) {
      out.add(weight);
    }

    @Override
    public void write(ObjectNode o) {
      o.put("weight", weight);
      if (bag) {
        o.put("mode", mean ? "mean" : "sum");
      }
    }
  }

  /** {@code y = x + f(x)} where {@code f} is {@code layers}. */
  public record Residual(List<Layer> layers) implements Layer {
    public Residual {
      if (layers == null || layers.isEmpty()) {
        throw new IllegalArgumentException("A residual block needs at least one layer");
      }
      layers = List.copyOf(layers);
    }

    @Override
    public int build(ConfigGraph g, int width, String prefix, int index, List<Op> out) throws ModelFormatException {
      return g.residual(this, width, prefix + index, index, out);
    }

    @Override
    public String type() {
      return "residual";
    }

    @Override
    public List<Layer> children() {
      return layers;
    }

    @Override
    public void write(ObjectNode o) {
      ModelConfig.write(o.putArray("layers"), layers);
    }
  }

  public ModelConfig {
    if (inputDim <= 0) {
      throw new IllegalArgumentException("input_dim must be positive, got " + inputDim);
    }
    if (layers == null || layers.isEmpty()) {
      throw new IllegalArgumentException("A model needs at least one layer");
    }
    layers = List.copyOf(layers);
    checkEmbeddings(layers, "layer ", true);
  }

  private static void checkEmbeddings(List<Layer> layers, String prefix, boolean top) {
    for (int i = 0; i < layers.size(); i++) {
      Layer l = layers.get(i);
      if (l.type().startsWith("embedding") && !(top && i == 0)) {
        throw new IllegalArgumentException(prefix + i + " (" + l.type()
            + "): an embedding may only be the first layer of a model");
      }
      if (!l.children().isEmpty()) {
        checkEmbeddings(l.children(), prefix + i + ".", false);
      }
    }
  }

  private static void requireName(String type, String field, String name) {
    if (name == null || name.isEmpty()) {
      throw new IllegalArgumentException(type + " needs a tensor name in '" + field + "'");
    }
  }

  /** Every layer type name, for error messages. */
  public static String validTypes() {
    List<String> all = new ArrayList<>(WEIGHTED_TYPES);
    for (Activation a : Activation.values()) {
      all.add(a.id());
    }
    return String.join(", ", all);
  }

  /** The names of every tensor the layers refer to, in layer order, each once. */
  public Set<String> tensorNames() {
    Set<String> out = new LinkedHashSet<>();
    collect(layers, out);
    return out;
  }

  private static void collect(List<Layer> layers, Set<String> out) {
    for (Layer l : layers) {
      l.tensorNames(out);
    }
  }

  // ---------------------------------------------------------------- reading

  /** Reads {@code file} through Hadoop's {@link FileSystem}. */
  public static ModelConfig read(Path file, Configuration conf) throws IOException {
    FileSystem fs = file.getFileSystem(conf);
    byte[] bytes;
    try (FSDataInputStream in = fs.open(file)) {
      bytes = in.readAllBytes();
    }
    return parse(new String(bytes, StandardCharsets.UTF_8), file.toString());
  }

  /** Parses the text of a {@code config.json}; {@code source} names it in error messages. */
  public static ModelConfig parse(String json, String source) throws ModelFormatException {
    String where = "Invalid " + source + ": ";
    JsonNode root;
    try {
      ObjectMapper mapper = new ObjectMapper();
      mapper.enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);
      root = mapper.readTree(json);
    } catch (JsonProcessingException e) {
      throw new ModelFormatException(where + "not valid JSON: " + e.getOriginalMessage(), e);
    }
    if (root == null || !root.isObject()) {
      throw new ModelFormatException(where + "expected a JSON object {\"spark_tp\": 1, \"input_dim\": ..., "
          + "\"layers\": [...]}");
    }
    JsonNode version = root.get("spark_tp");
    if (version == null) {
      throw new ModelFormatException(where + "missing field 'spark_tp' (the format version; use \"spark_tp\": "
          + VERSION + ")");
    }
    if (!version.isIntegralNumber() || version.asLong() != VERSION) {
      throw new ModelFormatException(where + "unsupported format version \"spark_tp\": " + version
          + "; this version of spark-tp reads version " + VERSION);
    }
    JsonNode dim = root.get("input_dim");
    if (dim == null) {
      throw new ModelFormatException(where + "missing field 'input_dim' (the input width, or the vocabulary "
          + "size when the first layer is an embedding)");
    }
    if (!dim.isIntegralNumber() || !dim.canConvertToInt() || dim.asInt() <= 0) {
      throw new ModelFormatException(where + "'input_dim' must be a positive integer, found " + dim);
    }
    JsonNode layers = root.get("layers");
    if (layers == null) {
      throw new ModelFormatException(where + "missing field 'layers' (the list of layers)");
    }
    List<Layer> parsed = parseLayers(where, layers, "layer ");
    try {
      return new ModelConfig(dim.asInt(), parsed);
    } catch (IllegalArgumentException e) {
      throw new ModelFormatException(where + e.getMessage(), e);
    }
  }

  private static List<Layer> parseLayers(String where, JsonNode layers, String prefix) throws ModelFormatException {
    if (!layers.isArray() || layers.isEmpty()) {
      throw new ModelFormatException(where + "'layers' must be a non-empty array"
          + (prefix.equals("layer ") ? "" : " (in " + prefix.substring(0, prefix.length() - 1) + ")"));
    }
    List<Layer> out = new ArrayList<>();
    for (int i = 0; i < layers.size(); i++) {
      out.add(parseLayer(where, layers.get(i), prefix + i));
    }
    return out;
  }

  private static Layer parseLayer(String where, JsonNode node, String at) throws ModelFormatException {
    String here = where + at + ": ";
    if (!node.isObject()) {
      throw new ModelFormatException(here + "expected an object with a 'type', found " + node);
    }
    JsonNode typeNode = node.get("type");
    if (typeNode == null) {
      throw new ModelFormatException(here + "missing field 'type'; valid types: " + validTypes());
    }
    if (!typeNode.isTextual()) {
      throw new ModelFormatException(here + "'type' must be a string, found " + typeNode);
    }
    String type = typeNode.asText().trim().toLowerCase(Locale.ROOT);
    try {
      switch (type) {
        case "linear" -> {
          allowOnly(here, node, "type", "weight", "bias", "parallel");
          String p = optionalString(here, node, "parallel");
          return new Linear(requiredString(here, node, "weight"), optionalString(here, node, "bias"),
              Parallel.parse(p));
        }
        case "layer_norm" -> {
          allowOnly(here, node, "type", "weight", "bias", "eps");
          JsonNode eps = node.get("eps");
          if (eps != null && !eps.isNumber()) {
            throw new ModelFormatException(here + "'eps' must be a number, found " + eps);
          }
          return new LayerNorm(optionalString(here, node, "weight"), optionalString(here, node, "bias"),
              eps == null ? DEFAULT_EPS : (float) eps.asDouble());
        }
        case "embedding" -> {
          allowOnly(here, node, "type", "weight");
          return new Embedding(requiredString(here, node, "weight"), false, false);
        }
        case "embedding_bag" -> {
          allowOnly(here, node, "type", "weight", "mode");
          String mode = optionalString(here, node, "mode");
          if (mode != null && !mode.equals("mean") && !mode.equals("sum")) {
            throw new ModelFormatException(here + "embedding_bag 'mode' must be \"mean\" or \"sum\", found \""
                + mode + "\"");
          }
          return new Embedding(requiredString(here, node, "weight"), true, mode == null || mode.equals("mean"));
        }
        case "residual" -> {
          allowOnly(here, node, "type", "layers");
          JsonNode inner = node.get("layers");
          if (inner == null) {
            throw new ModelFormatException(here + "missing field 'layers' (the layers f of x + f(x))");
          }
          return new Residual(parseLayers(where, inner, at + "."));
        }
        default -> {
          Activation act = activation(type);
          if (act == null) {
            throw new ModelFormatException(here + "unknown layer type '" + typeNode.asText() + "'; valid types: "
                + validTypes());
          }
          allowOnly(here, node, "type");
          return new Act(act);
        }
      }
    } catch (IllegalArgumentException e) {
      throw new ModelFormatException(here + e.getMessage(), e);
    }
  }

  private static Activation activation(String type) {
    for (Activation a : Activation.values()) {
      if (a.id().equals(type)) {
        return a;
      }
    }
    return null;
  }

  private static void allowOnly(String here, JsonNode node, String... keys) throws ModelFormatException {
    List<String> allowed = List.of(keys);
    for (Iterator<String> it = node.fieldNames(); it.hasNext(); ) {
      String k = it.next();
      if (!allowed.contains(k)) {
        throw new ModelFormatException(here + "unknown field '" + k + "' for type '" + node.get("type").asText()
            + "'; allowed fields: " + String.join(", ", allowed));
      }
    }
  }

  private static String requiredString(String here, JsonNode node, String field) throws ModelFormatException {
    String s = optionalString(here, node, field);
    if (s == null) {
      throw new ModelFormatException(here + "missing field '" + field + "' (a tensor name) for type '"
          + node.get("type").asText() + "'");
    }
    return s;
  }

  private static String optionalString(String here, JsonNode node, String field) throws ModelFormatException {
    JsonNode v = node.get(field);
    if (v == null || v.isNull()) {
      return null;
    }
    if (!v.isTextual() || v.asText().isEmpty()) {
      throw new ModelFormatException(here + "'" + field + "' must be a non-empty string, found " + v);
    }
    return v.asText();
  }

  // ---------------------------------------------------------------- writing

  /** The config as pretty-printed JSON. */
  public String toJson() {
    ObjectMapper mapper = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
    ObjectNode root = mapper.createObjectNode();
    root.put("spark_tp", VERSION);
    root.put("input_dim", inputDim);
    write(root.putArray("layers"), layers);
    try {
      return mapper.writeValueAsString(root) + "\n";
    } catch (JsonProcessingException e) {
      throw new IllegalStateException("Cannot serialise config.json", e);
    }
  }

  private static void write(ArrayNode out, List<Layer> layers) {
    for (Layer l : layers) {
      ObjectNode o = out.addObject();
      o.put("type", l.type());
      l.write(o);
    }
  }

  /** Writes the config to {@code file} through Hadoop's {@link FileSystem}, replacing any file there. */
  public void write(Path file, Configuration conf) throws IOException {
    try (FSDataOutputStream out = HadoopFiles.create(file, conf)) {
      out.write(toJson().getBytes(StandardCharsets.UTF_8));
    }
  }

  /**
   * The layer name for a weight tensor: the tensor name without a trailing {@code .weight} or
   * {@code .bias} ({@code fc1.weight -> fc1}), or the tensor name itself.
   */
  public static String layerName(String tensor) {
    for (String suffix : new String[] {".weight", ".bias"}) {
      if (tensor.endsWith(suffix) && tensor.length() > suffix.length()) {
        return tensor.substring(0, tensor.length() - suffix.length());
      }
    }
    return tensor;
  }
}
