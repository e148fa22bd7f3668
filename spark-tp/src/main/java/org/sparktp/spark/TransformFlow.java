package org.sparktp.spark;

import java.util.List;
import java.util.UUID;
import org.apache.spark.SparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.backend.Precision;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.model.TextTokenizer;
import org.sparktp.nn.plan.LayerGraph;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.gen.GenerateParams;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.tensor.DType;

/**
 * The flow of one {@link TensorParallelModel#transform}: the output schema checked against the input, every
 * {@code spark.tp.*} setting resolved once ({@link TensorParallelModel#settings}), the weights' and activations'
 * dtypes resolved, the cluster's task slots checked, then one {@link TpJob} run by the {@link BarrierRunner}
 * (for a Hugging Face transformer, text tokenized first and, for task generate, decoded after).
 */
final class TransformFlow {
  private final TensorParallelModel m;
  private final LayerGraph graph;
  private final ModelLoader.Shards shards;
  private final ModelLoader.HfShards hf;

  TransformFlow(TensorParallelModel m) {
    this.m = m;
    this.graph = m.graph;
    this.shards = m.shards;
    this.hf = m.hf;
  }

  /** Task generate's parameters with the budgets of {@code spark}'s conf and the model's EOS ids. */
  private GenerateJob generateJob(SparkSession spark, TpSettings settings) {
    long kv = settings.bytes(TpConf.KV_CACHE_MAX_BYTES);
    int tokens = settings.getInt(TpConf.GENERATE_BATCH_TOKENS, 1);
    String[] stops = m.getOrDefault(m.stop());
    if (stops.length > 0 && !hf.tokenizer) {
      throw new IllegalArgumentException("Stop strings need the model's tokenizer, but " + hf.dir + " has no "
          + TextTokenizer.FILE_NAME + ": give stop token ids (stopIds) instead");
    }
    GenerateParams gp = new GenerateParams((Integer) m.getOrDefault(m.maxNewTokens()),
        (Double) m.getOrDefault(m.temperature()), (Integer) m.getOrDefault(m.topK()), (Double) m.getOrDefault(m.topP()),
        (Double) m.getOrDefault(m.repetitionPenalty()), (Long) m.getOrDefault(m.seed()),
        GenerateJob.eosIds(hf.dir, spark == null ? new org.apache.hadoop.conf.Configuration()
            : spark.sparkContext().hadoopConfiguration()), m.getOrDefault(m.stopIds()), kv, tokens);
    return new GenerateJob(gp, List.of(stops), hf.dir);
  }

  /** The transformer plan for {@code p} ranks with this model's task, pooling, normalize and truncation. */
  Plan transformerPlan(int p) {
    if (hf == null) {
      throw new IllegalStateException("This model is a layer list, not a transformer: use plan(p)");
    }
    boolean truncate = m.settings(TensorParallelModel.active()).bool(TpConf.TRUNCATE);
    return TransformerGraph.plan(hf.model, p, m.isSet(m.task()) ? Task.parse(m.getOrDefault(m.task())) : null,
        m.isSet(m.pooling()) ? Pooling.parse(m.getOrDefault(m.pooling())) : null,
        (Boolean) m.getOrDefault(m.normalize()), truncate);
  }

  StructType transformSchema(StructType schema) {
    OnError onError = OnError.parse(m.settings(TensorParallelModel.active()).get(TpConf.ON_ERROR));
    if (hf != null) {
      return onError.outputSchema(schema, transformerSchema(schema));
    }
    InputKind.of(schema, m.getInputCol(), graph.takesIds(), graph.takesBags());
    String out = m.getOutputCol();
    for (String f : schema.fieldNames()) {
      if (f.equals(out)) {
        throw new IllegalArgumentException("Output column '" + out + "' already exists; set outputCol to a new name");
      }
    }
    return onError.outputSchema(schema, schema.add(out, DataTypes.createArrayType(DataTypes.FloatType, false),
        nullOutputs()));
  }

  /** True when the input column holds text or messages (chat-templated; tokenized before the barrier stage). */
  private boolean textInput(StructType schema) {
    for (org.apache.spark.sql.types.StructField f : schema.fields()) {
      boolean messages = ChatInput.isMessages(f.dataType());
      if (f.name().equals(m.getInputCol()) && (f.dataType().equals(DataTypes.StringType) || messages)) {
        if (!hf.tokenizer) {
          throw new IllegalArgumentException("Input column '" + m.getInputCol() + "' holds " + (messages ? "messages"
              : "text") + ", but " + hf.dir + " has no " + TextTokenizer.FILE_NAME
              + ": give token ids (array<int> or array<long>) instead");
        }
        if (messages) {
          ChatInput.template(hf.dir); // a directory without a chat template fails here, before any job
        }
        return true;
      }
    }
    return false;
  }

