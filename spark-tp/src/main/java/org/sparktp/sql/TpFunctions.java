package org.sparktp.sql;

import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.spark.ml.param.BooleanParam;
import org.apache.spark.ml.param.DoubleParam;
import org.apache.spark.ml.param.FloatParam;
import org.apache.spark.ml.param.IntArrayParam;
import org.apache.spark.ml.param.StringArrayParam;
import org.apache.spark.ml.param.IntParam;
import org.apache.spark.ml.param.LongParam;
import org.apache.spark.ml.param.Param;
import org.apache.spark.ml.param.ParamMap;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.AttributeReference;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.GenericInternalRow;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.NamedArgumentExpression;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.catalyst.plans.logical.LocalRelation;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.catalyst.util.MapData;
import org.apache.spark.sql.internal.SQLConf;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.MapType;
import org.apache.spark.sql.types.Metadata;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.unsafe.types.UTF8String;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.model.hf.ChatTemplate;
import org.sparktp.spark.OnError;
import org.sparktp.spark.SqlSupport;
import org.sparktp.spark.TensorParallelModel;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;

/**
 * The builders of the SQL functions: argument checks, model resolution and options, all at analysis.
 *
 * <p>Options (a {@code map<string,string>} argument, or named arguments) are passed through by name: a key
 * that names one of the model's params (compared without case, {@code -} and {@code _}; {@code tp} is
 * {@code tpSize}) sets that param, a {@code spark.tp.*} key of {@link TpConf} (or its short form, e.g.
 * {@code null-policy}) is set on the model's conf; anything else is an error listing what is allowed. So a
 * param a model gains (a task, a dtype, pooling...) is usable from SQL without new SQL code.
 */
final class TpFunctions {
  static final String PREDICT = "tp_predict";
  static final String EMBED = "tp_embed";
  static final String GENERATE = "tp_generate";
  static final String SCORE = "tp_score";
  static final String EXPLAIN = "tp_explain";
  static final String MODELS = "tp_models";
  /** Params the SQL layer sets itself. */
  private static final List<String> OWN_PARAMS = List.of("inputcol", "outputcol");

  private TpFunctions() {}

