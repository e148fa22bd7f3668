package org.sparktp.spark;

import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import org.apache.spark.ml.Model;
import org.apache.spark.ml.param.BooleanParam;
import org.apache.spark.ml.param.IntParam;
import org.apache.spark.ml.param.Param;
import org.apache.spark.ml.param.ParamValidators;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.backend.Precision;
import org.sparktp.model.hf.ChatTemplate;
import org.sparktp.tensor.DType;

/**
 * The params of a {@link TensorParallelModel} (Spark ML {@code Param}s with their getters and setters) and its
 * {@code spark.tp.*} options ({@link #setConf}). A param left unset takes its {@code spark.tp.*} setting
 * ({@link TpSettings}: an option of {@link #setConf}, else a local property, else the session conf, else the
 * default of {@link TpConf}).
 *
 * <p>Columns: {@code inputCol} (default {@code features}), {@code outputCol} (default {@code prediction}). Placement:
 * {@code tpSize}, {@code groups}, {@code batchSize}, {@code backend}. Precision: {@code dtype},
 * {@code activationDtype}. Transformers: {@code task}, {@code pooling}, {@code normalize}. Task generate:
 * {@code maxNewTokens}, {@code temperature}, {@code topK}, {@code topP}, {@code repetitionPenalty}, {@code seed},
 * {@code seedCol}, {@code stop}, {@code stopIds}. A messages column: {@code chatTemplateKwargs}.
 */
public abstract class TpModelParams extends Model<TensorParallelModel> {
  private static final long serialVersionUID = 1L;

  private final String uid;
  /** Options on the call ({@link #setConf}): they win over local properties and the session conf. */
  final Map<String, String> conf = new HashMap<>();

  private final Param<String> inputCol;
  private final Param<String> outputCol;
  private final IntParam tpSize;
  private final IntParam groups;
  private final IntParam batchSize;
  private final Param<String> backend;
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
  // --- issue 21: chat template variables ---
  private final Param<String> chatTemplateKwargs;

  TpModelParams(String uid) {
    this.uid = uid;
    task = new Param<>(this, "task", "transformers: embed, logits, score or generate (default: embed for encoders, "
        + "logits for causal LMs)", ParamValidators.inArray(new String[] {"embed", "logits", "score", "generate"}));
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
    chatTemplateKwargs = new Param<>(this, "chatTemplateKwargs", "a messages column: extra chat template variables, "
        + "a JSON object such as {\"enable_thinking\": false} (apply_chat_template's **kwargs)");
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
    dtype = new Param<>(this, "dtype", "storage and GEMM input type of the weights: auto, f32, bf16, f16, int8 (W8A8) "
        + "or int8-wo (weight-only) (else " + TpConf.DTYPE + ", default " + TpConf.DTYPE_DEFAULT + ")",
        ParamValidators.inArray(new String[] {"auto", "f32", "bf16", "f16", "int8", "int8-wo"}));
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

  private TensorParallelModel self() {
    return (TensorParallelModel) this;
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
    setChecked(task, v == null ? null : v.trim().toLowerCase(Locale.ROOT), "one of embed, logits, score, generate");
    return self();
  }

  /** Task embed: {@code mean}, {@code cls} or {@code last}. */
  public TensorParallelModel setPooling(String v) {
    setChecked(pooling, v == null ? null : v.trim().toLowerCase(Locale.ROOT), "one of mean, cls, last");
    return self();
  }

  /** Task embed: L2-normalize each embedding. */
  public TensorParallelModel setNormalize(boolean v) {
    set(normalize, v);
    return self();
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
    return self();
  }

  public org.apache.spark.ml.param.StringArrayParam stop() {
    return stop;
  }

  public org.apache.spark.ml.param.IntArrayParam stopIds() {
    return stopIds;
  }

  public TensorParallelModel setMaxNewTokens(int v) {
    setChecked(maxNewTokens, v, ">= 1");
    return self();
  }

  public TensorParallelModel setTemperature(double v) {
    setChecked(temperature, v, ">= 0 (0 = greedy, > 0 samples)");
    return self();
  }

  public TensorParallelModel setTopK(int v) {
    setChecked(topK, v, ">= 0 (0 = all tokens)");
    return self();
  }

  public TensorParallelModel setTopP(double v) {
    setChecked(topP, v, "in (0, 1] (1 = all tokens)");
    return self();
  }

  public TensorParallelModel setRepetitionPenalty(double v) {
    setChecked(repetitionPenalty, v, "> 0 (1 = none)");
    return self();
  }

  public TensorParallelModel setSeed(long v) {
    set(seed, v);
    return self();
  }

  public TensorParallelModel setStop(String... v) {
    set(stop, v);
    return self();
  }

  public TensorParallelModel setStopIds(int... v) {
    set(stopIds, v);
    return self();
  }

  public Param<String> chatTemplateKwargs() {
    return chatTemplateKwargs;
  }

  /**
   * Extra variables of the chat template a messages column is rendered with, as {@code apply_chat_template}'s
   * {@code **kwargs}: a JSON object such as {@code {"enable_thinking": false, "tools": [...]}} (null: none).
   * Invalid JSON or a non-object fails here, in one line.
   */
  public TensorParallelModel setChatTemplateKwargs(String json) {
    ChatTemplate.parseKwargs(json, "chatTemplateKwargs"); // validates
    if (json == null) {
      clear(chatTemplateKwargs);
    } else {
      set(chatTemplateKwargs, json);
    }
    return self();
  }

  /** As {@link #setChatTemplateKwargs(String)}, from a map (values: booleans, numbers, strings, lists, maps). */
  public TensorParallelModel setChatTemplateKwargs(Map<String, ?> variables) {
    try {
      return setChatTemplateKwargs(variables == null ? null
          : new com.fasterxml.jackson.databind.ObjectMapper().writeValueAsString(variables));
    } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new IllegalArgumentException("chatTemplateKwargs: a value cannot be written as JSON: " + e.getMessage(), e);
    }
  }

