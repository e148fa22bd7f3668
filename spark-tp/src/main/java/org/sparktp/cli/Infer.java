package org.sparktp.cli;

import static org.apache.spark.sql.functions.expr;

import java.io.PrintStream;
import java.util.List;
import java.util.Locale;
import java.util.function.Function;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.sparktp.nn.plan.LayerGraph;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.spark.ResumableWrite;
import org.sparktp.spark.TensorParallelModel;

/**
 * {@code spark-tp infer}: runs a model directory on a table and writes the table with one more column.
 * The output is written to a staging folder beside the target and moved there only after the job
 * succeeded ({@link SafeOutput}): a failed job leaves no partial output and, with {@code --mode
 * overwrite}, the old output as it was.
 */
final class Infer {
  private Infer() {}

  static String format(String path, String flag) {
    if (flag != null) {
      String f = flag.toLowerCase(Locale.ROOT);
      if (!f.equals("parquet") && !f.equals("json") && !f.equals("csv")) {
        throw new UsageException("unknown format '" + flag + "'; use parquet, json or csv");
      }
      return f;
    }
    String p = path.toLowerCase(Locale.ROOT).replaceAll("/+$", "");
    if (p.endsWith(".json") || p.endsWith(".jsonl") || p.endsWith(".ndjson")) {
      return "json";
    }
    if (p.endsWith(".csv")) {
      return "csv";
    }
    return "parquet";
  }

  /** {@code --task}, or null (the model's default). */
  static Task task(Args a) {
    if (!a.has("task")) {
      return null;
    }
    try {
      return Task.parse(a.get("task", null));
    } catch (IllegalArgumentException e) {
      throw new UsageException("--task: " + e.getMessage());
    }
  }

  /** {@code --pooling}, or null (the model's default). */
  static Pooling pooling(Args a) {
    if (!a.has("pooling")) {
      return null;
    }
    try {
      return Pooling.parse(a.get("pooling", null));
    } catch (IllegalArgumentException e) {
      throw new UsageException("--pooling: " + e.getMessage());
    }
  }

  static void noTransformerFlags(Args a) {
    for (String f : new String[] {"task", "pooling", "normalize"}) {
      if (a.has(f)) {
        throw new UsageException("--" + f + " applies to Hugging Face transformers; this model is a spark-tp layer list");
      }
    }
  }

