package org.sparktp.cli;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.expr;

import java.io.PrintStream;
import java.util.Locale;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.spark.TensorParallelModel;

/**
 * {@code spark-tp infer}: runs a model directory on a table and writes the table with one more column.
 * The output goes through Spark's commit protocol: a failed job leaves no partial output.
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
    Configuration hadoop = new Configuration();
    checkExists(modelDir, "model directory", hadoop);
    checkExists(input, "input", hadoop);
    Path outPath = new Path(output);
    if (mode.equals("error") && outPath.getFileSystem(hadoop).exists(outPath)) {
      throw new UsageException("output " + output + " already exists; choose another path or pass --mode overwrite");
    }
    // validates the whole checkpoint against its config now, before Spark starts; loads no weights:
    // each rank reads only its own shards
    TensorParallelModel model = TensorParallelModel.fromDirectory(modelDir).setInputCol(featuresCol)
        .setOutputCol(outputCol).setTpSize(tp);
    ModelSpec spec = model.spec();
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
    SparkSession spark = Sessions.open("infer", a.get("master", null), a.confs());
    try {
      Dataset<Row> df = read(spark, input, inFormat, featuresCol, spec);
      if (a.has("groups")) {
        model.setGroups(a.intValue("groups", 1, 1));
      }
      if (a.has("batch-size")) {
        model.setBatchSize(a.intValue("batch-size", 1, 1));
      }
      if (a.has("backend")) {
        model.setBackend(a.get("backend", "auto"));
      }
      Dataset<Row> result = model.transform(df);
      boolean arrayOut = hasColumn(result, outputCol) // task generate writes its own columns
          && result.schema().apply(outputCol).dataType() instanceof org.apache.spark.sql.types.ArrayType;
      if (outFormat.equals("csv") && arrayOut) {
        result = result.withColumn(outputCol, expr("concat_ws(' ', transform(`" + outputCol
            + "`, x -> cast(x as string)))"));
        for (StructField f : result.schema().fields()) {
          if (f.dataType() instanceof org.apache.spark.sql.types.ArrayType) {
            result = result.withColumn(f.name(), expr("concat_ws(' ', transform(`" + f.name()
                + "`, x -> cast(x as string)))"));
          }
        }
      }
      long t0 = System.nanoTime();
      long rows;
      boolean existed = outPath.getFileSystem(hadoop).exists(outPath);
      try (Progress p = new Progress(spark, err, "infer")) {
        result.write().mode(mode.equals("overwrite") ? "overwrite" : "errorifexists").format(outFormat)
            .option("header", "true").save(output);
        p.succeeded();
        rows = p.rows();
      } catch (Exception e) { // Spark's job failures are checked SparkExceptions
        if (!existed) {
          removeUncommitted(outPath, hadoop);
        }
        throw e;
      }
      double secs = (System.nanoTime() - t0) / 1e9;
      out.printf(Locale.ROOT, "wrote %,d rows to %s (%s) in %.1f s, %.0f rows/s, tp=%d%n", rows, output, outFormat,
          secs, rows / Math.max(secs, 1e-9), tp);
    } finally {
      spark.stop();
    }
  }

  /**
   * After a failed job Spark's committer has removed the task outputs but leaves the output folder (and
   * maybe {@code _temporary}); remove that folder when it holds no committed data, so a rerun starts clean.
   */
  private static void removeUncommitted(Path out, Configuration hadoop) throws java.io.IOException {
    FileSystem fs = out.getFileSystem(hadoop);
    if (!fs.exists(out)) {
      return;
    }
    for (org.apache.hadoop.fs.FileStatus st : fs.listStatus(out)) {
      String name = st.getPath().getName();
      if (!name.equals("_temporary") && !name.startsWith(".")) {
        return; // committed data: leave it
      }
    }
    fs.delete(out, true);
  }

  private static void checkExists(String path, String what, Configuration hadoop) throws java.io.IOException {
    Path p = new Path(path);
    FileSystem fs = p.getFileSystem(hadoop);
    if (!fs.exists(p)) {
      throw new UsageException(what + " " + path + " does not exist");
    }
  }

  /** Reads the input; in CSV the features are a string of numbers separated by spaces, commas or semicolons. */
  static Dataset<Row> read(SparkSession spark, String input, String format, String featuresCol, ModelSpec spec) {
    Dataset<Row> df = switch (format) {
      case "csv" -> spark.read().option("header", "true").option("inferSchema", "true").csv(input);
      case "json" -> spark.read().json(input);
      default -> spark.read().parquet(input);
    };
    if (format.equals("csv") && hasColumn(df, featuresCol) && spec != null) { // transformers: a string is text
      DataType t = df.schema().apply(featuresCol).dataType();
      if (t.equals(DataTypes.StringType)) {
        String elem = spec.takesIds() ? "bigint" : "float";
        df = spec.takesIds() && !spec.takesBags()
            ? df.withColumn(featuresCol, col(featuresCol).cast("bigint"))
            : df.withColumn(featuresCol, expr("cast(split(trim(`" + featuresCol + "`), '[ ,;]+') as array<" + elem
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
}