  /** {@code tp_predict(model, input [, options])} and {@code tp_embed(...)} (which sets {@code task=embed} where the model has tasks). */
  static Expression call(String fn, Seq<Expression> arguments) {
    Args a = Args.parse(fn, arguments, List.of("model", "input", "options"));
    Expression modelArg = a.require("model", "tp_predict('model-name-or-path', features)");
    Expression input = a.require("input", "tp_predict('m', features)");
    String modelName = constantString(fn, "model", modelArg,
        "a model directory path or a name registered with spark.tp.models.<name>=<path>");
    Map<String, String> options = new LinkedHashMap<>();
    Expression optionsArg = a.positionalOrNamed("options");
    if (optionsArg != null) {
      options.putAll(optionsMap(fn, optionsArg));
    }
    for (Map.Entry<String, Expression> e : a.named.entrySet()) {
      if (!List.of("model", "input", "options").contains(e.getKey())) {
        if (options.put(e.getKey(), constantValue(fn, e.getKey(), e.getValue())) != null) {
          throw Sc.error(fn + ": option '" + e.getKey() + "' is given twice (in the options map and as a named argument)");
        }
      }
    }
    TensorParallelModel base = openModel(fn, modelName);
    String path = pathOf(modelName);
    String task = fn.equals(EMBED) ? "embed" : fn.equals(SCORE) ? "score" : fn.equals(GENERATE) ? "generate" : null;
    if (task != null) {
      if (!task.equals("embed") && SqlSupport.hfDirectory(base) == null) {
        throw Sc.error(fn + " argument 'model': " + modelName + " is a spark-tp layer-list model; " + fn + " runs a"
            + " Hugging Face causal LM (a directory with config.json of model_type llama, mistral, qwen2, gpt2, ...)");
      }
      String asked = options.get("task");
      if (asked != null && !asked.equalsIgnoreCase(task)) {
        throw Sc.error(fn + " runs task '" + task + "', but the options ask for task '" + asked + "'; use tp_predict"
            + " for it");
      }
      options.put("task", task);
    }
    Map<String, String> conf = new LinkedHashMap<>();
    TensorParallelModel model = configure(fn, base, options, conf);
    if (fn.equals(PREDICT) && "generate".equals(model.isSet(model.task()) ? model.getOrDefault(model.task()) : null)) {
      throw Sc.error(fn + ": task 'generate' returns text, ids and a finish reason per row, not one array; use"
          + " tp_generate(model, input [, options]), which returns " + GenerateCall.RESULT.simpleString());
    }
    if (task != null && !task.equals("embed")) {
      try {
        model.plan(1);
      } catch (RuntimeException e) {
        throw Sc.error(fn + " argument 'model': " + modelName + " cannot run task '" + task + "': " + e.getMessage(), e);
      }
    }
    checkSlots(fn, model);
    String col = input.sql();
    if (fn.equals(GENERATE)) {
      GenerateCall.checkInput(fn, input, model, modelName);
      return new TpCall(fn, new TpModelRef(modelName, path, options, conf, model, errorColumn(model)
          ? GenerateCall.RESULT.add(OnError.COLUMN_NAME, DataTypes.StringType, true) : GenerateCall.RESULT, true), input);
    }
    StructType schema = new StructType().add(col, input.dataType(), input.nullable());
    StructField out;
    try {
      StructType outSchema = model.copy(ParamMap.empty()).setInputCol(col).setOutputCol("__tp_output")
          .transformSchema(schema);
      out = outSchema.apply("__tp_output");
    } catch (IllegalArgumentException e) {
      throw Sc.error(fn + " argument 'input' (" + col + "): " + e.getMessage()
          + " (model " + modelName + ")", e);
    }
    if (errorColumn(model)) {
      // spark.tp.on-error=column: the output and the cause of a row that could not run
      StructType withError = new StructType().add("value", out.dataType(), true)
          .add(OnError.COLUMN_NAME, DataTypes.StringType, true);
      return new TpCall(fn, new TpModelRef(modelName, path, options, conf, model, withError, false), input);
    }
    return new TpCall(fn, new TpModelRef(modelName, path, options, conf, model, out.dataType(), out.nullable()), input);
  }

  /** True when the call's {@code spark.tp.on-error} (its options, else the session's) is {@code column}. */
  private static boolean errorColumn(TensorParallelModel model) {
    org.apache.spark.sql.SparkSession spark = org.apache.spark.sql.SparkSession.getActiveSession().isDefined()
        ? org.apache.spark.sql.SparkSession.getActiveSession().get() : null;
    return OnError.parse(model.settings(spark).get(TpConf.ON_ERROR)) == OnError.COLUMN;
  }

  /** {@code tp_explain(model, tp)}: the plan text for {@code tp} ranks, a constant. */
  static Expression explain(Seq<Expression> arguments) {
    Args a = Args.parse(EXPLAIN, arguments, List.of("model", "tp"));
    String modelName = constantString(EXPLAIN, "model", a.require("model", "tp_explain('m', 2)"),
        "a model directory path or a registered name");
    String tpText = constantValue(EXPLAIN, "tp", a.require("tp", "tp_explain('m', 2)"));
    if (!a.named.keySet().stream().allMatch(k -> k.equals("model") || k.equals("tp"))) {
      throw Sc.error(EXPLAIN + " takes the arguments model and tp, got " + a.named.keySet());
    }
    int tp;
    try {
      tp = Integer.parseInt(tpText.trim());
    } catch (NumberFormatException e) {
      tp = 0;
    }
    if (tp < 1) {
      throw Sc.error(EXPLAIN + " argument 'tp' must be an integer >= 1 (ranks per group), got " + tpText);
    }
    TensorParallelModel m = openModel(EXPLAIN, modelName);
    return Literal.create(m.plan(tp).explain(), DataTypes.StringType);
  }

