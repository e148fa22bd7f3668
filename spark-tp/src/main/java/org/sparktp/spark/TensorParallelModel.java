package org.sparktp.spark;

import java.util.ArrayList;
import java.util.List;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.ml.param.ParamMap;
import org.apache.spark.ml.util.Identifiable$;
import org.apache.spark.ml.util.MLReader;
import org.apache.spark.ml.util.MLWritable;
import org.apache.spark.ml.util.MLWriter;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.StructType;
import org.sparktp.TpConf;
import org.sparktp.model.LayerModel;
import org.sparktp.nn.plan.LayerGraph;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.tensor.DType;

/**
 * A model run with tensor parallelism over the rows of a DataFrame: every weight matrix is split across
 * the {@code tpSize} ranks of a group (Megatron-style column/row parallel layers, see {@link ModelPlan}), the
 * ranks of a group are the tasks of a Spark barrier stage, and {@code groups} groups share the rows
 * (data parallel x tensor parallel).
 *
 * <p>{@code transform} appends {@code outputCol} ({@code array<float>}, the model's output per row) to
 * the input; every other column passes through, the output has exactly the input's rows (see
 * {@code spark.tp.null-policy} for null inputs) and, by default, the input's partitioning with each
 * partition in its input order. The input column is {@code array<float>}, {@code array<double>} or an ML
 * {@code Vector} (dense or sparse) of the model's input width; for a model that starts with an embedding,
 * {@code int}/{@code long} ids, or {@code array<int|long>} lists of ids for an embedding bag. Values are
 * converted to float32. NaN and infinities are not checked: they propagate as IEEE float arithmetic does
 * (a NaN in a row's input makes that row's outputs NaN, and, through a layer norm or softmax, the whole
 * row). Rows never mix: a row's output depends on that row alone.
 *
 * <p>Params ({@link TpModelParams}): {@code inputCol} (default {@code features}), {@code outputCol} (default
 * {@code prediction}), {@code tpSize}, {@code groups}, {@code batchSize}, {@code backend}, ...; a param left
 * unset takes its {@code spark.tp.*} setting: an option of {@link #setConf}, else a local property of the calling
 * thread, else the session conf, else the default ({@link TpConf}), resolved once per job ({@link #settings}).
 *
 * <p>Weights go to the executors as one broadcast per rank (an executor fetches only the shards of its
 * ranks), made once per model and tp size; executors keep loaded shards in their {@link ShardCache}, so
 * later jobs with the same model load nothing. {@link #release()} destroys the broadcasts.
 *
 * <p>Saved with {@link #write()} (alone or as a stage of a saved {@code Pipeline}): the params and the
 * {@link #setConf} options as Spark ML metadata; a layer list's weights as a model directory ({@code config.json} +
 * {@code model.safetensors}) under {@code weights/}, a Hugging Face model by the location of its directory (not
 * copied: it must still be there when the model is loaded). A loaded model reads its shards from there, each rank
 * only its own byte ranges ({@link #fromDirectory}).
 */
public final class TensorParallelModel extends TpModelParams implements MLWritable {
  private static final long serialVersionUID = 1L;
  // --- issue 12: the output columns of task generate ---
  public static final String GENERATED_IDS = "generated_ids";
  public static final String GENERATED_TEXT = "generated_text";
  public static final String FINISH_REASON = "finish_reason";
  static final List<String> GENERATE_COLUMNS = List.of(GENERATED_IDS, GENERATED_TEXT, FINISH_REASON);

  /** What the model runs and where its weights are, whatever its format (shared by the model's copies). */
  final ModelLoader.Loaded loaded;
  transient volatile TpMetrics lastMetrics;

  /** A layer-list model held in memory ({@link LayerModel#builder}); its weights go to the ranks as broadcasts. */
  public TensorParallelModel(LayerModel model) {
    this(Identifiable$.MODULE$.randomUID("tpModel"), model);
  }

  public TensorParallelModel(String uid, LayerModel model) {
    this(uid, new ModelLoader.LayerList(java.util.Objects.requireNonNull(model, "A TensorParallelModel needs a "
        + "model")));
  }

  /**
   * A model read from a model directory ({@code config.json} + safetensors, or a Hugging Face checkpoint, on any
   * Hadoop file system). The driver opens it and validates every tensor against the config before any task runs,
   * but loads no weights: each rank reads only the byte ranges of its own shards.
   */
  public static TensorParallelModel fromDirectory(String dir) {
    return ModelLoader.fromDirectory(Identifiable$.MODULE$.randomUID("tpModel"), dir);
  }