  static void run(Args a, PrintStream out, PrintStream err) throws Exception {
    String modelDir = a.require("model");
    String input = a.require("input");
    String output = a.require("output");
    String inFormat = format(input, a.get("format", null));
    String outFormat = format(output, a.get("output-format", null));
    String featuresCol = a.get("features-col", "features");
    String outputCol = a.get("output-col", "prediction");
    String mode = a.get("mode", "error").toLowerCase(Locale.ROOT);
    if (!mode.equals("error") && !mode.equals("overwrite")) {
      throw new UsageException("--mode takes error or overwrite, got '" + mode + "'");
    }
    int tp = a.intValue("tp", 1, 1);
    if (a.has("dtype") && !a.get("dtype", "auto").trim().equalsIgnoreCase("auto")) {
      try {
        org.sparktp.tensor.DType.parseStorage(a.get("dtype", "auto"), "--dtype");
      } catch (IllegalArgumentException e) {
        throw new UsageException(e.getMessage());
      }
    }
    String act = activationDtype(a); // checked before any work
    Configuration hadoop = new Configuration();
    for (java.util.Map.Entry<String, String> e : a.confs().entrySet()) {
      if (e.getKey().startsWith("spark.hadoop.")) {
        hadoop.set(e.getKey().substring("spark.hadoop.".length()), e.getValue());
      }
    }
    checkExists(modelDir, "model directory", hadoop);
    checkExists(input, "input", hadoop);
    // before anything is touched: an output that is, holds or lies inside the input or the model is refused
    SafeOutput.checkSeparate(output, input, "the input", hadoop);
    SafeOutput.checkSeparate(output, modelDir, "the model directory", hadoop);
    checkNotEmpty(input, hadoop);
    boolean overwrite = mode.equals("overwrite");
    boolean resume = a.has("resume");
    if (resume && overwrite) {
      throw new UsageException("--resume finishes the job that wrote the output; it does not go with --mode overwrite");
    }
    if (a.has("ranges") && !resume) {
      throw new UsageException("--ranges applies to --resume (the ranges an output is committed in)");
    }
    int ranges = a.intValue("ranges", 32, 1);
    if (!overwrite && !resume) {
      Path outPath = new Path(output);
      if (outPath.getFileSystem(hadoop).exists(outPath)) {
        throw new UsageException("output " + output + " already exists; choose another path or pass --mode overwrite"
            + (ResumableWrite.unfinished(output, hadoop) ? " (or --resume to finish the job that started it)" : ""));
      }
    }
    // validates the whole checkpoint against its config now, before Spark starts; loads no weights:
    // each rank reads only its own shards
    TensorParallelModel model = TensorParallelModel.fromDirectory(modelDir).setInputCol(featuresCol).setTpSize(tp);
    if (a.has("output-col") || !"generate".equalsIgnoreCase(a.get("task", null))) {
      model.setOutputCol(outputCol); // task generate writes its own columns: --output-col with it is an error
    }
    LayerGraph spec = model.graph();
    if (spec == null) { // a Hugging Face transformer
      if (a.has("task")) {
        model.setTask(task(a).id());
      }
      if (a.has("pooling")) {
        model.setPooling(pooling(a).id());
      }
      model.setNormalize(a.has("normalize"));
    } else {
      noTransformerFlags(a);
    }
    GenerateFlags.apply(a, model); // issue 12: the flags of --task generate
    if (a.has("chat-template-kwargs")) { // the extra variables of the chat template a messages column is rendered with
      if (spec != null) {
        throw new UsageException("--chat-template-kwargs applies to Hugging Face models with a chat template");
      }
      try {
        model.setChatTemplateKwargs(a.get("chat-template-kwargs", null));
      } catch (IllegalArgumentException e) {
        throw new UsageException(e.getMessage().replaceFirst("^chatTemplateKwargs", "--chat-template-kwargs"));
      }
    }
    if (a.has("groups")) {
      model.setGroups(a.intValue("groups", 1, 1));
    }
    if (a.has("batch-size")) {
      model.setBatchSize(a.intValue("batch-size", 1, 1));
    }
    if (a.has("backend")) {
      String be = a.get("backend", "auto");
      try {
        model.setBackend(be);
      } catch (IllegalArgumentException e) {
        throw new UsageException("--backend " + be + " is not a backend; use auto, cpu or cuda");
      }
      String master = a.get("master", "local[*]");
      if (be.trim().equalsIgnoreCase("cuda") && master.startsWith("local")
          && !org.sparktp.backend.cuda.CudaProbe.status().available()) {
        // on a local master the executors run on this machine, so the driver's probe answers for them
        throw new UsageException("--backend cuda is not available on this machine ("
            + org.sparktp.backend.cuda.CudaProbe.status().backendReason() + "); use auto or cpu");
      }
    }
    if (a.has("dtype")) {
      model.setDtype(a.get("dtype", "auto"));
    }
    if (act != null) {
      model.setActivationDtype(act);
    }
    SparkSession spark = Sessions.open("infer", a.get("master", null), a.confs());
    try {
      Dataset<Row> df = read(spark, input, inFormat, featuresCol, spec);
      Function<Dataset<Row>, Dataset<Row>> pipeline = d -> forFormat(model.transform(d), outFormat, outputCol);
      long t0 = System.nanoTime();
      long rows;
      long errors;
      String resumed = "";
      long ran; // rows computed by this run
      if (resume) {
        ResumableWrite w = new ResumableWrite(output).format(outFormat).option("header", "true").ranges(ranges)
            .lines(l -> err.println("infer: " + l), l -> err.println("spark-tp infer: WARN " + l))
            .fingerprint("input", SafeOutput.qualify(new Path(input), hadoop).toString())
            .fingerprintFiles("model", SafeOutput.qualify(new Path(modelDir), hadoop).toString())
            .fingerprint("options", resultOptions(a));
        ResumableWrite.Result r;
        try (Progress p = new Progress(spark, err, "infer")) {
          r = w.save(df, pipeline);
          p.drain();
          errors = p.errorRows();
          p.succeeded();
        } catch (IllegalArgumentException e) {
          if (e.getMessage() != null && e.getMessage().startsWith("output " + output + " ")) {
            throw new UsageException(e.getMessage()); // another job's output: one line, before any job
          }
          throw e;
        }
        rows = r.rows();
        ran = r.rowsComputed();
        resumed = String.format(Locale.ROOT, "; %d of %d ranges were committed before, %d computed now (%,d rows)",
            r.skipped(), r.ranges(), r.computed(), r.rowsComputed());
      } else {
        Dataset<Row> result = pipeline.apply(df);
        // the job writes beside the target; the target is replaced only once the job succeeded
        try (SafeOutput target = SafeOutput.begin(output, overwrite, spark.sparkContext().hadoopConfiguration(), err);
            Progress p = new Progress(spark, err, "infer")) {
          result.write().mode("errorifexists").format(outFormat).option("header", "true")
              .save(target.staging().toString());
          target.commit();
          p.drain();
          rows = p.committedRows(); // counted once, from the tasks whose output was committed
          ran = rows;
          errors = p.errorRows();
          p.succeeded();
        }
      }
      double secs = (System.nanoTime() - t0) / 1e9;
      out.printf(Locale.ROOT, "wrote %,d rows to %s (%s) in %.1f s, %s rows/s, tp=%d%s%s%n", rows, output, outFormat,
          secs, Progress.rate(ran, secs), tp, errors == 0 ? "" : String.format(Locale.ROOT, "; %,d row(s) could not"
              + " run (%s)", errors, onError(spark).equals("column") ? "their cause is in the column 'error'"
              : "null outputs, spark.tp.on-error=null"), resumed);
    } finally {
      spark.stop();
    }
  }