  /** {@code tp_models()}: the models registered with {@code spark.tp.models.<name>=<path>}, as rows (name, path). */
  static LogicalPlan models(Seq<Expression> arguments) {
    if (!arguments.isEmpty()) {
      throw Sc.error(MODELS + " takes no arguments, got " + arguments.size());
    }
    List<Attribute> attrs = List.of(
        new AttributeReference("name", DataTypes.StringType, false, Metadata.empty(), NamedExpression.newExprId(),
            Sc.seq()),
        new AttributeReference("path", DataTypes.StringType, false, Metadata.empty(), NamedExpression.newExprId(),
            Sc.seq()));
    List<InternalRow> rows = new ArrayList<>();
    for (Map.Entry<String, String> e : registered().entrySet()) {
      rows.add(new GenericInternalRow(new Object[] {UTF8String.fromString(e.getKey()),
          UTF8String.fromString(e.getValue())}));
    }
    return new LocalRelation(Sc.seq(attrs), Sc.seq(rows), false, scala.Option.empty());
  }

  /** Registered model names and paths, sorted by name. */
  static Map<String, String> registered() {
    Map<String, String> all = CollectionConverters.asJava(SQLConf.get().getAllConfs());
    Map<String, String> out = new TreeMap<>();
    for (Map.Entry<String, String> e : all.entrySet()) {
      if (e.getKey().startsWith(TpConf.MODELS_PREFIX) && e.getKey().length() > TpConf.MODELS_PREFIX.length()) {
        out.put(e.getKey().substring(TpConf.MODELS_PREFIX.length()), e.getValue());
      }
    }
    return out;
  }

  private static String pathOf(String modelName) {
    String p = SQLConf.get().getConfString(TpConf.MODELS_PREFIX + modelName, null);
    return p != null ? p : modelName;
  }

  /** Opens (and validates) the model a call names; the errors say which argument and what to change. */
  static TensorParallelModel openModel(String fn, String modelName) {
    String registeredPath = SQLConf.get().getConfString(TpConf.MODELS_PREFIX + modelName, null);
    String path = registeredPath != null ? registeredPath : modelName;
    try {
      return TensorParallelModel.fromDirectory(path);
    } catch (RuntimeException e) {
      String why = e.getMessage();
      if (registeredPath != null) {
        throw Sc.error(fn + " argument 'model': model '" + modelName + "' is registered as " + TpConf.MODELS_PREFIX
            + modelName + "=" + registeredPath + ", which is not a spark-tp model directory (" + why + "); fix that"
            + " setting", e);
      }
      if (!modelName.contains("/") && !modelName.contains(":")) {
        throw Sc.error(fn + " argument 'model': no model named '" + modelName + "' is registered (registered: "
            + (registered().isEmpty() ? "none" : String.join(", ", registered().keySet())) + "), and it is not a model"
            + " directory either; register it with SET " + TpConf.MODELS_PREFIX + modelName + "=<model directory>, or"
            + " give the directory's path", e);
      }
      throw Sc.error(fn + " argument 'model': '" + modelName + "' is not a spark-tp model directory (" + why
          + "); give a directory holding config.json and model.safetensors, or a name registered with "
          + TpConf.MODELS_PREFIX + "<name>=<path>", e);
    }
  }

