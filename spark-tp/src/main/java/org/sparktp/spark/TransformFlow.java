package org.sparktp.spark;

import java.util.Arrays;
import java.util.List;
import java.util.UUID;
import org.apache.spark.SparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.backend.Precision;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.model.TextTokenizer;
import org.sparktp.nn.gen.GenerateParams;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.tensor.DType;

/**
 * The flow of one {@link TensorParallelModel#transform}, the same for every model: the plan for the model's params
 * says what it takes and gives (vectors, ids or token sequences; a vector, a score or generated tokens), the model
 * says whether it has a tokenizer. The output schema is checked against the input, every {@code spark.tp.*} setting
 * resolved once ({@link TensorParallelModel#settings}), the weights' and activations' dtypes resolved, the cluster's
 * task slots checked; then text is tokenized (a string input column with a tokenizer), one {@link TpJob} runs in the
 * {@link BarrierRunner}, and generated ids are decoded.
 */
final class TransformFlow {
  /** The column that holds the ids of a tokenized text column while the barrier stage runs. */
  private static final String TOKEN_IDS = "__spark_tp_token_ids";

  private final TensorParallelModel m;
  private final ModelLoader.Loaded model;

  TransformFlow(TensorParallelModel m) {
    this.m = m;
    this.model = m.loaded;
  }

  /** The plan for {@code p} ranks with this model's task, pooling, normalize and truncation ({@code settings}). */
  ModelPlan plan(int p, TpSettings settings) {
    return model.plan(p, new ModelLoader.PlanOptions(m.isSet(m.task()) ? Task.parse(m.getOrDefault(m.task())) : null,
        m.isSet(m.pooling()) ? Pooling.parse(m.getOrDefault(m.pooling())) : null,
        (Boolean) m.getOrDefault(m.normalize()), settings.bool(TpConf.TRUNCATE)));
  }

  /** Task generate's parameters with the budgets of {@code settings} and the model's EOS ids. */
  private GenerateJob generateJob(SparkSession spark, TpSettings settings) {
    long kv = settings.bytes(TpConf.KV_CACHE_MAX_BYTES);
    int tokens = settings.getInt(TpConf.GENERATE_BATCH_TOKENS, 1);
    String[] stops = m.getOrDefault(m.stop());
    if (stops.length > 0 && model.tokenizerDir() == null) {
      throw new IllegalArgumentException("Stop strings need the model's tokenizer, but " + model.dir + " has no "
          + TextTokenizer.FILE_NAME + ": give stop token ids (stopIds) instead");
    }
    GenerateParams gp = new GenerateParams((Integer) m.getOrDefault(m.maxNewTokens()),
        (Double) m.getOrDefault(m.temperature()), (Integer) m.getOrDefault(m.topK()), (Double) m.getOrDefault(m.topP()),
        (Double) m.getOrDefault(m.repetitionPenalty()), (Long) m.getOrDefault(m.seed()),
        GenerateJob.eosIds(model.dir, spark.sparkContext().hadoopConfiguration()), m.getOrDefault(m.stopIds()), kv,
        tokens).withPrefixSharing(settings.bool(TpConf.GENERATE_PREFIX_SHARING));
    return new GenerateJob(gp, List.of(stops), model.tokenizerDir());
  }

  StructType transformSchema(StructType schema) {
    TpSettings settings = m.settings(TensorParallelModel.active());
    ModelPlan plan = plan(1, settings);
    if (!textInput(schema, plan)) {
      InputKind.of(schema, m.getInputCol(), plan, model.tokenizerDir() != null);
    }
    String out = m.getOutputCol();
    if (Arrays.asList(schema.fieldNames()).contains(out)) {
      throw new IllegalArgumentException("Output column '" + out + "' already exists; set outputCol to a new name");
    }
    if (plan.generates() && m.isSet(m.outputCol())) {
      throw new IllegalArgumentException("Task generate writes the columns " + String.join(", ",
          TensorParallelModel.GENERATE_COLUMNS) + ", not outputCol ('" + out + "'): leave outputCol unset and rename "
          + "those columns after transform if needed");
    }
    StructType s = schema;
    for (StructField f : stageColumns(plan, settings)) {
      if (plan.generates() && Arrays.asList(schema.fieldNames()).contains(f.name())) {
        throw new IllegalArgumentException("Task generate writes the column '" + f.name() + "', which the input "
            + "already has; rename or drop it");
      }
      if (f.name().equals(TensorParallelModel.FINISH_REASON) && model.tokenizerDir() != null) {
        s = s.add(TensorParallelModel.GENERATED_TEXT, DataTypes.StringType, true); // decoded after the stage
      }
      s = s.add(f);
    }
    return OnError.parse(settings.get(TpConf.ON_ERROR)).outputSchema(schema, s);
  }