  /** {@code result} as {@code format} takes it: in CSV, arrays become strings of numbers separated by spaces. */
  private static Dataset<Row> forFormat(Dataset<Row> result, String format, String outputCol) {
    boolean arrayOut = hasColumn(result, outputCol) // task generate writes its own columns
        && result.schema().apply(outputCol).dataType() instanceof org.apache.spark.sql.types.ArrayType;
    if (format.equals("csv") && arrayOut) {
      result = result.withColumn(outputCol, expr("concat_ws(' ', transform(`" + outputCol
          + "`, x -> cast(x as string)))"));
      for (StructField f : result.schema().fields()) {
        if (f.dataType() instanceof org.apache.spark.sql.types.ArrayType) {
          result = result.withColumn(f.name(), expr("concat_ws(' ', transform(`" + f.name()
              + "`, x -> cast(x as string)))"));
        }
      }
    }
    return result;
  }

  /** The flags and settings that change what a job writes: a resumed job must be given the same ones. */
  static final List<String> RESULT_FLAGS = List.of("format", "output-format", "features-col", "output-col", "task",
      "pooling", "normalize", "dtype", "activation-dtype", "max-new-tokens", "temperature", "top-k", "top-p", "seed",
      "repetition-penalty", "chat-template-kwargs");
  static final List<String> RESULT_CONFS = List.of(org.sparktp.TpConf.DTYPE, org.sparktp.TpConf.ACTIVATION_DTYPE,
      org.sparktp.TpConf.NULL_POLICY, org.sparktp.TpConf.ON_ERROR, org.sparktp.TpConf.TRUNCATE,
      org.sparktp.TpConf.KV_CACHE_MAX_BYTES);

  /** {@code --flag value} of each flag in {@link #RESULT_FLAGS} and {@link #RESULT_CONFS} given, in a fixed order. */
  static String resultOptions(Args a) {
    StringBuilder sb = new StringBuilder();
    for (String f : RESULT_FLAGS) {
      if (a.has(f)) {
        sb.append(sb.length() == 0 ? "" : " ").append("--").append(f).append(' ').append(a.get(f, ""));
      }
    }
    for (String s : a.all("stop")) {
      sb.append(sb.length() == 0 ? "" : " ").append("--stop ").append(s.replace("\\", "\\\\").replace("\n", "\\n"));
    }
    for (String k : RESULT_CONFS) {
      String v = a.confs().get(k);
      if (v != null) {
        sb.append(sb.length() == 0 ? "" : " ").append("--conf ").append(k).append('=').append(v.trim());
      }
    }
    return sb.length() == 0 ? "(defaults)" : sb.toString();
  }