  /** The model with the call's options applied; {@code conf} receives the {@code spark.tp.*} keys. */
  static TensorParallelModel configure(String fn, TensorParallelModel base, Map<String, String> options,
      Map<String, String> conf) {
    Map<String, Param<?>> params = new TreeMap<>();
    for (Param<?> p : base.params()) {
      if (!OWN_PARAMS.contains(norm(p.name()))) {
        params.put(norm(p.name()), p);
      }
    }
    if (params.containsKey("tpsize")) {
      params.put("tp", params.get("tpsize"));
    }
    TreeSet<String> keys = confKeys();
    ParamMap pm = new ParamMap();
    for (Map.Entry<String, String> o : options.entrySet()) {
      String key = o.getKey();
      String value = o.getValue();
      String n = norm(key);
      if (OWN_PARAMS.contains(n)) {
        throw Sc.error(fn + ": option '" + key + "' is not allowed: the input column is the input argument and the"
            + " output is the call's result (name it with AS)");
      }
      if (key.startsWith("spark.tp.")) {
        if (!keys.contains(key)) {
          throw Sc.error(fn + ": unknown option '" + key + "'; " + allowed(params, keys));
        }
        conf.put(key, checkConf(fn, key, value));
      } else if (n.equals("chattemplatekwargs")) { // JSON, kept as written (other string params are lower-cased)
        pm.put(base.chatTemplateKwargs(), chatTemplateKwargs(fn + ": option '" + key + "'", value));
      } else if (params.containsKey(n)) {
        @SuppressWarnings("unchecked")
        Param<Object> p = (Param<Object>) params.get(n);
        Object v = parse(fn, key, p, value);
        pm.put(p, v);
      } else if (keys.contains("spark.tp." + key.toLowerCase(Locale.ROOT))) {
        String full = "spark.tp." + key.toLowerCase(Locale.ROOT);
        conf.put(full, checkConf(fn, key, value));
      } else {
        throw Sc.error(fn + ": unknown option '" + key + "'; " + allowed(params, keys));
      }
    }
    TensorParallelModel m = base.copy(pm);
    for (Map.Entry<String, String> e : conf.entrySet()) {
      m.setConf(e.getKey(), e.getValue());
    }
    return m;
  }

  /** {@code value}, checked to be a JSON object ({@link ChatTemplate#parseKwargs}); {@code what} names it in errors. */
  static String chatTemplateKwargs(String what, String value) {
    try {
      ChatTemplate.parseKwargs(value, what);
    } catch (IllegalArgumentException e) {
      throw Sc.error(e.getMessage(), e);
    }
    return value;
  }

  /** Tensor-parallel calls need {@code groups x tp} task slots at once: too few is an analysis error. */
  private static void checkSlots(String fn, TensorParallelModel model) {
    org.apache.spark.sql.SparkSession spark = org.apache.spark.sql.SparkSession.getActiveSession().isDefined()
        ? org.apache.spark.sql.SparkSession.getActiveSession().get() : null;
    if (spark == null) {
      return;
    }
    TpSettings s = model.settings(spark);
    try {
      SqlSupport.checkSlots(spark.sparkContext(), s.getInt(TpConf.TP_SIZE, 1), s.getInt(TpConf.GROUPS, 0),
          s.durationMillis(TpConf.SLOTS_WAIT));
    } catch (IllegalStateException e) {
      throw Sc.error(fn + ": " + e.getMessage(), e);
    }
  }

  private static String allowed(Map<String, Param<?>> params, TreeSet<String> keys) {
    TreeSet<String> names = new TreeSet<>();
    for (Param<?> p : params.values()) {
      names.add(kebab(p.name()));
    }
    if (params.containsKey("tpsize")) {
      names.add("tp");
    }
    List<String> shortKeys = new ArrayList<>();
    for (String k : keys) {
      shortKeys.add(k.substring("spark.tp.".length()));
    }
    return "the options are the model's params " + String.join(", ", names) + ", and the spark.tp.* keys (full or"
        + " short: " + String.join(", ", shortKeys) + ")";
  }