  /** The extra chat template variables ({@link #setChatTemplateKwargs}); empty when unset. */
  public Map<String, Object> chatTemplateVariables() {
    return ChatTemplate.parseKwargs(isSet(chatTemplateKwargs) ? $(chatTemplateKwargs) : null, "chatTemplateKwargs");
  }

  /** Sets {@code p} to {@code v}, or throws saying which values {@code p} takes (Spark's own check names none). */
  private <T> void setChecked(Param<T> p, T v, String valid) {
    boolean ok;
    try {
      ok = v != null && (Boolean) p.isValid().apply(v);
    } catch (RuntimeException e) {
      ok = false;
    }
    if (!ok) {
      throw new IllegalArgumentException(p.name() + " must be " + valid + ", got " + v);
    }
    set(p, v);
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
    return self();
  }

  public TensorParallelModel setOutputCol(String v) {
    set(outputCol, v);
    return self();
  }

  public TensorParallelModel setTpSize(int v) {
    setChecked(tpSize, v, ">= 1");
    return self();
  }

  public TensorParallelModel setGroups(int v) {
    setChecked(groups, v, ">= 0 (0 = as many as the task slots allow)");
    return self();
  }

  public TensorParallelModel setBatchSize(int v) {
    setChecked(batchSize, v, ">= 1");
    return self();
  }

  public Param<String> dtype() {
    return dtype;
  }

  /**
   * The weights' storage and GEMM input type: {@code auto}, {@code f32}, {@code bf16}, {@code f16} or
   * {@code int8} (W8A8: weights per output channel, activations per row, s8 x s8 GEMMs) or {@code int8-wo}
   * (weight-only, one f32 scale per output channel); see docs/precision.md.
   */
  public TensorParallelModel setDtype(String v) {
    String d = v == null ? "" : v.trim().toLowerCase(Locale.ROOT);
    if (!d.equals("auto")) {
      d = DType.parseStorage(v, "dtype param").id(); // aliases (fp32, bfloat16, i8, ...) by their id
    }
    set(dtype, d);
    return self();
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
    return self();
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
    return self();
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
    return self();
  }

  public String getInputCol() {
    return $(inputCol);
  }

  public String getOutputCol() {
    return $(outputCol);
  }

  /** The tp size: the param, else {@code spark.tp.tp-size} as {@link #settings} resolves it on the active session. */
  public int getTpSize() {
    return isSet(tpSize) ? (Integer) $(tpSize) : settings(TensorParallelModel.active()).getInt(TpConf.TP_SIZE, 1);
  }

  /**
   * Every {@code spark.tp.*} setting of a job of this model on {@code spark} (null: defaults and options only),
   * resolved once and checked ({@link TpSettings#resolve}): a set param and a {@link #setConf} option are options on
   * the call (the param wins over the option of its key), then a local property, the session conf, the default.
   */
  public TpSettings settings(org.apache.spark.sql.SparkSession spark) {
    Map<String, String> options = new HashMap<>(conf);
    putIfSet(options, TpConf.TP_SIZE, tpSize);
    putIfSet(options, TpConf.GROUPS, groups);
    putIfSet(options, TpConf.BATCH_SIZE, batchSize);
    putIfSet(options, TpConf.BACKEND, backend);
    putIfSet(options, TpConf.DTYPE, dtype);
    putIfSet(options, TpConf.ACTIVATION_DTYPE, activationDtype);
    return TpSettings.resolve(spark, options);
  }

  private void putIfSet(Map<String, String> options, String key, Param<?> p) {
    if (isSet(p)) {
      options.put(key, String.valueOf($(p)));
    }
  }
}
