package org.sparktp.bench;

import java.util.Map;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.TpConf;
import org.sparktp.backend.Backends;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.tensor.DType;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.nn.InputBatch;
import org.sparktp.model.LayerModel;
import org.sparktp.nn.Parallel;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.run.TpRunner;
import org.sparktp.nn.WeightSource;
import org.sparktp.spark.TensorParallelModel;

/**
 * Rows per second of the engine alone ({@link TpRunner} over {@link LocalCommunicator} threads, rows
 * already in float arrays) next to {@link TensorParallelModel#transform} on a cached DataFrame of the same
 * rows written to Spark's no-op sink, one group of {@code tp} ranks, for each tp size. Each figure is the
 * median of {@code --repeats} timed runs after one warm-up run (which also fills the shard cache).
 *
 * <pre>
 * SparkBench [--master local[2]] [--rows 16384] [--in 1024] [--hidden 4096] [--out 1024] [--batch 256]
 *            [--tp 1,2] [--repeats 3] [--dtype f32|bf16|f16] [--activation-dtype auto[,f32,bf16,f16]] [--json FILE]
 * </pre>
 */
public final class SparkBench {
  private SparkBench() {}

  private record Result(int tp, DType act, double engineRowsPerSec, double frameRowsPerSec) {
    double ratio() {
      return frameRowsPerSec / engineRowsPerSec;
    }
  }