  private StructType transformerSchema(StructType schema) {
    if (!textInput(schema)) {
      try {
        InputKind.of(schema, m.getInputCol(), true, true);
      } catch (IllegalArgumentException e) {
        // a model with a tokenizer takes text too: say so (InputKind knows only the id kinds)
        throw !hf.tokenizer || e.getMessage().contains("does not exist") ? e : new IllegalArgumentException(e.getMessage()
            .replace("the model takes array<int>", "the model takes string (text, tokenized with the model's "
                + TextTokenizer.FILE_NAME + "), array<int>"), e);
      }
    }
    String out = m.getOutputCol();
    for (String f : schema.fieldNames()) {
      if (f.equals(out)) {
        throw new IllegalArgumentException("Output column '" + out + "' already exists; set outputCol to a new name");
      }
    }
    Plan plan = transformerPlan(1);
    if (plan.transformer().task() == Task.GENERATE) {
      // issue 12: generated_ids, finish_reason from the barrier stage, then generated_text (with a tokenizer)
      if (m.isSet(m.outputCol())) {
        throw new IllegalArgumentException("Task generate writes the columns " + String.join(", ",
            TensorParallelModel.GENERATE_COLUMNS) + ", not outputCol ('" + m.getOutputCol() + "'): leave outputCol"
            + " unset and rename those columns after transform if needed");
      }
      for (String c : TensorParallelModel.GENERATE_COLUMNS) {
        if (java.util.Arrays.asList(schema.fieldNames()).contains(c)) {
          throw new IllegalArgumentException("Task generate writes the column '" + c + "', which the input already "
              + "has; rename or drop it");
        }
      }
      StructType s = schema.add(TensorParallelModel.GENERATED_IDS, DataTypes.createArrayType(DataTypes.IntegerType, false), true);
      if (hf.tokenizer) {
        s = s.add(TensorParallelModel.GENERATED_TEXT, DataTypes.StringType, true);
      }
      return s.add(TensorParallelModel.FINISH_REASON, DataTypes.StringType, true);
    }
    return schema.add(out, plan.transformer().task() == Task.SCORE ? DataTypes.DoubleType
        : DataTypes.createArrayType(DataTypes.FloatType, false), nullOutputs());
  }

  /** True when a row may get a null output: {@code spark.tp.null-policy=null}, or {@code spark.tp.on-error} not fail. */
  private boolean nullOutputs() {
    TpSettings s = m.settings(TensorParallelModel.active());
    return NullPolicy.parse(s.get(TpConf.NULL_POLICY)) == NullPolicy.NULL
        || OnError.parse(s.get(TpConf.ON_ERROR)) != OnError.FAIL;
  }

  /**
   * Runs the model on every row of {@code dataset} (lazily, like any transformation: the job runs when
   * the result is used). The schema and the cluster are checked here, before any job: a missing or
   * non-numeric input column, an existing output column, too few task slots for {@code groups x tpSize}
   * tasks, or dynamic allocation fail at once with what to change.
   */
  Dataset<Row> transform(Dataset<?> dataset) {
    StructType outSchema = transformSchema(dataset.schema());
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
    long batchBytes = 4L * batch * (hf != null ? hf.model.vocab() : Math.max(graph.inputDim(), graph.outputDim()));
    if (batchBytes >= Integer.MAX_VALUE / 2) {
      throw new IllegalArgumentException("batchSize " + batch + " makes batches of " + batchBytes
          + " bytes; lower it (" + TpConf.BATCH_SIZE + ")");
    }
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

    if (hf != null) {
      return transformTransformer(ds, outSchema, spark, p, g, comm, settings, storage, activations);
    }
    Plan plan = shards.plan(p);
    ShardSource source = shards.source(sc, plan);
    String jobKey = m.uid() + "-" + UUID.randomUUID().toString().substring(0, 8);
    String[] placements = shards.placements(p, g, m.lastMetrics);
    TpMetrics metrics = new TpMetrics(sc, p, g, jobKey);
    m.lastMetrics = metrics;
    OnError onError = OnError.parse(settings.get(TpConf.ON_ERROR));
    org.apache.spark.sql.classic.Dataset<Row> df = (org.apache.spark.sql.classic.Dataset<Row>) onError.prepare(ds.toDF());
    int ord = df.schema().fieldIndex(m.getInputCol());
    TpJob job = new TpJob(jobKey, shards.modelId, plan, plan.fingerprint(), source, g, m.getInputCol(), ord,
        InputKind.of(df.schema(), m.getInputCol(), plan), onError.barrierSchema(df.schema(), outSchema,
            ds.schema().size()), settings, storage, activations, comm, metrics, null);
    return onError.finish(BarrierRunner.run(spark, df, job, placements));
  }