  /**
   * The columns the barrier stage appends: {@code outputCol} ({@code double} for a score, else {@code array<float>}),
   * or, for task generate, {@code generated_ids} and {@code finish_reason} (issue 12).
   */
  private StructField[] stageColumns(ModelPlan plan, TpSettings settings) {
    if (plan.generates()) {
      return new StructField[] {
          DataTypes.createStructField(TensorParallelModel.GENERATED_IDS,
              DataTypes.createArrayType(DataTypes.IntegerType, false), true),
          DataTypes.createStructField(TensorParallelModel.FINISH_REASON, DataTypes.StringType, true)};
    }
    DataType type = plan.scalarOutput() ? DataTypes.DoubleType : DataTypes.createArrayType(DataTypes.FloatType, false);
    // a row may get a null output: spark.tp.null-policy=null, or spark.tp.on-error not fail
    boolean nullable = NullPolicy.parse(settings.get(TpConf.NULL_POLICY)) == NullPolicy.NULL
        || OnError.parse(settings.get(TpConf.ON_ERROR)) != OnError.FAIL;
    return new StructField[] {DataTypes.createStructField(m.getOutputCol(), type, nullable)};
  }

  /**
   * True when the input column holds text or messages (rendered with the model's chat template), tokenized before the
   * barrier stage with the model's tokenizer; text or messages for a model of token sequences without one (or
   * messages without a chat template) fail here, before any job.
   */
  private boolean textInput(StructType schema, ModelPlan plan) {
    String col = m.getInputCol();
    if (!Arrays.asList(schema.fieldNames()).contains(col)) {
      return false;
    }
    DataType t = schema.apply(col).dataType();
    boolean messages = ChatInput.isMessages(t);
    if (!t.equals(DataTypes.StringType) && !messages) {
      return false;
    }
    if (model.tokenizerDir() == null && (plan.sequences() || messages)) {
      throw new IllegalArgumentException("Input column '" + col + "' holds " + (messages ? "messages" : "text")
          + ", but " + model.dir + " has no " + TextTokenizer.FILE_NAME
          + ": give token ids (array<int> or array<long>) instead");
    }
    if (messages) {
      ChatInput.template(model.tokenizerDir()); // a directory without a chat template fails here, before any job
    }
    return model.tokenizerDir() != null;
  }