  public static void main(String[] args) throws Exception {
    String master = "local[2]";
    int rows = 16384;
    int in = 1024;
    int hidden = 4096;
    int out = 1024;
    int batch = 256;
    int repeats = 3;
    int[] tps = {1, 2};
    String json = null;
    DType dtype = DType.F32;
    String[] acts = {"auto"}; // issue 9b: activation dtypes, run side by side
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      String v = i + 1 < args.length ? args[i + 1] : null;
      switch (a) {
        case "--master" -> master = v;
        case "--rows" -> rows = Integer.parseInt(v);
        case "--in" -> in = Integer.parseInt(v);
        case "--hidden" -> hidden = Integer.parseInt(v);
        case "--out" -> out = Integer.parseInt(v);
        case "--batch" -> batch = Integer.parseInt(v);
        case "--repeats" -> repeats = Integer.parseInt(v);
        case "--tp" -> tps = Arrays.stream(v.split(",")).mapToInt(Integer::parseInt).toArray();
        case "--json" -> json = v;
        case "--dtype" -> dtype = DType.parseStorage(v, "--dtype");
        case "--activation-dtype" -> acts = v.split(",");
        default -> throw new IllegalArgumentException("Unknown argument '" + a + "'; see the class Javadoc");
      }
      i++;
    }
    Random rng = new Random(42);
    LayerModel spec = mlp(rng, in, hidden, out);
    float[][] x = new float[rows][];
    for (int i = 0; i < rows; i++) {
      x[i] = row(i, in);
    }
    int maxTp = Arrays.stream(tps).max().orElse(1);
    SparkSession spark = SparkSession.builder().master(master).appName("spark-tp bench")
        .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", String.valueOf(maxTp)).getOrCreate();
    List<Result> results = new ArrayList<>();
    try {
      JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
      // rows are made on the executors from their index (a parallelized list of rows would ship its data
      // with every task of every later stage)
      List<Long> ids = new ArrayList<>(rows);
      for (long i = 0; i < rows; i++) {
        ids.add(i);
      }
      final int width = in;
      StructType schema = new StructType().add("id", DataTypes.LongType)
          .add("features", DataTypes.createArrayType(DataTypes.FloatType, false));
      Dataset<Row> df = spark.createDataFrame(jsc.parallelize(ids, maxTp).map(i -> {
        float[] v = row(i, width);
        Float[] b = new Float[width];
        for (int j = 0; j < width; j++) {
          b[j] = v[j];
        }
        return RowFactory.create(i, b);
      }), schema).cache();
      df.count();
      for (int tp : tps) {
        DType[] actTypes = new DType[acts.length];
        TensorParallelModel[] models = new TensorParallelModel[acts.length];
        for (int a = 0; a < acts.length; a++) {
          actTypes[a] = org.sparktp.backend.Precision.activation(acts[a], dtype, "--activation-dtype");
          models[a] = new TensorParallelModel(spec).setTpSize(tp).setGroups(1).setBatchSize(batch)
              .setDtype(dtype.id()).setActivationDtype(actTypes[a].id());
          runEngine(spec, x, tp, batch, dtype, actTypes[a]);
          runFrame(models[a], df);
        }
        double[][] engine = new double[acts.length][repeats];
        double[][] frame = new double[acts.length][repeats];
        for (int r = 0; r < repeats; r++) {
          for (int a = 0; a < acts.length; a++) { // the activation dtypes alternate within each repetition
            engine[a][r] = rows / runEngine(spec, x, tp, batch, dtype, actTypes[a]);
            frame[a][r] = rows / runFrame(models[a], df);
          }
        }
        for (int a = 0; a < acts.length; a++) {
          results.add(new Result(tp, actTypes[a], median(engine[a]), median(frame[a])));
        }
        models[0].release();
      }
    } finally {
      spark.stop();
    }
    StringBuilder table = new StringBuilder();
    table.append(String.format(Locale.ROOT, "model %d -> %d (gelu) -> %d, %d rows, batch %d, master %s, %s weights "
        + "(kernel %s), median of %d%n", in, hidden, out, rows, batch, master, dtype.id(), kernel(dtype), repeats));
    table.append(String.format(Locale.ROOT, "%-4s %-11s %16s %16s %8s%n", "tp", "activations", "engine rows/s",
        "DataFrame rows/s", "ratio"));
    for (Result r : results) {
      table.append(String.format(Locale.ROOT, "%-4d %-11s %16.0f %16.0f %8.2f%n", r.tp(), r.act().id(),
          r.engineRowsPerSec(), r.frameRowsPerSec(), r.ratio()));
    }
    System.out.print(table);
    if (json != null) {
      StringBuilder sb = new StringBuilder();
      sb.append(String.format(Locale.ROOT, "{\"model\": {\"in\": %d, \"hidden\": %d, \"out\": %d}, \"rows\": %d,"
          + " \"batch\": %d, \"master\": \"%s\", \"repeats\": %d, \"dtype\": \"%s\", \"kernel\": \"%s\","
          + " \"results\": [", in, hidden, out, rows, batch, master, repeats, dtype.id(), kernel(dtype)));
      for (int i = 0; i < results.size(); i++) {
        Result r = results.get(i);
        sb.append(String.format(Locale.ROOT, "%s{\"tp\": %d, \"activation_dtype\": \"%s\", \"engine_rows_per_s\": %.1f,"
            + " \"dataframe_rows_per_s\": %.1f, \"ratio\": %.3f}", i == 0 ? "" : ", ", r.tp(), r.act().id(),
            r.engineRowsPerSec(), r.frameRowsPerSec(), r.ratio()));
      }
      sb.append("]}\n");
      Files.writeString(Path.of(json), sb.toString(), StandardCharsets.UTF_8);
    }
  }

  /** Row {@code i} of the input: Gaussian values from a seed of its own. */
  static float[] row(long i, int width) {
    Random r = new Random(1_000_003L * i + 7);
    float[] v = new float[width];
    for (int j = 0; j < width; j++) {
      v[j] = (float) r.nextGaussian();
    }
    return v;
  }

  /** {@code gelu(x W1^T + b1) W2^T + b2}, weights drawn from {@code rng} (fc1's weight, its bias, then fc2's). */
  static LayerModel mlp(Random rng, int in, int hidden, int out) {
    float[] w1 = uniform(rng, hidden * in, in);
    float[] b1 = uniform(rng, hidden, in);
    float[] w2 = uniform(rng, out * hidden, hidden);
    float[] b2 = uniform(rng, out, hidden);
    return LayerModel.builder(in).linear("fc1", hidden, w1, b1).activation(Activation.GELU)
        .linear("fc2", out, w2, b2).build();
  }

  private static float[] uniform(Random rng, int n, int fanIn) {
    float[] a = new float[n];
    double s = 1 / Math.sqrt(fanIn);
    for (int i = 0; i < n; i++) {
      a[i] = (float) ((rng.nextDouble() * 2 - 1) * s);
    }
    return a;
  }

  static String kernel(DType dtype) {
    try (CpuBackend be = (CpuBackend) Backends.create("cpu", Map.of(), -1)) {
      return be.kernel(dtype);
    }
  }

  /** Seconds for the engine to stream every row, rank r taking rows r, r + tp, ... as its own partition. */
  static double runEngine(LayerModel spec, float[][] x, int tp, int batch, DType dtype) {
    return runEngine(spec, x, tp, batch, dtype, DType.F32);
  }

  /** {@link #runEngine(LayerModel, float[][], int, int, DType)} with the activations between ops stored as {@code act}. */
  static double runEngine(LayerModel spec, float[][] x, int tp, int batch, DType dtype, DType act) {
    Plan plan = Plan.build(spec.graph(), tp);
    WeightSource src = spec.weights();
    RankWeights[] shards = new RankWeights[tp];
    for (int r = 0; r < tp; r++) {
      shards[r] = plan.shard(src, r);
    }
    int in = spec.inputDim();
    long[] nanos = new long[1];
    LocalCommunicator.run(tp, 600_000, rank -> comm -> {
      List<float[]> mine = new ArrayList<>();
      for (int i = rank; i < x.length; i += tp) {
        mine.add(x[i]);
      }
      try (CpuBackend be = (CpuBackend) Backends.create("cpu", Map.of(TpConf.BATCH_SIZE, "" + batch), -1);
          RankModel m = new RankModel(plan, rank, be, shards[rank], dtype)) {
        TpRunner runner = new TpRunner(m, comm).activationDtype(act);
        comm.barrier();
        long t0 = System.nanoTime();
        float[] buf = new float[batch * in];
        int pos = 0;
        while (true) {
          int n = Math.min(batch, mine.size() - pos);
          for (int i = 0; i < n; i++) {
            System.arraycopy(mine.get(pos + i), 0, buf, i * in, in);
          }
          pos += n;
          if (runner.step(InputBatch.dense(buf, n, in)) == null) {
            break;
          }
        }
        comm.barrier();
        if (rank == 0) {
          nanos[0] = System.nanoTime() - t0;
        }
      }
      return null;
    });
    return nanos[0] / 1e9;
  }

  /** Seconds for transform + a no-op write of the whole DataFrame. */
  private static double runFrame(TensorParallelModel model, Dataset<Row> df) {
    long t0 = System.nanoTime();
    model.transform(df).write().format("noop").mode("overwrite").save();
    return (System.nanoTime() - t0) / 1e9;
  }

  private static double median(double[] v) {
    double[] s = v.clone();
    Arrays.sort(s);
    return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  }
}