  private static Object parse(String fn, String key, Param<Object> p, String value) {
    String v = value.trim();
    Object out;
    try {
      if (p instanceof IntParam) {
        out = Integer.parseInt(v);
      } else if (p instanceof LongParam) {
        out = Long.parseLong(v);
      } else if (p instanceof DoubleParam) {
        out = Double.parseDouble(v);
      } else if (p instanceof FloatParam) {
        out = Float.parseFloat(v);
      } else if (p instanceof BooleanParam) {
        if (!v.equalsIgnoreCase("true") && !v.equalsIgnoreCase("false")) {
          throw new NumberFormatException(v);
        }
        out = Boolean.parseBoolean(v);
      } else if (p.getClass() == StringArrayParam.class) {
        // one string as it is (a stop string may be whitespace), or a JSON array of strings
        out = v.startsWith("[") ? p.jsonDecode(v) : new String[] {value};
      } else if (p.getClass() == IntArrayParam.class) {
        out = v.startsWith("[") ? p.jsonDecode(v) : java.util.Arrays.stream(v.split("[,\\s]+"))
            .mapToInt(Integer::parseInt).toArray();
      } else if (p.getClass() == Param.class) {
        out = v.toLowerCase(Locale.ROOT);
      } else {
        out = p.jsonDecode(v);
      }
    } catch (RuntimeException e) {
      throw Sc.error(fn + ": option '" + key + "' has the invalid value '" + value + "' for param " + p.name() + " ("
          + p.doc() + ")", e);
    }
    boolean valid;
    try {
      valid = (Boolean) p.isValid().apply(out);
    } catch (RuntimeException e) {
      valid = false;
    }
    if (!valid) {
      throw Sc.error(fn + ": option '" + key + "' has the invalid value '" + value + "' for param " + p.name() + " ("
          + p.doc() + ")");
    }
    return out;
  }

  /** Checks a {@code spark.tp.*} value as far as its default tells its kind (size, duration, boolean, integer). */
  private static String checkConf(String fn, String key, String value) {
    String full = key.startsWith("spark.tp.") ? key : "spark.tp." + key.toLowerCase(Locale.ROOT);
    String def = confDefault(full);
    try {
      if (def == null) {
        return value;
      }
      if (full.endsWith("bytes")) {
        TpConf.parseBytes(full, value);
      } else if (full.endsWith("timeout") || full.endsWith("wait")) {
        TpConf.parseDurationMillis(full, value);
      } else if (def.equals("true") || def.equals("false")) {
        TpConf.parseBoolean(full, value);
      } else if (def.matches("-?\\d+")) {
        TpConf.parseInt(full, value, Integer.MIN_VALUE);
      } else if (full.equals(TpConf.NULL_POLICY)) {
        org.sparktp.spark.NullPolicy.parse(value);
      }
    } catch (IllegalArgumentException e) {
      throw Sc.error(fn + ": option '" + key + "': " + e.getMessage(), e);
    }
    return value;
  }

  /** The {@code spark.tp.*} keys of {@link TpConf} (constants whose value starts with {@code spark.tp.}). */
  static TreeSet<String> confKeys() {
    TreeSet<String> keys = new TreeSet<>();
    for (Field f : TpConf.class.getFields()) {
      if (Modifier.isStatic(f.getModifiers()) && f.getType() == String.class && !f.getName().endsWith("_DEFAULT")) {
        try {
          String v = (String) f.get(null);
          if (v != null && v.startsWith("spark.tp.") && !v.endsWith(".") && !v.startsWith("spark.tp.test.")) {
            keys.add(v);
          }
        } catch (IllegalAccessException e) {
          throw new IllegalStateException(e);
        }
      }
    }
    return keys;
  }

  private static String confDefault(String key) {
    for (Field f : TpConf.class.getFields()) {
      try {
        if (f.getType() == String.class && key.equals(f.get(null))) {
          Field d = TpConf.class.getField(f.getName() + "_DEFAULT");
          return (String) d.get(null);
        }
      } catch (ReflectiveOperationException e) {
        return null;
      }
    }
    return null;
  }

  static String norm(String s) {
    return s.toLowerCase(Locale.ROOT).replace("-", "").replace("_", "");
  }

  private static String kebab(String camel) {
    return camel.replaceAll("([a-z0-9])([A-Z])", "$1-$2").toLowerCase(Locale.ROOT);
  }

  private static String constantString(String fn, String arg, Expression e, String what) {
    if (!e.foldable()) {
      throw Sc.error(fn + " argument '" + arg + "' must be a constant string (" + what + "), got the expression "
          + e.sql() + "; a call runs one model for the whole query");
    }
    if (!e.dataType().equals(DataTypes.StringType)) {
      throw Sc.error(fn + " argument '" + arg + "' must be a string (" + what + "), got " + e.dataType().simpleString()
          + " " + e.sql());
    }
    Object v = e.eval(null);
    if (v == null) {
      throw Sc.error(fn + " argument '" + arg + "' is null; give " + what);
    }
    return v.toString();
  }

