package org.sparktp.cli;

import static org.apache.spark.sql.functions.col;
import static org.apache.spark.sql.functions.expr;
import static org.apache.spark.sql.functions.udf;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.api.java.UDF1;
import org.apache.spark.sql.expressions.UserDefinedFunction;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.storage.StorageLevel;
import org.sparktp.backend.Activation;
import org.sparktp.model.LayerModel;
import org.sparktp.nn.Parallel;
import org.sparktp.nn.plan.Plan;
import org.sparktp.spark.TensorParallelModel;
import org.sparktp.spark.TpMetrics;

/**
 * {@code spark-tp demo}: a random model of two MLP blocks ({@code x + W2 gelu(W1 layer_norm(x))}, width
 * 1024, hidden 4096) run on random rows at {@code --tp} and at 1; prints rows/s, weight bytes per rank
 * and the share of time in communication, and checks that both runs agree within 1e-5.
 */
final class Demo {
  static final int WIDTH = 1024;
  static final int HIDDEN = 4096;
  static final double TOLERANCE = 1e-5;

  private Demo() {}

  static LayerModel model(long seed) {
    SplittableRandom rnd = new SplittableRandom(seed);
    LayerModel.Builder m = LayerModel.builder(WIDTH);
    for (int b = 0; b < 2; b++) {
      String n = "block" + b;
      m.residual(r -> r.layerNorm(n + ".ln", fill(rnd, WIDTH, 0.2, 1), fill(rnd, WIDTH, 0.1, 0), 1e-5f)
          .linear(n + ".up", HIDDEN, fill(rnd, HIDDEN * WIDTH, 1 / Math.sqrt(WIDTH), 0), fill(rnd, HIDDEN, 0.1, 0))
          .activation(Activation.GELU)
          .linear(n + ".down", WIDTH, fill(rnd, WIDTH * HIDDEN, 1 / Math.sqrt(HIDDEN), 0), fill(rnd, WIDTH, 0.1, 0)));
    }
    return m.build();
  }

  private static float[] fill(SplittableRandom rnd, int n, double scale, double center) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) (center + (rnd.nextDouble() * 2 - 1) * scale);
    }
    return a;
  }

  static void run(Args a, PrintStream out, PrintStream err) {
    int tp = a.intValue("tp", 2, 1);
    int rows = a.intValue("rows", 20000, 1);
    int batch = a.intValue("batch-size", 256, 1);
    SparkSession spark = Sessions.open("demo", a.get("master", null), a.confs());
    try {
      LayerModel spec = model(42);
      long params = Plan.build(spec.graph(), 1).weightBytes(0) / 4;
      out.printf(Locale.ROOT, "spark-tp demo: 2 MLP blocks (width %d, hidden %d), %,d parameters (%s), %,d rows, "
          + "master %s%n", WIDTH, HIDDEN, params, SparkTpCli.fmtBytes(params * 4), rows, spark.sparkContext().master());
      UserDefinedFunction features = udf((UDF1<Long, float[]>) id -> {
        SplittableRandom r = new SplittableRandom(id * 0x9E3779B97F4A7C15L + 7);
        float[] v = new float[WIDTH];
        for (int i = 0; i < WIDTH; i++) {
          v[i] = (float) (r.nextDouble() * 2 - 1);
        }
        return v;
      }, DataTypes.createArrayType(DataTypes.FloatType, false));
      Dataset<Row> input = spark.range(rows).withColumn("features", features.apply(col("id")))
          .persist(StorageLevel.MEMORY_ONLY());
      input.count();
      Result atTp = runAt(spark, spec, input, tp, batch, err);
      Result atOne = tp == 1 ? atTp : runAt(spark, spec, input, 1, batch, err);
      out.printf(Locale.ROOT, "%n%-4s %-7s %10s %10s %14s %18s %12s%n", "tp", "groups", "rows", "seconds", "rows/s",
          "weight bytes/rank", "comm share");
      for (Result r : tp == 1 ? List.of(atTp) : List.of(atTp, atOne)) {
        out.printf(Locale.ROOT, "%-4d %-7s %10d %10.2f %14.0f %18s %11.1f%%%n", r.tp, r.groups, rows, r.seconds,
            rows / r.seconds, SparkTpCli.fmtBytes(r.weightBytes), 100 * r.commShare);
      }
      Row err2 = atTp.output.join(atOne.output.withColumnRenamed("prediction", "reference"), "id")
          .select(
              expr("max(aggregate(zip_with(prediction, reference, (x, y) -> abs(x - y)), 0D, (m, x) -> greatest(m, x)))"),
              expr("max(aggregate(reference, 0D, (m, x) -> greatest(m, abs(x))))"),
              expr("count(*)"))
          .first();
      double maxDiff = err2.getDouble(0);
      double maxRef = err2.getDouble(1);
      long joined = err2.getLong(2);
      double rel = maxRef == 0 ? maxDiff : maxDiff / maxRef;
      boolean ok = rel <= TOLERANCE && joined == rows;
      out.printf(Locale.ROOT, "%nagreement of tp=%d with tp=1: max |y_tp - y_1| / max |y_1| = %.2e over %d rows "
          + "(must be <= %.0e): %s%n", tp, rel, joined, TOLERANCE, ok ? "OK" : "FAILED");
      if (!ok) {
        throw new IllegalStateException("tp=" + tp + " and tp=1 disagree: relative difference " + rel + " over "
            + joined + " of " + rows + " rows");
      }
    } finally {
      spark.stop();
    }
  }

  private record Result(int tp, String groups, double seconds, double commShare, long weightBytes,
      Dataset<Row> output) {}

  private static Result runAt(SparkSession spark, LayerModel spec, Dataset<Row> input, int tp, int batch,
      PrintStream err) {
    TensorParallelModel model = new TensorParallelModel(spec).setTpSize(tp).setBatchSize(batch);
    Dataset<Row> out = model.transform(input).select("id", "prediction").persist(StorageLevel.MEMORY_ONLY());
    long t0 = System.nanoTime();
    try (Progress p = new Progress(spark, err, "tp=" + tp)) {
      out.count();
      p.drain();
      p.succeeded();
    }
    double secs = (System.nanoTime() - t0) / 1e9;
    TpMetrics m = model.lastMetrics();
    double comm = 0;
    double compute = 0;
    String groups = "?";
    long held = 0;
    if (m != null) {
      held = m.weightBytes(0);
      for (int r = 0; r < m.tpSize(); r++) {
        comm += m.commNanos(r);
        compute += m.computeNanos(r);
      }
      groups = String.valueOf(m.groups());
    }
    return new Result(tp, groups, secs, comm + compute == 0 ? 0 : comm / (comm + compute), held, out);
  }
}