  /** A Hugging Face transformer's job: text tokenized per input partition first, then the barrier stage. */
  private Dataset<Row> transformTransformer(org.apache.spark.sql.classic.Dataset<?> ds, StructType outSchema,
      org.apache.spark.sql.classic.SparkSession spark, int p, int g, CommFactory comm, TpSettings settings,
      DType storage, DType activations) {
    SparkContext sc = spark.sparkContext();
    Plan plan = transformerPlan(p);
    GenerateJob gen = plan.transformer().task() == Task.GENERATE ? generateJob(spark, settings) : null;
    OnError onError = OnError.parse(settings.get(TpConf.ON_ERROR));
    org.apache.spark.sql.classic.Dataset<Row> df = (org.apache.spark.sql.classic.Dataset<Row>) onError.prepare(ds.toDF());
    outSchema = onError.barrierSchema(df.schema(), outSchema, ds.schema().size());
    if (gen != null) {
      // the barrier stage writes generated_ids and finish_reason; the text is decoded after it
      outSchema = df.schema().add(TensorParallelModel.GENERATED_IDS, DataTypes.createArrayType(DataTypes.IntegerType, false), true)
          .add(TensorParallelModel.FINISH_REASON, DataTypes.StringType, true);
    }
    String col = m.getInputCol();
    String helper = null;
    if (textInput(df.schema())) {
      helper = "__spark_tp_token_ids";
      int maxLen = plan.transformer().truncate() && gen == null ? plan.transformer().model().maxPositions() : 0; // generate truncates left
      df = (org.apache.spark.sql.classic.Dataset<Row>) Tokenize.apply(df, col, helper, hf.dir, maxLen, gen != null);
      col = helper;
      outSchema = gen != null ? df.schema().add(outSchema.fields()[outSchema.fields().length - 2])
          .add(outSchema.fields()[outSchema.fields().length - 1])
          : df.schema().add(outSchema.fields()[outSchema.fields().length - 1]);
    }
    String jobKey = m.uid() + "-" + UUID.randomUUID().toString().substring(0, 8);
    TpMetrics metrics = new TpMetrics(sc, p, g, jobKey);
    m.lastMetrics = metrics;
    int ord = df.schema().fieldIndex(col);
    if (gen != null && m.isSet(m.seedCol())) {
      String seedName = m.getOrDefault(m.seedCol());
      if (!java.util.Arrays.asList(df.schema().fieldNames()).contains(seedName)) {
        throw new IllegalArgumentException("seedCol '" + seedName + "' is not a column of the input");
      }
      org.apache.spark.sql.types.DataType t = df.schema().apply(seedName).dataType();
      if (!t.equals(DataTypes.IntegerType) && !t.equals(DataTypes.LongType)) {
        throw new IllegalArgumentException("seedCol '" + seedName + "' must be int or long, got " + t.simpleString());
      }
      gen = gen.withSeedColumn(df.schema().fieldIndex(seedName), t.equals(DataTypes.IntegerType));
    }
    TpJob job = new TpJob(jobKey, hf.modelId, plan, plan.fingerprint(), new ShardSource.HfCheckpoint(hf.dir, plan),
        g, m.getInputCol(), ord, InputKind.of(df.schema(), col, true, true), outSchema, settings, storage, activations, comm,
        metrics, gen);
    Dataset<Row> out = BarrierRunner.run(spark, df, job, null);
    out = helper == null ? out : out.drop(helper);
    return onError.finish(gen != null && hf.tokenizer ? GenerateJob.withText(out, hf.dir) : out);
  }

  /**
   * The weights' storage type of this model's jobs: {@code spark.tp.dtype} as {@code settings} resolved it (the
   * {@code dtype} param included); {@code auto} is bf16 when the checkpoint's weights are bf16/f16 and this CPU has
   * native bf16 GEMMs, else f32 (see {@link Precision#resolve}).
   */
  DType resolveDtype(String backendName, TpSettings settings) {
    DType checkpoint = hf != null ? hf.weightDtype : shards.checkpointDtype;
    boolean cpu = backendName == null || backendName.equals("auto") || backendName.equals("cpu");
    // auto picks bf16 only on the CPU backend for now (a backend reports its dtypes through Backend.supports)
    return Precision.resolve(settings.get(TpConf.DTYPE), checkpoint, cpu && CpuBackend.hasNativeBf16(), TpConf.DTYPE);
  }
}