  private static String constantValue(String fn, String arg, Expression e) {
    if (!e.foldable()) {
      throw Sc.error(fn + " option '" + arg + "' must be a constant, got the expression " + e.sql());
    }
    Object v = e.eval(null);
    if (v == null) {
      throw Sc.error(fn + " option '" + arg + "' is null; give a value");
    }
    if (e.dataType().typeName().equals("array")) {
      // an array (stop => array('\n\n', 'END')) as a JSON array
      ArrayType at = (ArrayType) e.dataType();
      ArrayData data = (ArrayData) v;
      List<Object> items = new ArrayList<>();
      for (int i = 0; i < data.numElements(); i++) {
        Object x = data.get(i, at.elementType());
        items.add(x instanceof UTF8String ? x.toString() : x);
      }
      try {
        return new com.fasterxml.jackson.databind.ObjectMapper().writeValueAsString(items);
      } catch (com.fasterxml.jackson.core.JsonProcessingException ex) {
        throw Sc.error(fn + " option '" + arg + "': " + ex.getMessage(), ex);
      }
    }
    return v.toString();
  }

  private static Map<String, String> optionsMap(String fn, Expression e) {
    if (!(e.dataType() instanceof MapType mt)) {
      throw Sc.error(fn + " argument 'options' must be a map<string,string> such as map('tp', '2', 'batch-size', '256'),"
          + " got " + e.dataType().simpleString() + " " + e.sql());
    }
    if (!e.foldable()) {
      throw Sc.error(fn + " argument 'options' must be a constant map, got the expression " + e.sql());
    }
    MapData data = (MapData) e.eval(null);
    Map<String, String> out = new LinkedHashMap<>();
    if (data == null) {
      return out;
    }
    for (int i = 0; i < data.numElements(); i++) {
      Object k = data.keyArray().get(i, mt.keyType());
      Object v = data.valueArray().get(i, mt.valueType());
      if (v == null) {
        throw Sc.error(fn + " argument 'options': the value of '" + k + "' is null");
      }
      out.put(String.valueOf(k), String.valueOf(v));
    }
    return out;
  }

  /** Positional then named arguments ({@code name => value}) of a call. */
  static final class Args {
    final String fn;
    final List<String> names;
    final List<Expression> positional = new ArrayList<>();
    final Map<String, Expression> named = new LinkedHashMap<>();

    private Args(String fn, List<String> names) {
      this.fn = fn;
      this.names = names;
    }

    static Args parse(String fn, Seq<Expression> arguments, List<String> names) {
      Args a = new Args(fn, names);
      for (Expression e : Sc.list(arguments)) {
        if (e instanceof NamedArgumentExpression n) {
          String key = n.key().toLowerCase(Locale.ROOT);
          if (a.named.put(key, n.value()) != null) {
            throw Sc.error(fn + ": argument '" + n.key() + "' is given twice");
          }
        } else {
          if (!a.named.isEmpty()) {
            throw Sc.error(fn + ": a positional argument (" + e.sql() + ") follows a named one; put positional"
                + " arguments first");
          }
          a.positional.add(e);
        }
      }
      if (a.positional.size() > names.size()) {
        throw Sc.error(fn + " takes at most " + names.size() + " positional arguments (" + String.join(", ", names)
            + "), got " + a.positional.size());
      }
      for (int i = 0; i < a.positional.size(); i++) {
        if (a.named.containsKey(names.get(i))) {
          throw Sc.error(fn + ": argument '" + names.get(i) + "' is given both by position and by name");
        }
      }
      return a;
    }

    Expression positionalOrNamed(String name) {
      int i = names.indexOf(name);
      if (i >= 0 && i < positional.size()) {
        return positional.get(i);
      }
      return named.get(name);
    }

    Expression require(String name, String example) {
      Expression e = positionalOrNamed(name);
      if (e == null) {
        throw Sc.error(fn + " needs the argument '" + name + "', e.g. " + example);
      }
      return e;
    }
  }
}
