package org.sparktp.spark;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.ml.util.DefaultParamsReader;
import org.apache.spark.ml.util.DefaultParamsReader$;
import org.apache.spark.ml.util.DefaultParamsWriter$;
import org.apache.spark.ml.util.MLReader;
import org.apache.spark.ml.util.MLWriter;
import org.apache.spark.sql.SparkSession;
import org.sparktp.model.ModelDirectory;
import org.sparktp.model.ModelWriter;
import org.sparktp.model.hf.HfModel;
import org.sparktp.model.LayerModel;
import org.sparktp.nn.plan.LayerGraph;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.ops.TransformerModel;
import org.sparktp.tensor.DType;

/**
 * Where a {@link TensorParallelModel}'s weights come from and go to: a model directory of either format opened on the
 * driver ({@link #fromDirectory}: validated, no weights loaded) or a layer list held in memory, both seen through one
 * {@link Loaded} (how it plans, where each rank reads its slices, its tokenizer, how it is saved); ML save/load
 * ({@link Writer}, {@link Reader}: the params and options as Spark ML metadata, and the model's weights under
 * {@value #WEIGHTS_DIR}, or the location of the Hugging Face directory the model reads).
 */
final class ModelLoader {
  /** Where {@link Writer} puts the weights: a model directory (config.json + model.safetensors). */
  static final String WEIGHTS_DIR = "weights";
  /** The metadata key of the directory a saved model reads in place (a Hugging Face checkpoint). */
  static final String LOCATION_KEY = "sparkTpModelDirectory";
  /** The metadata key of the saved model's {@code spark.tp.*} options ({@link TpModelParams#setConf}). */
  static final String CONF_KEY = "sparkTpConf";

  private ModelLoader() {}

  /**
   * A model read from a model directory ({@code config.json} + safetensors, or a Hugging Face checkpoint, on any
   * Hadoop file system): the driver opens it and validates every tensor before any task runs, but loads no weights.
   */
  static TensorParallelModel fromDirectory(String uid, String dir) {
    SparkSession spark = TensorParallelModel.active();
    org.apache.hadoop.conf.Configuration hadoop = spark != null ? spark.sparkContext().hadoopConfiguration()
        : new org.apache.hadoop.conf.Configuration();
    Path path = new Path(dir);
    try {
      FileSystem fs = path.getFileSystem(hadoop);
      if (!fs.exists(path)) {
        throw new IllegalArgumentException("Model directory " + dir + " does not exist");
      }
      String qualified = fs.makeQualified(path).toString();
      if (HfModel.isHuggingFace(path, hadoop)) {
        try (HfModel m = HfModel.open(path, hadoop)) {
          return new TensorParallelModel(uid, new HfDirectory(m.model(), qualified, m.hasTokenizer(),
              m.weightDtype()));
        }
      }
      try (ModelDirectory d = ModelDirectory.open(path, hadoop)) {
        return new TensorParallelModel(uid, new LayerList(d.graph(), null, qualified,
            identity(qualified, d.files(hadoop), fs), d.weightDtype()));
      }
    } catch (IOException e) {
      throw new IllegalArgumentException("Cannot open the model directory " + dir + ": " + e.getMessage(), e);
    }
  }

  /** The weights of the model directory {@code dir} (either format), open; the caller closes the result. */
  static OpenWeights openWeights(String dir, org.apache.hadoop.conf.Configuration hadoop) throws IOException {
    Path path = new Path(dir);
    if (HfModel.isHuggingFace(path, hadoop)) {
      HfModel m = HfModel.open(path, hadoop);
      return OpenWeights.of(m, m::weightSource);
    }
    ModelDirectory d = ModelDirectory.open(path, hadoop);
    return OpenWeights.of(d, d::weightSource);
  }

  /** Reads what an open model directory holds. */
  interface WeightsOf {
    WeightSource get() throws IOException;
  }

