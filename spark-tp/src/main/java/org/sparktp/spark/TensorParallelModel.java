package org.sparktp.spark;

import java.io.IOException;
import java.io.InputStream;
import java.io.ObjectInputFilter;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.UUID;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.SparkContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.ml.Model;
import org.apache.spark.ml.param.BooleanParam;
import org.apache.spark.ml.param.IntParam;
import org.apache.spark.ml.param.Param;
import org.apache.spark.ml.param.ParamMap;
import org.apache.spark.ml.param.ParamValidators;
import org.apache.spark.ml.util.DefaultParamsReader;
import org.apache.spark.ml.util.DefaultParamsWriter$;
import org.apache.spark.ml.util.DefaultParamsReader$;
import org.apache.spark.ml.util.Identifiable$;
import org.apache.spark.ml.util.MLReader;
import org.apache.spark.ml.util.MLWritable;
import org.apache.spark.ml.util.MLWriter;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.model.ModelDirectory;
import org.sparktp.model.ModelWriter;
import org.sparktp.model.TextTokenizer;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.ops.TransformerModel;
import org.sparktp.nn.ops.TransformerPlan;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.gen.GenerateParams;
import org.sparktp.backend.Precision;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.tensor.DType;

/**
 * A model run with tensor parallelism over the rows of a DataFrame: every weight matrix is split across
 * the {@code tpSize} ranks of a group (Megatron-style column/row parallel layers, see {@link Plan}), the
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
 * <p>Params: {@code inputCol} (default {@code features}), {@code outputCol} (default
 * {@code prediction}), {@code tpSize}, {@code groups}, {@code batchSize}, {@code backend}; a param left
 * unset takes its {@code spark.tp.*} session conf, else the default ({@link TpConf}). The other
 * {@code spark.tp.*} keys are read from the session conf, or from {@link #setConf}.
 *
 * <p>Weights go to the executors as one broadcast per rank (an executor fetches only the shards of its
 * ranks), made once per model and tp size; executors keep loaded shards in their {@link ShardCache}, so
 * later jobs with the same model load nothing. {@link #release()} destroys the broadcasts.
 *
 * <p>Saved with {@link #write()}: the params (Spark ML metadata) and the weights as a model directory
 * ({@code config.json} + {@code model.safetensors}) under {@code weights/}; a loaded model reads its
 * shards from there, each rank only its own byte ranges ({@link #fromDirectory}).
 */
public final class TensorParallelModel extends Model<TensorParallelModel> implements MLWritable {
  private static final long serialVersionUID = 1L;
  /** Where {@link #write()} puts the weights: a model directory (config.json + model.safetensors). */
  static final String WEIGHTS_DIR = "weights";

  private final String uid;
  private final ModelSpec spec;
  private final Shards shards;
  private final Map<String, String> conf = new HashMap<>();
  // --- issue 12: the output columns of task generate ---
  public static final String GENERATED_IDS = "generated_ids";
  public static final String GENERATED_TEXT = "generated_text";
  public static final String FINISH_REASON = "finish_reason";
  static final List<String> GENERATE_COLUMNS = List.of(GENERATED_IDS, GENERATED_TEXT, FINISH_REASON);
  private transient volatile TpMetrics lastMetrics;

  private final Param<String> inputCol;
  private final Param<String> outputCol;
  private final IntParam tpSize;
  private final IntParam groups;
  private final IntParam batchSize;
  private final Param<String> backend;
  // --- issue 10: a Hugging Face transformer (spec is null then) ---
  private final HfShards hf;
  private final Param<String> task;
  private final Param<String> pooling;
  private final BooleanParam normalize;
  private final Param<String> dtype;
  // --- issue 9b: activation dtype ---
  private final Param<String> activationDtype;
  // --- issue 12: task generate ---
  private final IntParam maxNewTokens;
  private final org.apache.spark.ml.param.DoubleParam temperature;
  private final IntParam topK;
  private final org.apache.spark.ml.param.DoubleParam topP;
  private final org.apache.spark.ml.param.DoubleParam repetitionPenalty;
  private final org.apache.spark.ml.param.LongParam seed;
  private final Param<String> seedCol;
  private final org.apache.spark.ml.param.StringArrayParam stop;
  private final org.apache.spark.ml.param.IntArrayParam stopIds;

  public TensorParallelModel(ModelSpec spec) {
    this(Identifiable$.MODULE$.randomUID("tpModel"), spec, new Shards(spec, null, null, null));
  }