  /** {@code spark.tp.on-error} of the session. */
  private static String onError(SparkSession spark) {
    return spark.conf().get(org.sparktp.TpConf.ON_ERROR, org.sparktp.TpConf.ON_ERROR_DEFAULT).trim()
        .toLowerCase(Locale.ROOT);
  }

  /** An input with no data (no files, or only empty ones) is refused with a line that says so. */
  private static void checkNotEmpty(String input, Configuration hadoop) throws java.io.IOException {
    Path p = new Path(input);
    FileSystem fs = p.getFileSystem(hadoop);
    org.apache.hadoop.fs.FileStatus[] matches = fs.globStatus(p);
    if (matches == null || matches.length == 0) {
      return; // checkExists reported it
    }
    for (org.apache.hadoop.fs.FileStatus st : matches) {
      if (hasData(fs, st)) {
        return;
      }
    }
    throw new UsageException("input " + input + " is empty: it holds no data files (or only empty ones)");
  }

  private static boolean hasData(FileSystem fs, org.apache.hadoop.fs.FileStatus st) throws java.io.IOException {
    String name = st.getPath().getName();
    if (name.startsWith(".") || name.startsWith("_")) {
      return false; // hidden, as Spark's readers treat them
    }
    if (st.isFile()) {
      return st.getLen() > 0;
    }
    for (org.apache.hadoop.fs.FileStatus c : fs.listStatus(st.getPath())) {
      if (hasData(fs, c)) {
        return true;
      }
    }
    return false;
  }

  private static void checkExists(String path, String what, Configuration hadoop) throws java.io.IOException {
    Path p = new Path(path);
    boolean found;
    try {
      FileSystem fs = p.getFileSystem(hadoop);
      org.apache.hadoop.fs.FileStatus[] m = fs.globStatus(p);
      found = m != null && m.length > 0;
    } catch (java.io.IOException e) {
      throw new java.io.IOException("Cannot reach the " + what + " " + path + ": " + oneLine(e.getMessage()), e);
    }
    if (!found) {
      throw new UsageException(what + " " + path + " does not exist");
    }
  }

  static String oneLine(String m) {
    return m == null ? "" : m.lines().findFirst().orElse(m);
  }

  /** Reads the input; in CSV the features are a string of numbers separated by spaces, commas or semicolons. */
  static Dataset<Row> read(SparkSession spark, String input, String format, String featuresCol, LayerGraph spec) {
    Dataset<Row> df = switch (format) {
      case "csv" -> spark.read().option("header", "true").option("inferSchema", "true").csv(input);
      case "json" -> spark.read().json(input);
      default -> spark.read().parquet(input);
    };
    if (format.equals("csv") && hasColumn(df, featuresCol) && spec != null) { // transformers: a string is text
      DataType t = df.schema().apply(featuresCol).dataType();
      if (t.equals(DataTypes.StringType)) {
        String elem = spec.takesIds() ? "bigint" : "float";
        // try_cast: a value that is not a number becomes a null element, which the row check reports with
        // the row and the partition (instead of Spark's CAST_INVALID_INPUT)
        df = spec.takesIds() && !spec.takesBags()
            ? df.withColumn(featuresCol, expr("try_cast(`" + featuresCol + "` as bigint)"))
            : df.withColumn(featuresCol, expr("try_cast(split(trim(`" + featuresCol + "`), '[ ,;]+') as array<" + elem
                + ">)"));
      }
    }
    return df;
  }

  private static boolean hasColumn(Dataset<Row> df, String name) {
    for (String c : df.columns()) {
      if (c.equals(name)) {
        return true;
      }
    }
    return false;
  }

  /** {@code --activation-dtype} (null when not given), checked: a bad value is a usage error listing the values. */
  static String activationDtype(Args a) {
    if (!a.has("activation-dtype")) {
      return null;
    }
    String v = a.get("activation-dtype", "auto");
    try {
      org.sparktp.backend.Precision.activation(v, org.sparktp.tensor.DType.F32, "--activation-dtype");
    } catch (IllegalArgumentException e) {
      throw new UsageException(e.getMessage());
    }
    return v;
  }
}