  TensorParallelModel(String uid, ModelLoader.Loaded loaded) {
    super(uid);
    this.loaded = loaded;
  }

  /** The layer-list model's ops, or null for a model of another format (a Hugging Face checkpoint). */
  public LayerGraph graph() {
    return loaded.graph();
  }

  /**
   * The plan this model runs with {@code p} ranks, whatever its format (its {@code explain()} prints ops, layouts and
   * collectives): a layer list's {@link org.sparktp.nn.plan.Plan}, or a Hugging Face model's plan for the task,
   * pooling and normalize of its params and {@code spark.tp.truncate} on the active session.
   */
  public ModelPlan plan(int p) {
    return new TransformFlow(this).plan(p, settings(active()));
  }

  /**
   * The weights' storage type for this model's jobs: the {@code dtype} param, else {@code spark.tp.dtype} as
   * {@link #settings} resolves it on {@code spark}, {@code auto} resolved against the checkpoint's dtype and this
   * CPU (see {@link org.sparktp.backend.Precision#resolve}).
   */
  public DType resolveDtype(String backendName, SparkSession spark) {
    return new TransformFlow(this).resolveDtype(backendName, settings(spark));
  }

  /** The metrics of the last {@link #transform} (filled in as its job runs), or null. */
  public TpMetrics lastMetrics() {
    return lastMetrics;
  }

  @Override
  public StructType transformSchema(StructType schema) {
    return new TransformFlow(this).transformSchema(schema);
  }

  /**
   * Runs the model on every row of {@code dataset} (lazily, like any transformation: the job runs when
   * the result is used). The schema and the cluster are checked here, before any job: a missing or
   * non-numeric input column, an existing output column, too few task slots for {@code groups x tpSize}
   * tasks, or dynamic allocation fail at once with what to change.
   */
  @Override
  public Dataset<Row> transform(Dataset<?> dataset) {
    return new TransformFlow(this).transform(dataset);
  }

  /**
   * Destroys the per-rank broadcasts (they are made again by the next {@link #transform}) and frees the
   * shards that the executors' caches hold idle for this model: a small job with one task placed on
   * each registered executor (and a few more) removes them (best effort: an executor that runs none of
   * its tasks, e.g. when Spark places the task elsewhere, frees them by LRU eviction); returns how many
   * cached rank models were freed.
   */
  public int release() {
    loaded.release();
    SparkSession spark = active();
    if (spark == null) {
      return ShardCache.get().invalidate(modelId());
    }
    SparkContext sc = spark.sparkContext();
    if (sc.isLocal()) {
      return ShardCache.get().invalidate(modelId());
    }
    // one task per registered executor, placed on it (as the barrier tasks are), plus a few unplaced ones
    List<String> executors = new ArrayList<>();
    scala.collection.Iterator<org.apache.spark.storage.BlockManagerId> ids = org.apache.spark.SparkEnv.get()
        .blockManager().master().getMemoryStatus().keysIterator();
    while (ids.hasNext()) {
      org.apache.spark.storage.BlockManagerId b = ids.next();
      if (!b.isDriver()) {
        executors.add("executor_" + b.host() + "_" + b.executorId());
      }
    }
    int n = executors.size() + Math.max(1, sc.defaultParallelism());
    String[] placements = new String[n];
    for (int i = 0; i < executors.size(); i++) {
      placements[i] = executors.get(i);
    }
    List<Integer> seq = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      seq.add(i);
    }
    String id = modelId();
    scala.reflect.ClassTag<Integer> tag = scala.reflect.ClassTag$.MODULE$.apply(Integer.class);
    org.apache.spark.rdd.RDD<Integer> placed = new PlacedRDD<>(JavaSparkContext.fromSparkContext(sc)
        .parallelize(seq, n).rdd(), placements, tag);
    return placed.toJavaRDD().map(i -> ShardCache.get().invalidate(id)).reduce(Integer::sum);
  }

  private String modelId() {
    return loaded.modelId;
  }

  static SparkSession active() {
    return SparkSession.getActiveSession().isDefined() ? SparkSession.getActiveSession().get() : null;
  }

  @Override
  public TensorParallelModel copy(ParamMap extra) {
    TensorParallelModel m = new TensorParallelModel(uid(), loaded);
    m.conf.putAll(conf);
    return copyValues(m, extra).setParent(parent());
  }

  @Override
  public MLWriter write() {
    return new ModelLoader.Writer(this);
  }

  public static MLReader<TensorParallelModel> read() {
    return new ModelLoader.Reader();
  }

  public static TensorParallelModel load(String path) {
    return read().load(path);
  }
}