  public TensorParallelModel(String uid, ModelSpec spec) {
    this(uid, spec, new Shards(spec, null, null, null));
  }

  /**
   * A model read from a model directory ({@code config.json} + safetensors, on any Hadoop file system).
   * The driver opens it and validates every tensor against the config before any task runs, but loads
   * no weights: each rank reads only the byte ranges of its own shards.
   */
  public static TensorParallelModel fromDirectory(String dir) {
    return fromDirectory(Identifiable$.MODULE$.randomUID("tpModel"), dir);
  }

  static TensorParallelModel fromDirectory(String uid, String dir) {
    SparkSession spark = active();
    org.apache.hadoop.conf.Configuration hadoop = spark != null ? spark.sparkContext().hadoopConfiguration()
        : new org.apache.hadoop.conf.Configuration();
    Path path = new Path(dir);
    try {
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
      ModelSpec structure = d.structure();
      return new TensorParallelModel(uid, structure, new Shards(structure, qualified, identity(qualified,
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

  private TensorParallelModel(String uid, ModelSpec spec, Shards shards) {
    this(uid, spec, shards, null);
  }

  private TensorParallelModel(String uid, ModelSpec spec, Shards shards, HfShards hf) {
    if (spec == null && hf == null) {
      throw new IllegalArgumentException("A TensorParallelModel needs a ModelSpec");
    }
    this.uid = uid;
    this.spec = spec;
    this.shards = shards;
    this.hf = hf;
    task = new Param<>(this, "task", "transformers: embed, logits, score or generate (default: embed for encoders, logits for"
        + " causal LMs)", ParamValidators.inArray(new String[] {"embed", "logits", "score", "generate"}));
    pooling = new Param<>(this, "pooling", "task embed: mean, cls or last (default mean for encoders, last for "
        + "decoders)", ParamValidators.inArray(new String[] {"mean", "cls", "last"}));
    normalize = new BooleanParam(this, "normalize", "task embed: L2-normalize each embedding (default false)");
    setDefault(normalize, false);
    maxNewTokens = new IntParam(this, "maxNewTokens", "task generate: new tokens per row at most (default 64)",
        ParamValidators.gtEq(1));
    temperature = new org.apache.spark.ml.param.DoubleParam(this, "temperature", "task generate: 0 = greedy "
        + "(default), else sampling from softmax(logits / temperature)", ParamValidators.gtEq(0));
    topK = new IntParam(this, "topK", "task generate, sampling: keep the k most likely tokens (0 = all, default)",
        ParamValidators.gtEq(0));
    topP = new org.apache.spark.ml.param.DoubleParam(this, "topP", "task generate, sampling: keep the nucleus of "
        + "this mass (1 = all, default)", ParamValidators.inRange(0, 1, false, true));
    repetitionPenalty = new org.apache.spark.ml.param.DoubleParam(this, "repetitionPenalty", "task generate: HF's "
        + "repetition penalty on the ids seen (1 = none, default)", ParamValidators.gt(0));
    seed = new org.apache.spark.ml.param.LongParam(this, "seed", "task generate, sampling: the seed of every row "
        + "(default 0); a row's draws depend only on it and its logits");
    seedCol = new Param<>(this, "seedCol", "task generate, sampling: an int or long column with each row's seed "
        + "(a null value: the seed param)");
    stop = new org.apache.spark.ml.param.StringArrayParam(this, "stop", "task generate: strings that end a row "
        + "(finish_reason stop; needs the model's tokenizer)");
    stopIds = new org.apache.spark.ml.param.IntArrayParam(this, "stopIds", "task generate: token ids that end a "
        + "row (finish_reason stop); the model's eos_token_id ends it with eos");
    setDefault(maxNewTokens, 64);
    setDefault(temperature, 0.0);
    setDefault(topK, 0);
    setDefault(topP, 1.0);
    setDefault(repetitionPenalty, 1.0);
    setDefault(seed, 0L);
    setDefault(stop, new String[0]);
    setDefault(stopIds, new int[0]);
    inputCol = new Param<>(this, "inputCol", "input column: array<float>, array<double> or vector (ids: int/long,"
        + " array<int|long>)");
    outputCol = new Param<>(this, "outputCol", "output column (array<float>)");
    tpSize = new IntParam(this, "tpSize", "ranks per tensor-parallel group (else " + TpConf.TP_SIZE + ", default "
        + TpConf.TP_SIZE_DEFAULT + ")", ParamValidators.gtEq(1));
    groups = new IntParam(this, "groups", "tensor-parallel groups; 0 = as many as the task slots allow (else "
        + TpConf.GROUPS + ", default 0)", ParamValidators.gtEq(0));
    batchSize = new IntParam(this, "batchSize", "rows each rank brings to a step (else " + TpConf.BATCH_SIZE
        + ", default " + TpConf.BATCH_SIZE_DEFAULT + ")", ParamValidators.gtEq(1));
    backend = new Param<>(this, "backend", "compute backend: auto, cpu or cuda (else " + TpConf.BACKEND
        + ", default " + TpConf.BACKEND_DEFAULT + ")", ParamValidators.inArray(new String[] {"auto", "cpu", "cuda"}));
    dtype = new Param<>(this, "dtype", "storage and GEMM input type of the weights: auto, f32, bf16, f16 or int8 "
        + "(else " + TpConf.DTYPE + ", default " + TpConf.DTYPE_DEFAULT + ")", ParamValidators.inArray(
            new String[] {"auto", "f32", "bf16", "f16", "int8"}));
    activationDtype = new Param<>(this, "activationDtype", "storage type of the activations between ops: auto (that "
        + "of the weights), f32, bf16 or f16 (else " + TpConf.ACTIVATION_DTYPE + ", default "
        + TpConf.ACTIVATION_DTYPE_DEFAULT + ")", ParamValidators.inArray(new String[] {"auto", "f32", "bf16", "f16"}));
    setDefault(inputCol, "features");
    setDefault(outputCol, "prediction");
  }

  @Override
  public String uid() {
    return uid;
  }

  /** The layer-list model, or null for a Hugging Face transformer ({@link #transformer()}). */
  public ModelSpec spec() {
    return spec;
  }

  /** The Hugging Face transformer this model runs, or null for a layer-list model. */
  public TransformerModel transformer() {
    return hf == null ? null : hf.model;
  }

  public Param<String> task() {
    return task;
  }

  public Param<String> pooling() {
    return pooling;
  }

  public BooleanParam normalize() {
    return normalize;
  }

  /** Transformers: {@code embed}, {@code logits} or {@code score}. */
  public TensorParallelModel setTask(String v) {
    set(task, v.toLowerCase(Locale.ROOT));
    return this;
  }

  /** Task embed: {@code mean}, {@code cls} or {@code last}. */
  public TensorParallelModel setPooling(String v) {
    set(pooling, v.toLowerCase(Locale.ROOT));
    return this;
  }

  /** Task embed: L2-normalize each embedding. */
  public TensorParallelModel setNormalize(boolean v) {
    set(normalize, v);
    return this;
  }

  // --- issue 12: task generate ---

  public IntParam maxNewTokens() {
    return maxNewTokens;
  }

  public org.apache.spark.ml.param.DoubleParam temperature() {
    return temperature;
  }

  public IntParam topK() {
    return topK;
  }

  public org.apache.spark.ml.param.DoubleParam topP() {
    return topP;
  }

  public org.apache.spark.ml.param.DoubleParam repetitionPenalty() {
    return repetitionPenalty;
  }

  public org.apache.spark.ml.param.LongParam seed() {
    return seed;
  }

  public Param<String> seedCol() {
    return seedCol;
  }

  public TensorParallelModel setSeedCol(String v) {
    set(seedCol, v);
    return this;
  }

  public org.apache.spark.ml.param.StringArrayParam stop() {
    return stop;
  }

  public org.apache.spark.ml.param.IntArrayParam stopIds() {
    return stopIds;
  }

  public TensorParallelModel setMaxNewTokens(int v) {
    set(maxNewTokens, v);
    return this;
  }

  public TensorParallelModel setTemperature(double v) {
    set(temperature, v);
    return this;
  }

  public TensorParallelModel setTopK(int v) {
    set(topK, v);
    return this;
  }

  public TensorParallelModel setTopP(double v) {
    set(topP, v);
    return this;
  }

  public TensorParallelModel setRepetitionPenalty(double v) {
    set(repetitionPenalty, v);
    return this;
  }

  public TensorParallelModel setSeed(long v) {
    set(seed, v);
    return this;
  }

  public TensorParallelModel setStop(String... v) {
    set(stop, v);
    return this;
  }

  public TensorParallelModel setStopIds(int... v) {
    set(stopIds, v);
    return this;
  }

  private boolean generating() {
    return hf != null && isSet(task) && Task.parse($(task)) == Task.GENERATE;
  }

  /** Task generate's parameters with the budgets of {@code spark}'s conf and the model's EOS ids. */
  private GenerateJob generateJob(SparkSession spark, TpSettings settings) {
    long kv = settings.bytes(TpConf.KV_CACHE_MAX_BYTES);
    int tokens = settings.getInt(TpConf.GENERATE_BATCH_TOKENS, 1);
    String[] stops = $(stop);
    if (stops.length > 0 && !hf.tokenizer) {
      throw new IllegalArgumentException("Stop strings need the model's tokenizer, but " + hf.dir + " has no "
          + TextTokenizer.FILE_NAME + ": give stop token ids (stopIds) instead");
    }
    GenerateParams gp = new GenerateParams((Integer) $(maxNewTokens), (Double) $(temperature), (Integer) $(topK),
        (Double) $(topP), (Double) $(repetitionPenalty), (Long) $(seed),
        GenerateJob.eosIds(hf.dir, spark == null ? new org.apache.hadoop.conf.Configuration()
            : spark.sparkContext().hadoopConfiguration()), $(stopIds), kv, tokens);
    return new GenerateJob(gp, List.of(stops), hf.dir);
  }

  /** The transformer plan for {@code p} ranks with this model's task, pooling, normalize and truncation. */
  public TransformerPlan transformerPlan(int p) {
    if (hf == null) {
      throw new IllegalStateException("This model is a layer list, not a transformer: use plan(p)");
    }
    boolean truncate = TpConf.parseBoolean(TpConf.TRUNCATE, resolve(active(), TpConf.TRUNCATE,
        TpConf.TRUNCATE_DEFAULT));
    return TransformerPlan.build(hf.model, p, isSet(task) ? Task.parse($(task)) : null,
        isSet(pooling) ? Pooling.parse($(pooling)) : null, (Boolean) $(normalize), truncate);
  }

  public Param<String> inputCol() {
    return inputCol;
  }

  public Param<String> outputCol() {
    return outputCol;
  }

  public IntParam tpSize() {
    return tpSize;
  }

  public IntParam groups() {
    return groups;
  }

  public IntParam batchSize() {
    return batchSize;
  }

  public Param<String> backend() {
    return backend;
  }

  public TensorParallelModel setInputCol(String v) {
    set(inputCol, v);
    return this;
  }

  public TensorParallelModel setOutputCol(String v) {
    set(outputCol, v);
    return this;
  }

  public TensorParallelModel setTpSize(int v) {
    set(tpSize, v);
    return this;
  }

  public TensorParallelModel setGroups(int v) {
    set(groups, v);
    return this;
  }

  public TensorParallelModel setBatchSize(int v) {
    set(batchSize, v);
    return this;
  }

  public Param<String> dtype() {
    return dtype;
  }

  /**
   * The weights' storage and GEMM input type: {@code auto}, {@code f32}, {@code bf16}, {@code f16} or
   * {@code int8} (weight-only, one f32 scale per output channel; see the README's Precision section).
   */
  public TensorParallelModel setDtype(String v) {
    String d = v == null ? "" : v.trim().toLowerCase(Locale.ROOT);
    if (!d.equals("auto")) {
      d = DType.parseStorage(v, "dtype param").id(); // aliases (fp32, bfloat16, i8, ...) by their id
    }
    set(dtype, d);
    return this;
  }

  public Param<String> activationDtype() {
    return activationDtype;
  }

  /**
   * The storage type of the activations handed from op to op: {@code auto} (the weights' dtype; bf16 for int8
   * weights), {@code f32}, {@code bf16} or {@code f16}. Ops compute in f32 inside; partial sums are reduced in f32.
   */
  public TensorParallelModel setActivationDtype(String v) {
    DType d = Precision.activation(v, DType.F32, "activationDtype param"); // validates
    String n = v.trim().toLowerCase(Locale.ROOT);
    set(activationDtype, n.equals("auto") ? "auto" : d.id());
    return this;
  }

  /**
   * The activations' storage type of this model's jobs for weights stored as {@code weights}: the
   * {@code activationDtype} param, else {@code spark.tp.activation-dtype} in {@code settings}.
   */
  public DType resolveActivationDtype(DType weights, TpSettings settings) {
    String v = isSet(activationDtype) ? $(activationDtype) : settings.get(TpConf.ACTIVATION_DTYPE);
    return Precision.activation(v, weights, isSet(activationDtype) ? "activationDtype param"
        : TpConf.ACTIVATION_DTYPE);
  }

  public TensorParallelModel setBackend(String v) {
    set(backend, RankTask.checkBackend(v));
    return this;
  }

  /**
   * Sets a {@code spark.tp.*} key for this model's jobs; it wins over the session conf and reaches the
   * executors. An unknown key or a bad value fails here, naming the key.
   */
  public TensorParallelModel setConf(String key, String value) {
    if (key == null || !key.startsWith("spark.tp.")) {
      throw new IllegalArgumentException("setConf takes spark.tp.* keys, got '" + key + "'");
    }
    TpConf.check(key, value);
    conf.put(key, value);
    return this;
  }

  public String getInputCol() {
    return $(inputCol);
  }

  public String getOutputCol() {
    return $(outputCol);
  }

  /** The tp size: the param, else {@code spark.tp.tp-size} of the active session, else 1. */
  public int getTpSize() {
    return resolveInt(tpSize, TpConf.TP_SIZE, TpConf.TP_SIZE_DEFAULT, 1, active());
  }

  /** The metrics of the last {@link #transform} (filled in as its job runs), or null. */
  public TpMetrics lastMetrics() {
    return lastMetrics;
  }

  /** The plan this model runs with {@code p} ranks (its {@code explain()} prints ops, layouts and collectives). */
  public Plan plan(int p) {
    if (shards == null) {
      throw new IllegalStateException("This model is a transformer: use transformerPlan(p)");
    }
    return shards.plan(p);
  }

  /**
   * Destroys the per-rank broadcasts (they are made again by the next {@link #transform}) and frees the
   * shards that the executors' caches hold idle for this model: a small job with one task placed on
   * each registered executor (and a few more) removes them (best effort: an executor that runs none of
   * its tasks, e.g. when Spark places the task elsewhere, frees them by LRU eviction); returns how many
   * cached rank models were freed.
   */
  public int release() {
    if (shards != null) {
      shards.release();
    }
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
    return shards != null ? shards.modelId : hf.modelId;
  }

  private static SparkSession active() {
    return SparkSession.getActiveSession().isDefined() ? SparkSession.getActiveSession().get() : null;
  }

  private int resolveInt(IntParam p, String key, String def, int min, SparkSession spark) {
    if (isSet(p)) {
      return (Integer) $(p);
    }
    return TpConf.parseInt(key, TpConf.resolve(spark, conf, key, def), min);
  }

  private String resolve(SparkSession spark, String key, String def) {
    return TpConf.resolve(spark, conf, key, def);
  }

  @Override
  public StructType transformSchema(StructType schema) {
    if (hf != null) {
      return transformerSchema(schema);
    }
    InputKind.of(schema, getInputCol(), spec.takesIds(), spec.takesBags());
    String out = getOutputCol();
    for (String f : schema.fieldNames()) {
      if (f.equals(out)) {
        throw new IllegalArgumentException("Output column '" + out + "' already exists; set outputCol to a new name");
      }
    }
    NullPolicy policy = NullPolicy.parse(resolve(active(), TpConf.NULL_POLICY, TpConf.NULL_POLICY_DEFAULT));
    return schema.add(out, DataTypes.createArrayType(DataTypes.FloatType, false), policy == NullPolicy.NULL);
  }

  /** True when the input column holds text (tokenized before the barrier stage). */
  private boolean textInput(StructType schema) {
    for (org.apache.spark.sql.types.StructField f : schema.fields()) {
      if (f.name().equals(getInputCol()) && f.dataType().equals(DataTypes.StringType)) {
        if (!hf.tokenizer) {
          throw new IllegalArgumentException("Input column '" + getInputCol() + "' holds text, but " + hf.dir
              + " has no " + TextTokenizer.FILE_NAME + ": give token ids (array<int> or array<long>) instead");
        }
        return true;
      }
    }
    return false;
  }

  private StructType transformerSchema(StructType schema) {
    if (!textInput(schema)) {
      InputKind.of(schema, getInputCol(), true, true);
    }
    String out = getOutputCol();
    for (String f : schema.fieldNames()) {
      if (f.equals(out)) {
        throw new IllegalArgumentException("Output column '" + out + "' already exists; set outputCol to a new name");
      }
    }
    TransformerPlan plan = transformerPlan(1);
    NullPolicy policy = NullPolicy.parse(resolve(active(), TpConf.NULL_POLICY, TpConf.NULL_POLICY_DEFAULT));
    if (plan.task() == Task.GENERATE) {
      // issue 12: generated_ids, finish_reason from the barrier stage, then generated_text (with a tokenizer)
      for (String c : GENERATE_COLUMNS) {
        if (java.util.Arrays.asList(schema.fieldNames()).contains(c)) {
          throw new IllegalArgumentException("Task generate writes the column '" + c + "', which the input already "
              + "has; rename or drop it");
        }
      }
      StructType s = schema.add(GENERATED_IDS, DataTypes.createArrayType(DataTypes.IntegerType, false), true);
      if (hf.tokenizer) {
        s = s.add(GENERATED_TEXT, DataTypes.StringType, true);
      }
      return s.add(FINISH_REASON, DataTypes.StringType, true);
    }
    return schema.add(out, plan.task() == Task.SCORE ? DataTypes.DoubleType
        : DataTypes.createArrayType(DataTypes.FloatType, false), policy == NullPolicy.NULL);
  }

  /**
   * Runs the model on every row of {@code dataset} (lazily, like any transformation: the job runs when
   * the result is used). The schema and the cluster are checked here, before any job: a missing or
   * non-numeric input column, an existing output column, too few task slots for {@code groups x tpSize}
   * tasks, or dynamic allocation fail at once with what to change.
   */
  @Override
  public Dataset<Row> transform(Dataset<?> dataset) {
    StructType outSchema = transformSchema(dataset.schema());
    if (!(dataset instanceof org.apache.spark.sql.classic.Dataset<?> ds)) {
      throw new IllegalArgumentException("TensorParallelModel needs a classic (non-Connect) Spark session");
    }
    org.apache.spark.sql.classic.SparkSession spark = ds.sparkSession();
    SparkContext sc = spark.sparkContext();
    // every spark.tp.* setting, resolved once and checked here, before any job; it travels to the tasks
    TpSettings settings = TpSettings.resolve(spark, conf);
    int p = isSet(tpSize) ? (Integer) $(tpSize) : settings.getInt(TpConf.TP_SIZE, 1);
    int g = isSet(groups) ? (Integer) $(groups) : settings.getInt(TpConf.GROUPS, 0);
    long slotWait = settings.durationMillis(TpConf.SLOTS_WAIT);
    int batch = isSet(batchSize) ? (Integer) $(batchSize) : settings.getInt(TpConf.BATCH_SIZE, 1);
    String be = RankTask.checkBackend(isSet(backend) ? $(backend) : settings.get(TpConf.BACKEND));
    int blas = settings.getInt(TpConf.CPU_BLAS_THREADS, 1);
    long cacheMax = settings.bytes(TpConf.CACHE_MAX_BYTES);
    NullPolicy nulls = NullPolicy.parse(settings.get(TpConf.NULL_POLICY));
    long timeout = settings.durationMillis(TpConf.COMM_TIMEOUT);
    boolean retryable = settings.bool(TpConf.RETRYABLE);
    int failRank = settings.getInt(TpConf.TEST_FAIL_RANK, -1);
    long batchBytes = 4L * batch * (hf != null ? hf.model.vocab() : Math.max(spec.inputDim(), spec.outputDim()));
    if (batchBytes >= Integer.MAX_VALUE / 2) {
      throw new IllegalArgumentException("batchSize " + batch + " makes batches of " + batchBytes
          + " bytes; lower it (" + TpConf.BATCH_SIZE + ")");
    }
    // issue 9: the CPU thread budget, GEMM and the weights' dtype; the CPU backend's settings travel to the ranks
    int threads = settings.getInt(TpConf.CPU_THREADS, 1);
    blas = threads != 1 ? threads : blas;
    String gemm = CpuBackend.checkGemm(settings.get(TpConf.CPU_GEMM));
    DType storage = hf != null ? transformerDtype(be, spark) : resolveDtype(be, spark);
    java.util.TreeMap<String, String> backendSettings = new java.util.TreeMap<>();
    backendSettings.put(TpConf.CPU_THREADS, Integer.toString(blas));
    backendSettings.put(TpConf.CPU_GEMM, gemm);
    backendSettings.put(TpConf.BATCH_SIZE, Integer.toString(batch));
    backendSettings.put(TpConf.DTYPE, storage.id());
    // issue 9b: the activations' dtype, resolved here against the weights' (auto), read by the ranks from TpJob
    backendSettings.put(TpConf.ACTIVATION_DTYPE, resolveActivationDtype(storage, settings).id());
    CommFactory comm = CommFactory.forSettings(spark, settings);
    int slots = Slots.await(sc, Math.max(1, g) * p, slotWait);
    if (g == 0) {
      g = Slots.defaultGroups(slots, p);
    }
    Slots.check(Slots.dynamicAllocation(sc), slots, g, p);
    comm.checkCluster(sc, p);

    if (hf != null) {
      return transformTransformer(ds, outSchema, spark, p, g, batch, be, blas, cacheMax, nulls, timeout, retryable,
          failRank, comm, settings, backendSettings);
    }
    Plan plan = shards.plan(p);
    ShardSource source = shards.source(sc, plan);
    String jobKey = uid + "-" + UUID.randomUUID().toString().substring(0, 8);
    String[] placements = shards.placements(p, g, lastMetrics);
    TpMetrics metrics = new TpMetrics(sc, p, g, jobKey);
    lastMetrics = metrics;
    org.apache.spark.sql.classic.Dataset<Row> df = ds.toDF();
    int ord = df.schema().fieldIndex(getInputCol());
    TpJob job = new TpJob(jobKey, shards.modelId, plan, plan.fingerprint(), source, g, getInputCol(), ord,
        InputKind.of(df.schema(), getInputCol(), plan), outSchema, batch, be, blas, storage.id(), backendSettings,
        cacheMax, nulls, timeout, retryable, failRank, comm, metrics, settings, null, 0, null);
    return BarrierRunner.run(spark, df, job, placements);
  }

  /** A Hugging Face transformer's job: text tokenized per input partition first, then the barrier stage. */
  private Dataset<Row> transformTransformer(org.apache.spark.sql.classic.Dataset<?> ds, StructType outSchema,
      org.apache.spark.sql.classic.SparkSession spark, int p, int g, int batch, String be, int blas, long cacheMax,
      NullPolicy nulls, long timeout, boolean retryable, int failRank, CommFactory comm, TpSettings settings,
      java.util.TreeMap<String, String> backendSettings) {
    SparkContext sc = spark.sparkContext();
    TransformerPlan plan = transformerPlan(p);
    int batchTokens = settings.getInt(TpConf.BATCH_TOKENS, 1);
    GenerateJob gen = plan.task() == Task.GENERATE ? generateJob(spark, settings) : null;
    if (gen != null) {
      // the barrier stage writes generated_ids and finish_reason; the text is decoded after it
      outSchema = ds.schema().add(GENERATED_IDS, DataTypes.createArrayType(DataTypes.IntegerType, false), true)
          .add(FINISH_REASON, DataTypes.StringType, true);
    }
    org.apache.spark.sql.classic.Dataset<Row> df = ds.toDF();
    String col = getInputCol();
    String helper = null;
    if (textInput(df.schema())) {
      helper = "__spark_tp_token_ids";
      int maxLen = plan.truncate() && gen == null ? plan.model().maxPositions() : 0; // generate truncates left
      df = (org.apache.spark.sql.classic.Dataset<Row>) Tokenize.apply(df, col, helper, hf.dir, maxLen);
      col = helper;
      outSchema = gen != null ? df.schema().add(outSchema.fields()[outSchema.fields().length - 2])
          .add(outSchema.fields()[outSchema.fields().length - 1])
          : df.schema().add(outSchema.fields()[outSchema.fields().length - 1]);
    }
    String jobKey = uid + "-" + UUID.randomUUID().toString().substring(0, 8);
    TpMetrics metrics = new TpMetrics(sc, p, g, jobKey);
    lastMetrics = metrics;
    int ord = df.schema().fieldIndex(col);
    if (gen != null && isSet(seedCol)) {
      String seedName = $(seedCol);
      if (!java.util.Arrays.asList(df.schema().fieldNames()).contains(seedName)) {
        throw new IllegalArgumentException("seedCol '" + seedName + "' is not a column of the input");
      }
      org.apache.spark.sql.types.DataType t = df.schema().apply(seedName).dataType();
      if (!t.equals(DataTypes.IntegerType) && !t.equals(DataTypes.LongType)) {
        throw new IllegalArgumentException("seedCol '" + seedName + "' must be int or long, got " + t.simpleString());
      }
      gen = gen.withSeedColumn(df.schema().fieldIndex(seedName), t.equals(DataTypes.IntegerType));
    }
    TpJob job = new TpJob(jobKey, hf.modelId, null, plan.fingerprint(), new ShardSource.HfCheckpoint(hf.dir, plan),
        g, col, ord, InputKind.of(df.schema(), col, true, true), outSchema, batch, be, blas, backendSettings.get(TpConf.DTYPE),
        backendSettings, cacheMax, nulls, timeout, retryable, failRank, comm, metrics, settings, plan, batchTokens, gen);
    Dataset<Row> out = BarrierRunner.run(spark, df, job, null);
    out = helper == null ? out : out.drop(helper);
    return gen != null && hf.tokenizer ? GenerateJob.withText(out, hf.dir) : out;
  }

  /**
   * The storage type of a Hugging Face transformer's linears and embedding tables: the {@code dtype} param, else
   * {@code spark.tp.dtype}; {@code auto} is bf16 when the checkpoint's weights are bf16/f16 and this CPU has
   * native bf16 GEMMs, else f32 (see {@link Precision#resolve}).
   */
  private DType transformerDtype(String backendName, SparkSession spark) {
    String v = isSet(dtype) ? $(dtype) : resolve(spark, TpConf.DTYPE, TpConf.DTYPE_DEFAULT);
    boolean cpu = backendName == null || backendName.equals("auto") || backendName.equals("cpu");
    return Precision.resolve(v, hf.weightDtype, cpu && CpuBackend.hasNativeBf16(), TpConf.DTYPE);
  }

  /**
   * The weights' storage type for this model's jobs: the {@code dtype} param, else {@code spark.tp.dtype},
   * {@code auto} resolved against the checkpoint's dtype and this CPU (see {@link Precision#resolve}).
   */
  public DType resolveDtype(String backendName, SparkSession spark) {
    if (hf != null) {
      return transformerDtype(backendName, spark);
    }
    String v = isSet(dtype) ? $(dtype) : resolve(spark, TpConf.DTYPE, TpConf.DTYPE_DEFAULT);
    boolean cpu = backendName == null || backendName.equals("auto") || backendName.equals("cpu");
    // auto picks bf16 only on the CPU backend for now (a backend reports its dtypes through Backend.supports)
    return Precision.resolve(v, shards.checkpointDtype, cpu && CpuBackend.hasNativeBf16(), TpConf.DTYPE);
  }

  @Override
  public TensorParallelModel copy(ParamMap extra) {
    TensorParallelModel m = new TensorParallelModel(uid, spec, shards, hf);
    m.conf.putAll(conf);
    return copyValues(m, extra).setParent(parent());
  }

  @Override
  public MLWriter write() {
    if (hf != null) {
      throw new UnsupportedOperationException("A Hugging Face model is not saved with ML write(): its directory "
          + hf.dir + " is the model; load it again with TensorParallelModel.fromDirectory");
    }
    return new Writer(this);
  }

  public static MLReader<TensorParallelModel> read() {
    return new Reader();
  }

  public static TensorParallelModel load(String path) {
    return read().load(path);
  }

  /** A Hugging Face model directory: the ops (no weights) and where each rank reads its slices. */
  private static final class HfShards implements java.io.Serializable {
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
  private static final class Shards implements java.io.Serializable {
    private static final long serialVersionUID = 1L;
    final String modelId; // the directory's identity, or random for a model held in memory
    private final transient ModelSpec spec;
    private final String checkpoint; // a model directory each rank reads its shard from, or null
    final DType checkpointDtype; // storage dtype of the checkpoint's weights, or null for in-memory weights
    private transient Map<Integer, Plan> plans;
    private transient Map<Integer, List<Broadcast<RankWeights>>> broadcasts;
    private transient SparkContext owner;
    private transient Map<String, String[]> placements;

    Shards(ModelSpec spec, String checkpoint, String identity, DType checkpointDtype) {
      this.checkpointDtype = checkpointDtype;
      this.spec = spec;
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

    /** The whole model with its weights (read from the checkpoint when it is one). */
    ModelSpec loadedSpec(org.apache.hadoop.conf.Configuration hadoop) throws IOException {
      if (checkpoint == null) {
        return spec;
      }
      try (ModelDirectory d = ModelDirectory.open(new Path(checkpoint), hadoop)) {
        return d.toSpec();
      }
    }

    synchronized Plan plan(int p) {
      if (plans == null) {
        plans = new HashMap<>();
      }
      return plans.computeIfAbsent(p, q -> Plan.build(spec, q));
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
        WeightSource src = WeightSource.of(spec);
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

  private static final class Writer extends MLWriter {
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
        ModelWriter.write(model.shards.loadedSpec(sc().hadoopConfiguration()), dir, sc().hadoopConfiguration());
      } catch (IOException e) {
        throw new UncheckedIOException("Cannot write the model weights to " + dir + ": " + e.getMessage(), e);
      }
    }
  }

  private static final class Reader extends MLReader<TensorParallelModel> {
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