  /**
   * Runs the model on every row of {@code dataset} (lazily, like any transformation: the job runs when
   * the result is used). The schema and the cluster are checked here, before any job: a missing or
   * non-numeric input column, an existing output column, too few task slots for {@code groups x tpSize}
   * tasks, or dynamic allocation fail at once with what to change.
   */
  Dataset<Row> transform(Dataset<?> dataset) {
    transformSchema(dataset.schema());
    if (!(dataset instanceof org.apache.spark.sql.classic.Dataset<?> ds)) {
      throw new IllegalArgumentException("TensorParallelModel needs a classic (non-Connect) Spark session");
    }
    org.apache.spark.sql.classic.SparkSession spark = ds.sparkSession();
    SparkContext sc = spark.sparkContext();
    // every spark.tp.* setting, resolved once and checked here, before any job; it travels to the tasks
    TpSettings settings = m.settings(spark);
    int p = settings.getInt(TpConf.TP_SIZE, 1);
    int g = settings.getInt(TpConf.GROUPS, 0);
    long slotWait = settings.durationMillis(TpConf.SLOTS_WAIT);
    int batch = settings.getInt(TpConf.BATCH_SIZE, 1);
    ModelPlan plan = plan(p, settings);
    long batchBytes = 4L * batch * Math.max(plan.inputDim(), plan.outputDim());
    if (batchBytes >= Integer.MAX_VALUE / 2) {
      throw new IllegalArgumentException("batchSize " + batch + " makes batches of " + batchBytes
          + " bytes; lower it (" + TpConf.BATCH_SIZE + ")");
    }
    GenerateJob gen = plan.generates() ? generateJob(spark, settings) : null;
    // the weights' dtype (auto resolved against the checkpoint and this CPU), then the activations' against it
    DType storage = resolveDtype(RankTask.checkBackend(settings.get(TpConf.BACKEND)), settings);
    DType activations = m.resolveActivationDtype(storage, settings);
    CommFactory comm = CommFactory.forSettings(spark, settings);
    int slots = Slots.await(sc, Math.max(1, g) * p, slotWait);
    if (g == 0) {
      g = Slots.defaultGroups(slots, p);
    }
    Slots.check(Slots.dynamicAllocation(sc), slots, g, p);
    comm.checkCluster(sc, p);
    RankMemory.check(sc, plan, storage, activations, settings, g, gen == null ? 0 : gen.params().maxNewTokens());

    // rows that cannot run carry their cause through the stage in a helper column (spark.tp.on-error)
    OnError onError = OnError.parse(settings.get(TpConf.ON_ERROR));
    org.apache.spark.sql.classic.Dataset<Row> df = (org.apache.spark.sql.classic.Dataset<Row>) onError.prepare(ds.toDF());
    String col = m.getInputCol();
    boolean text = textInput(df.schema(), plan);
    if (text) {
      int maxLen = gen == null ? plan.truncateTo() : 0; // generate truncates left
      df = (org.apache.spark.sql.classic.Dataset<Row>) Tokenize.apply(df, col, TOKEN_IDS, model.tokenizerDir(), maxLen,
          gen != null, m.chatTemplateVariables());
      col = TOKEN_IDS;
    }
    if (gen != null && m.isSet(m.seedCol())) {
      gen = withSeedColumn(gen, df.schema(), m.getOrDefault(m.seedCol()));
    }
    StructType stageSchema = df.schema();
    for (StructField f : stageColumns(plan, settings)) {
      stageSchema = stageSchema.add(f);
    }
    String jobKey = m.uid() + "-" + UUID.randomUUID().toString().substring(0, 8);
    long[] held = new long[p];
    for (int r = 0; r < p; r++) {
      held[r] = plan.weightBytes(r, storage);
    }
    TpMetrics metrics = new TpMetrics(sc, p, g, jobKey, held);
    String[] placements = model.placements(sc, p, g, m.lastMetrics);
    m.lastMetrics = metrics;
    // row errors name the user's column (its ids may sit in the tokenized helper column)
    TpJob job = new TpJob(jobKey, model.modelId, plan, plan.fingerprint(), model.source(sc, plan), g, m.getInputCol(),
        df.schema().fieldIndex(col), InputKind.of(df.schema(), col, plan, false), stageSchema, settings, storage,
        activations, comm, metrics, gen);
    Dataset<Row> out = BarrierRunner.run(spark, df, job, placements);
    out = text ? out.drop(TOKEN_IDS) : out;
    return onError.finish(gen != null && model.tokenizerDir() != null ? GenerateJob.withText(out, model.tokenizerDir())
        : out);
  }

  /** {@code gen} with each row's seed read from the column {@code name} (int or long) of {@code schema}. */
  private static GenerateJob withSeedColumn(GenerateJob gen, StructType schema, String name) {
    if (!Arrays.asList(schema.fieldNames()).contains(name)) {
      throw new IllegalArgumentException("seedCol '" + name + "' is not a column of the input");
    }
    DataType t = schema.apply(name).dataType();
    if (!t.equals(DataTypes.IntegerType) && !t.equals(DataTypes.LongType)) {
      throw new IllegalArgumentException("seedCol '" + name + "' must be int or long, got " + t.simpleString());
    }
    return gen.withSeedColumn(schema.fieldIndex(name), t.equals(DataTypes.IntegerType));
  }

  /**
   * The weights' storage type of this model's jobs: {@code spark.tp.dtype} as {@code settings} resolved it (the
   * {@code dtype} param included); {@code auto} is bf16 when the checkpoint's weights are bf16/f16 and this CPU has
   * native bf16 GEMMs, else f32 (see {@link Precision#resolve}).
   */
  DType resolveDtype(String backendName, TpSettings settings) {
    boolean cpu = backendName == null || backendName.equals("auto") || backendName.equals("cpu");
    // auto picks bf16 only on the CPU backend for now (a backend reports its dtypes through Backend.supports)
    return Precision.resolve(settings.get(TpConf.DTYPE), model.checkpointDtype, cpu && CpuBackend.hasNativeBf16(),
        TpConf.DTYPE);
  }
}
