package org.sparktp.spark;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
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
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.ops.TransformerModel;
import org.sparktp.tensor.DType;

/**
 * Where a {@link TensorParallelModel}'s weights come from and go to: a model directory opened on the driver
 * ({@link #fromDirectory}: validated, no weights loaded), the per-rank broadcasts of a model held in memory
 * ({@link Shards}), a Hugging Face checkpoint ({@link HfShards}), and ML save/load ({@link Writer},
 * {@link Reader}: the params as Spark ML metadata, the weights as a model directory under {@value #WEIGHTS_DIR}).
 */
final class ModelLoader {
  /** Where {@link Writer} puts the weights: a model directory (config.json + model.safetensors). */
  static final String WEIGHTS_DIR = "weights";

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
      if (!path.getFileSystem(hadoop).exists(path)) {
        throw new IllegalArgumentException("Model directory " + dir + " does not exist");
      }
      if (HfModel.isHuggingFace(path, hadoop)) {
        try (HfModel m = HfModel.open(path, hadoop)) {
          String qualified = path.getFileSystem(hadoop).makeQualified(path).toString();
          return new TensorParallelModel(uid, null, null, new HfShards(m.model(), qualified, m.hasTokenizer(),
              m.weightDtype()));
        }
      }
    } catch (IOException e) {
      throw new IllegalArgumentException("Cannot open the model directory " + dir + ": " + e.getMessage(), e);
    }
    try (ModelDirectory d = ModelDirectory.open(path, hadoop)) {
      FileSystem fs = path.getFileSystem(hadoop);
      String qualified = fs.makeQualified(path).toString();
      LayerGraph graph = d.graph();
      return new TensorParallelModel(uid, graph, new Shards(graph, null, qualified, identity(qualified,
          d.files(hadoop), fs), d.weightDtype()));
    } catch (IOException e) {
      throw new IllegalArgumentException("Cannot open the model directory " + dir + ": " + e.getMessage(), e);
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

  /** A Hugging Face model directory: the ops (no weights) and where each rank reads its slices. */
  static final class HfShards implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    final String modelId = UUID.randomUUID().toString();
    final TransformerModel model;
    final String dir;
    final boolean tokenizer;
    final DType weightDtype; // the checkpoint's weight dtype (what auto resolves against)

    HfShards(TransformerModel model, String dir, boolean tokenizer, DType weightDtype) {
      this.weightDtype = weightDtype;
      this.model = model;
      this.dir = dir;
      this.tokenizer = tokenizer;
    }
  }

  /** Plans and per-rank broadcasts of one model, shared by its copies. */
  static final class Shards implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    final String modelId; // the directory's identity, or random for a model held in memory
    private final transient LayerGraph graph;
    private final transient LayerModel memory; // the weights of a model held in memory, else null
    private final String checkpoint; // a model directory each rank reads its shard from, or null
    final DType checkpointDtype; // storage dtype of the checkpoint's weights, or null for in-memory weights
    private transient Map<Integer, Plan> plans;
    private transient Map<Integer, List<Broadcast<RankWeights>>> broadcasts;
    private transient SparkContext owner;
    private transient Map<String, String[]> placements;

    Shards(LayerGraph graph, LayerModel memory, String checkpoint, String identity, DType checkpointDtype) {
      this.checkpointDtype = checkpointDtype;
      this.graph = graph;
      this.memory = memory;
      this.checkpoint = checkpoint;
      this.modelId = identity != null ? identity : UUID.randomUUID().toString();
    }

    /** Copies the checkpoint's files (streamed; no weights in the driver's memory) into {@code dst}. */
    void copyCheckpoint(Path dst, org.apache.hadoop.conf.Configuration hadoop) throws IOException {
      Path src = new Path(checkpoint);
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
    }

    /** Per-rank reads of the checkpoint when the model came from a directory, else per-rank broadcasts. */
    ShardSource source(SparkContext sc, Plan plan) {
      return checkpoint != null ? new ShardSource.Checkpoint(checkpoint, plan)
          : new ShardSource.Broadcasts(broadcasts(sc, plan));
    }

    /** True when the weights are held in this driver's memory (not read from a checkpoint by each rank). */
    boolean inMemory() {
      return memory != null;
    }

    /** The whole model with its weights (read from the checkpoint when it is one). */
    LayerModel loaded(org.apache.hadoop.conf.Configuration hadoop) throws IOException {
      if (checkpoint == null) {
        return memory;
      }
      try (ModelDirectory d = ModelDirectory.open(new Path(checkpoint), hadoop)) {
        return d.load();
      }
    }

    synchronized Plan plan(int p) {
      if (plans == null) {
        plans = new HashMap<>();
      }
      return plans.computeIfAbsent(p, q -> Plan.build(graph, q));
    }

    /** One broadcast per rank, each holding only that rank's shard; made once per tp size and context. */
    synchronized List<Broadcast<RankWeights>> broadcasts(SparkContext sc, Plan plan) {
      if (broadcasts == null || owner != sc) {
        broadcasts = new HashMap<>();
        placements = null; // executors of another context
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

    /**
     * Where the barrier tasks of a job with {@code p} ranks and {@code g} groups ran last, updated with
     * what {@code last} (the previous job's metrics, possibly of another shape or not run) recorded.
     */
    synchronized String[] placements(int p, int g, TpMetrics last) {
      if (placements == null) {
        placements = new HashMap<>();
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

    synchronized void release() {
      if (broadcasts != null) {
        for (List<Broadcast<RankWeights>> l : broadcasts.values()) {
          l.forEach(b -> b.destroy());
        }
        broadcasts = null;
      }
    }
  }

  static final class Writer extends MLWriter {
    private final TensorParallelModel model;

    Writer(TensorParallelModel model) {
      this.model = model;
    }

    @Override
    public void saveImpl(String path) {
      DefaultParamsWriter$.MODULE$.saveMetadata(model, path, sparkSession());
      Path dir = new Path(path, WEIGHTS_DIR);
      try {
        if (model.shards.checkpoint != null) {
          model.shards.copyCheckpoint(dir, sc().hadoopConfiguration()); // the files as they are, never loaded
          return;
        }
        ModelWriter.write(model.shards.loaded(sc().hadoopConfiguration()), dir, sc().hadoopConfiguration());
      } catch (IOException e) {
        throw new UncheckedIOException("Cannot write the model weights to " + dir + ": " + e.getMessage(), e);
      }
    }
  }

  static final class Reader extends MLReader<TensorParallelModel> {
    @Override
    public TensorParallelModel load(String path) {
      DefaultParamsReader.Metadata meta = DefaultParamsReader$.MODULE$.loadMetadata(path, sparkSession(),
          TensorParallelModel.class.getName());
      TensorParallelModel m = fromDirectory(meta.uid(), new Path(path, WEIGHTS_DIR).toString());
      meta.getAndSetParams(m, scala.Option.empty());
      return m;
    }
  }
}