  /** A model directory's weights and the open files behind them. */
  record OpenWeights(WeightSource source, AutoCloseable files) implements AutoCloseable {
    /** {@code files}' weights; {@code files} is closed when they cannot be read. */
    static OpenWeights of(AutoCloseable files, WeightsOf weights) throws IOException {
      try {
        return new OpenWeights(weights.get(), files);
      } catch (IOException | RuntimeException e) {
        try {
          files.close();
        } catch (Exception suppressed) {
          e.addSuppressed(suppressed);
        }
        throw e;
      }
    }

    @Override
    public void close() throws IOException {
      try {
        files.close();
      } catch (IOException | RuntimeException e) {
        throw e;
      } catch (Exception e) {
        throw new IOException(e);
      }
    }
  }

  /**
   * The identity of a model directory, the key of its shards in the executors' caches: a hash of its
   * qualified path and of each of its files' name, size and modification time. The same directory
   * opened twice shares its cached shards; a rewritten file makes a new identity.
   */
  static String identity(String qualified, List<Path> files, FileSystem fs) throws IOException {
    try {
      java.security.MessageDigest md = java.security.MessageDigest.getInstance("SHA-256");
      md.update(qualified.getBytes(java.nio.charset.StandardCharsets.UTF_8));
      for (Path f : files) {
        org.apache.hadoop.fs.FileStatus st = fs.getFileStatus(f);
        md.update(("\n" + f.getName() + "\t" + st.getLen() + "\t" + st.getModificationTime())
            .getBytes(java.nio.charset.StandardCharsets.UTF_8));
      }
      return "dir-" + java.util.HexFormat.of().formatHex(md.digest(), 0, 16);
    } catch (java.security.NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  /** What a model's params choose of its plan: the task (null: the model's default), pooling, normalize, truncation. */
  record PlanOptions(Task task, Pooling pooling, boolean normalize, boolean truncate) implements java.io.Serializable {}

  /**
   * A model as a {@link TensorParallelModel} runs it, whatever format it came from: its plan for {@code p} ranks,
   * where each rank reads its slices, the checkpoint's dtype, its tokenizer, and how ML write() saves it. Shared by
   * the model's copies.
   */
  abstract static class Loaded implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    final String modelId; // the directory's identity, or random
    final String dir; // the qualified model directory each rank reads its slices from, or null (weights in memory)
    final DType checkpointDtype; // the checkpoint's weight dtype (what auto resolves against), null in memory
    private final boolean tokenizer;
    private transient Map<String, String[]> placements;
    private transient SparkContext placementsOf; // placements name the executors of this context

    Loaded(String modelId, String dir, DType checkpointDtype, boolean tokenizer) {
      this.modelId = modelId != null ? modelId : UUID.randomUUID().toString();
      this.dir = dir;
      this.checkpointDtype = checkpointDtype;
      this.tokenizer = tokenizer;
    }

    /** The plan for {@code p} ranks with the choices of the model's params. */
    abstract ModelPlan plan(int p, PlanOptions options);

    /** The directory whose {@code tokenizer.json} turns text into ids, or null when the model has none. */
    final String tokenizerDir() {
      return tokenizer ? dir : null;
    }

    /** True when the model's params choose what it computes ({@code task}: a Hugging Face model); a layer list has one output. */
    boolean hasTasks() {
      return false;
    }

    /** True when the weights are held in this driver's memory (not read from a checkpoint by each rank). */
    final boolean inMemory() {
      return dir == null;
    }

    /** The layer list's ops, or null when the model is not one. */
    LayerGraph graph() {
      return null;
    }

    /** Where each rank of {@code plan} reads its slices: its own byte ranges of the checkpoint. */
    ShardSource source(SparkContext sc, ModelPlan plan) {
      return new ShardSource.Checkpoint(dir, plan);
    }

    /**
     * Saves the weights for ML write() into {@code weights} and returns null, or returns the directory a loaded copy
     * reads in place (nothing written).
     */
    abstract String save(Path weights, org.apache.hadoop.conf.Configuration hadoop) throws IOException;

    /** Frees what the driver holds for the model's jobs. */
    void release() {}

    /**
     * Where the barrier tasks of a job with {@code p} ranks and {@code g} groups ran last, updated with
     * what {@code last} (the previous job's metrics, possibly of another shape or not run) recorded.
     */
    final synchronized String[] placements(SparkContext sc, int p, int g, TpMetrics last) {
      if (placements == null || placementsOf != sc) {
        placements = new HashMap<>();
        placementsOf = sc;
      }
      String key = p + "x" + g;
      String[] known = placements.computeIfAbsent(key, k -> new String[p * g]);
      if (last != null && last.tpSize() == p && last.groups() == g) {
        String[] seen = last.placements();
        for (int i = 0; i < known.length; i++) {
          if (seen[i] != null) {
            known[i] = seen[i];
          }
        }
      }
      return known.clone();
    }
  }

  /**
   * A Hugging Face model directory: the ops (no weights), planned for the task its params choose; the ranks read
   * their slices from the directory, and ML write() records its location.
   */
  static final class HfDirectory extends Loaded {
    private static final long serialVersionUID = 1L;
    private final TransformerModel model;

    HfDirectory(TransformerModel model, String dir, boolean tokenizer, DType weightDtype) {
      super(null, dir, weightDtype, tokenizer);
      this.model = model;
    }

    @Override
    boolean hasTasks() {
      return true;
    }

    @Override
    ModelPlan plan(int p, PlanOptions o) {
      return TransformerGraph.plan(model, p, o.task(), o.pooling(), o.normalize(), o.truncate());
    }

    @Override
    String save(Path weights, org.apache.hadoop.conf.Configuration hadoop) {
      return dir;
    }
  }

  /**
   * A spark-tp layer list: held in memory (its weights go to the ranks as one broadcast per rank, made once per tp
   * size and context) or read from a model directory; its plan ignores the task params.
   */
  static final class LayerList extends Loaded {
    private static final long serialVersionUID = 1L;
    private final transient LayerGraph graph;
    private final transient LayerModel memory; // the weights of a model held in memory, else null
    private transient Map<Integer, Plan> plans;
    private transient Map<Integer, List<Broadcast<RankWeights>>> broadcasts;
    private transient SparkContext owner;

    LayerList(LayerGraph graph, LayerModel memory, String dir, String identity, DType checkpointDtype) {
      super(identity, dir, checkpointDtype, false);
      this.graph = graph;
      this.memory = memory;
    }

    /** A layer list held in memory. */
    LayerList(LayerModel model) {
      this(model.graph(), model, null, null, null);
    }

    @Override
    LayerGraph graph() {
      return graph;
    }

    @Override
    synchronized ModelPlan plan(int p, PlanOptions options) {
      if (plans == null) {
        plans = new HashMap<>();
      }
      return plans.computeIfAbsent(p, q -> Plan.build(graph, q));
    }

    /** Per-rank reads of the checkpoint when the model came from a directory, else per-rank broadcasts. */
    @Override
    ShardSource source(SparkContext sc, ModelPlan plan) {
      return dir != null ? super.source(sc, plan) : new ShardSource.Broadcasts(broadcasts(sc, plan));
    }

    /** Writes the layer list's weights, or copies the checkpoint's files (streamed, never loaded) into {@code dst}. */
    @Override
    String save(Path dst, org.apache.hadoop.conf.Configuration hadoop) throws IOException {
      if (dir == null) {
        ModelWriter.write(memory, dst, hadoop);
        return null;
      }
      Path src = new Path(dir);
      FileSystem srcFs = src.getFileSystem(hadoop);
      FileSystem dstFs = dst.getFileSystem(hadoop);
      String base = srcFs.makeQualified(src).toUri().getPath();
      try (ModelDirectory d = ModelDirectory.open(src, hadoop)) {
        for (Path f : d.files(hadoop)) {
          String rel = srcFs.makeQualified(f).toUri().getPath().substring(base.length()).replaceAll("^/+", "");
          if (!org.apache.hadoop.fs.FileUtil.copy(srcFs, f, dstFs, new Path(dst, rel), false, true, hadoop)) {
            throw new IOException("Cannot copy " + f + " to " + new Path(dst, rel));
          }
        }
      }
      return null;
    }

    /** One broadcast per rank, each holding only that rank's shard; made once per tp size and context. */
    private synchronized List<Broadcast<RankWeights>> broadcasts(SparkContext sc, ModelPlan plan) {
      if (broadcasts == null || owner != sc) {
        broadcasts = new HashMap<>();
        owner = sc;
      }
      List<Broadcast<RankWeights>> got = broadcasts.get(plan.tpSize());
      if (got == null) {
        JavaSparkContext jsc = JavaSparkContext.fromSparkContext(sc);
        WeightSource src = memory.weights();
        got = new ArrayList<>();
        for (int r = 0; r < plan.tpSize(); r++) {
          got.add(jsc.broadcast(plan.shard(src, r)));
        }
        got = List.copyOf(got);
        broadcasts.put(plan.tpSize(), got);
      }
      return got;
    }

    @Override
    synchronized void release() {
      if (broadcasts != null) {
        for (List<Broadcast<RankWeights>> l : broadcasts.values()) {
          l.forEach(b -> b.destroy());
        }
        broadcasts = null;
      }
    }
  }

  /**
   * ML write(): the params and the {@code spark.tp.*} options ({@value #CONF_KEY}) as Spark ML metadata; a layer
   * list's weights under {@value #WEIGHTS_DIR}, a Hugging Face model's directory by its location
   * ({@value #LOCATION_KEY}: it must still be there when the model is loaded).
   */
  static final class Writer extends MLWriter {
    private final TensorParallelModel model;

    Writer(TensorParallelModel model) {
      this.model = model;
    }

    @Override
    public void saveImpl(String path) {
      Path weights = new Path(path, WEIGHTS_DIR);
      String location;
      try {
        location = model.loaded.save(weights, sc().hadoopConfiguration());
      } catch (IOException e) {
        throw new UncheckedIOException("Cannot write the model weights to " + weights + ": " + e.getMessage(), e);
      }
      ObjectNode extra = JSON.createObjectNode();
      ObjectNode conf = extra.putObject(CONF_KEY);
      new java.util.TreeMap<>(model.conf).forEach(conf::put);
      if (location != null) {
        extra.put(LOCATION_KEY, location);
      }
      DefaultParamsWriter$.MODULE$.saveMetadata(model, path, sparkSession(),
          scala.Option.apply((org.json4s.JObject) org.json4s.jackson.JsonMethods$.MODULE$.fromJsonNode(extra)));
    }
  }

  /** ML load: the model from {@link Writer}'s metadata, its weights read where it put or named them. */
  static final class Reader extends MLReader<TensorParallelModel> {
    @Override
    public TensorParallelModel load(String path) {
      DefaultParamsReader.Metadata meta = DefaultParamsReader$.MODULE$.loadMetadata(path, sparkSession(),
          TensorParallelModel.class.getName());
      JsonNode json;
      try {
        json = JSON.readTree(meta.metadataJson());
      } catch (IOException e) {
        throw new UncheckedIOException("Cannot read the metadata of the model saved at " + path + ": "
            + e.getMessage(), e);
      }
      JsonNode location = json.get(LOCATION_KEY);
      TensorParallelModel m = fromDirectory(meta.uid(), location != null ? location.asText()
          : new Path(path, WEIGHTS_DIR).toString());
      meta.getAndSetParams(m, scala.Option.empty());
      JsonNode conf = json.get(CONF_KEY);
      if (conf != null) {
        conf.fields().forEachRemaining(e -> m.setConf(e.getKey(), e.getValue().asText()));
      }
      return m;
    }
  }

  private static final ObjectMapper JSON = new ObjectMapper();
}
