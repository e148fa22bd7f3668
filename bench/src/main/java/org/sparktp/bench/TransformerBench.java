package org.sparktp.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.TpConf;
import org.sparktp.backend.Backends;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.model.SafetensorsWriter;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.run.TpRunner;
import org.sparktp.spark.TensorParallelModel;

/**
 * Tokens per second of a BERT-base-shaped encoder (random weights written as a Hugging Face directory:
 * hidden 768, 12 heads, 12 layers, FFN 3072, sequences of 128 tokens, task {@code embed}): the engine
 * alone ({@link TpRunner} over in-process ranks) and {@link TensorParallelModel#transform} on a
 * cached DataFrame written to the no-op sink, for each tp size, with the share of the engine's compute
 * spent in attention cores; next to the same model in PyTorch ({@code tools/peer_transformer.py}, one
 * process, the same thread count) when {@code /usr/bin/python3} has torch. Each figure is the median of
 * {@code --repeats} timed runs after a warm-up. {@code --dtype} (default f32) is the storage dtype of spark-tp's
 * linears and embedding tables (GEMMs accumulate in f32; the kernel is printed) and the dtype the PyTorch peer
 * runs in (torch bf16 on the CPU: weights and activations bfloat16). The ONNX Runtime peer ({@link OrtPeer}, Java,
 * in this process, {@code --threads} intra-op threads) runs the same shape exported by {@code
 * tools/export_onnx_peers.py --model bert}, f32 and ORT's dynamic int8, on the same ids in the same batches
 * ({@code --no-ort} leaves it out; {@code --onnx-dir} keeps the exports between runs).
 *
 * <pre>
 * TransformerBench [--threads 2] [--tp 1,2] [--rows 32] [--seq 128] [--batch 8] [--layers 12] [--hidden 768]
 *                  [--heads 12] [--ffn 3072] [--vocab 30522] [--repeats 3] [--master local[2]]
 *                  [--peer tools/peer_transformer.py] [--no-frame] [--json FILE] [--dtype f32|bf16]
 *                  [--no-ort] [--onnx-dir DIR] [--python /usr/bin/python3] [--gemm auto|openblas|onednn]
 * </pre>
 */
public final class TransformerBench {
  private TransformerBench() {}

  record Result(String impl, int tp, double tokensPerSec, double attentionShare) {}

  public static void main(String[] args) throws Exception {
    int threads = 2;
    int[] tps = {1, 2};
    int rows = 32;
    int seq = 128;
    int batch = 8;
    int layers = 12;
    int hidden = 768;
    int heads = 12;
    int ffn = 3072;
    int vocab = 30522;
    int repeats = 3;
    String master = "local[2]";
    String peer = "tools/peer_transformer.py";
    boolean frame = true;
    boolean ort = true;
    String gemm = TpConf.CPU_GEMM_DEFAULT; // spark.tp.cpu.gemm of the engine's backends
    Path onnxDir = Path.of(System.getProperty("java.io.tmpdir"), "spark-tp-onnx");
    String python = "/usr/bin/python3";
    String json = null;
    org.sparktp.tensor.DType dtype = org.sparktp.tensor.DType.F32;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--no-frame")) {
        frame = false;
        continue;
      }
      if (a.equals("--no-ort")) {
        ort = false;
        continue;
      }
      String v = i + 1 < args.length ? args[++i] : null;
      if (v == null) {
        throw new IllegalArgumentException("Flag " + a + " needs a value; see the class Javadoc");
      }
      switch (a) {
        case "--threads" -> threads = Integer.parseInt(v);
        case "--tp" -> tps = Arrays.stream(v.split(",")).mapToInt(Integer::parseInt).toArray();
        case "--rows" -> rows = Integer.parseInt(v);
        case "--seq" -> seq = Integer.parseInt(v);
        case "--batch" -> batch = Integer.parseInt(v);
        case "--layers" -> layers = Integer.parseInt(v);
        case "--hidden" -> hidden = Integer.parseInt(v);
        case "--heads" -> heads = Integer.parseInt(v);
        case "--ffn" -> ffn = Integer.parseInt(v);
        case "--vocab" -> vocab = Integer.parseInt(v);
        case "--repeats" -> repeats = Integer.parseInt(v);
        case "--master" -> master = v;
        case "--peer" -> peer = v;
        case "--json" -> json = v;
        case "--onnx-dir" -> onnxDir = Path.of(v);
        case "--python" -> python = v;
        case "--gemm" -> gemm = CpuBackend.checkGemm(v);
        case "--dtype" -> dtype = org.sparktp.tensor.DType.parseStorage(v, "--dtype");
        default -> throw new IllegalArgumentException("Unknown argument '" + a + "'; see the class Javadoc");
      }
    }
    Path dir = Files.createTempDirectory("spark-tp-bench-bert");
    List<Result> results = new ArrayList<>();
    String kernel = "-";
    try {
      writeBert(dir, layers, hidden, heads, ffn, vocab, seq);
      int[][] inputs = new int[rows][seq];
      Random rng = new Random(7);
      for (int[] r : inputs) {
        for (int j = 0; j < seq; j++) {
          r[j] = rng.nextInt(vocab);
        }
      }
      try (HfModel hf = HfModel.open(dir.toString())) {
        for (int tp : tps) {
          Plan plan = TransformerGraph.plan(hf.model(), tp, Task.EMBED, null, false, false);
          RankWeights[] shards = new RankWeights[tp];
          for (int r = 0; r < tp; r++) {
            shards[r] = plan.shard(hf.weightSource(), r);
          }
          int blas = Math.max(1, threads / tp);
          double[] tokens = new double[repeats];
          double[] share = new double[repeats];
          kernel = runEngine(plan, shards, inputs, batch, blas, gemm, new double[1], dtype, new double[1]);
          for (int i = 0; i < repeats; i++) {
            double[] att = new double[1];
            double[] secs = new double[1];
            runEngine(plan, shards, inputs, batch, blas, gemm, att, dtype, secs);
            tokens[i] = (double) rows * seq / secs[0];
            share[i] = att[0];
          }
          results.add(new Result("spark-tp engine", tp, median(tokens), median(share)));
        }
      }
      if (frame) {
        SparkSession spark = SparkSession.builder().master(master).appName("spark-tp transformer bench")
            .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
            .config("spark.sql.shuffle.partitions", "2").getOrCreate();
        try {
          StructType schema = new StructType().add("id", DataTypes.IntegerType)
              .add("ids", DataTypes.createArrayType(DataTypes.IntegerType, false));
          List<Row> data = new ArrayList<>();
          for (int i = 0; i < rows; i++) {
            data.add(RowFactory.create(i, Arrays.stream(inputs[i]).boxed().toArray(Integer[]::new)));
          }
          Dataset<Row> df = spark.createDataFrame(data, schema).repartition(2).cache();
          df.count();
          for (int tp : tps) {
            TensorParallelModel m = TensorParallelModel.fromDirectory(dir.toString()).setInputCol("ids")
                .setOutputCol("emb").setTpSize(tp).setGroups(1).setBatchSize(batch).setTask("embed")
                .setConf("spark.tp.cpu.blas-threads", String.valueOf(Math.max(1, threads / tp)))
                .setDtype(dtype.id());
            double[] tokens = new double[repeats];
            m.transform(df).write().format("noop").mode("overwrite").save();
            for (int i = 0; i < repeats; i++) {
              long t0 = System.nanoTime();
              m.transform(df).write().format("noop").mode("overwrite").save();
              tokens[i] = (double) rows * seq / ((System.nanoTime() - t0) / 1e9);
            }
            results.add(new Result("spark-tp DataFrame", tp, median(tokens), Double.NaN));
          }
        } finally {
          spark.stop();
        }
      }
      if (ort) {
        results.addAll(ort(python, onnxDir, inputs, threads, batch, seq, layers, hidden, heads, ffn, vocab, repeats));
      }
      results.addAll(peer(peer, threads, batch, seq, layers, hidden, heads, ffn, vocab, repeats,
          dtype == org.sparktp.tensor.DType.F32 ? "fp32" : dtype.id()));
    } finally {
      for (File f : dir.toFile().listFiles()) {
        f.delete();
      }
      dir.toFile().delete();
    }
    double base = results.stream().filter(r -> r.impl().startsWith("pytorch eager")).mapToDouble(Result::tokensPerSec)
        .findFirst().orElse(Double.NaN);
    StringBuilder t = new StringBuilder();
    t.append(String.format(Locale.ROOT, "BERT-base shape: %d layers, hidden %d, %d heads, FFN %d, vocab %d; %d rows of "
        + "%d tokens, batch %d, %d threads, median of %d%ndtype %s (spark-tp linears and embedding tables; PyTorch "
        + "weights and activations), spark-tp kernel %s%n", layers, hidden, heads, ffn, vocab, rows, seq, batch,
        threads, repeats, dtype.id(), kernel));
    t.append(String.format(Locale.ROOT, "%-26s %4s %12s %18s %16s%n", "implementation", "tp", "tokens/s",
        "vs pytorch eager", "attention share"));
    for (Result r : results) {
      t.append(String.format(Locale.ROOT, "%-26s %4s %12.0f %18s %16s%n", r.impl(), r.tp() == 0 ? "-" : r.tp(),
          r.tokensPerSec(), Double.isNaN(base) ? "-" : String.format(Locale.ROOT, "%.2f", r.tokensPerSec() / base),
          Double.isNaN(r.attentionShare()) ? "-" : String.format(Locale.ROOT, "%.1f%%", 100 * r.attentionShare())));
    }
    System.out.print(t);
    if (json != null) {
      StringBuilder sb = new StringBuilder("{\"model\": {\"layers\": " + layers + ", \"hidden\": " + hidden
          + ", \"heads\": " + heads + ", \"ffn\": " + ffn + ", \"vocab\": " + vocab + "}, \"rows\": " + rows
          + ", \"seq\": " + seq + ", \"threads\": " + threads + ", \"dtype\": \"" + dtype.id()
          + "\", \"kernel\": \"" + kernel + "\", \"results\": [");
      for (int i = 0; i < results.size(); i++) {
        Result r = results.get(i);
        sb.append(i == 0 ? "" : ", ").append(String.format(Locale.ROOT,
            "{\"impl\": \"%s\", \"tp\": %d, \"tokens_per_s\": %.1f, \"attention_share\": %s}", r.impl(), r.tp(),
            r.tokensPerSec(), Double.isNaN(r.attentionShare()) ? "null" : String.format(Locale.ROOT, "%.4f",
                r.attentionShare())));
      }
      sb.append("]}\n");
      Files.writeString(Path.of(json), sb.toString(), StandardCharsets.UTF_8);
    }
  }

  /**
   * The ONNX Runtime rows: f32 and dynamic int8 sessions ({@code threads} intra-op threads) over the exported BERT
   * of this shape, every row of {@code inputs} in batches of {@code batch}, one untimed pass and then
   * {@code repeats} timed ones (medians).
   */
  static List<Result> ort(String python, Path onnxDir, int[][] inputs, int threads, int batch, int seq, int layers,
      int hidden, int heads, int ffn, int vocab, int repeats) throws Exception {
    Path[] models = OrtPeer.export(python, onnxDir, "--model", "bert", "--layers", "" + layers, "--hidden",
        "" + hidden, "--heads", "" + heads, "--bert-ffn", "" + ffn, "--vocab", "" + vocab, "--seq", "" + seq);
    List<Result> out = new ArrayList<>();
    String[] names = {"onnxruntime f32", "onnxruntime int8 (dyn.)"};
    for (int mi = 0; mi < 2; mi++) {
      Path model = models[mi];
      double tps = OrtPeer.onBigStack(() -> {
        double[] tokens = new double[repeats];
        try (OrtPeer o = new OrtPeer(model, threads)) {
          for (int rep = -1; rep < repeats; rep++) {
            double secs = 0;
            for (int pos = 0; pos < inputs.length; pos += batch) {
              int n = Math.min(batch, inputs.length - pos);
              long[] ids = new long[n * seq];
              for (int i = 0; i < n * seq; i++) {
                ids[i] = inputs[pos + i / seq][i % seq];
              }
              secs += o.runIds(ids, n, seq);
            }
            if (rep >= 0) {
              tokens[rep] = (double) inputs.length * seq / secs;
            }
          }
        }
        return median(tokens);
      });
      out.add(new Result(names[mi], 0, tps, Double.NaN));
      System.err.printf(Locale.ROOT, "%s: %.0f tokens/s%n", names[mi], tps);
    }
    return out;
  }

  /**
   * Seconds for every row through the engine ({@code secs[0]}); rank r brings rows r, r + tp, ...; att[0] =
   * attention share; returns rank 0's kernel.
   */
  static String runEngine(Plan plan, RankWeights[] shards, int[][] inputs, int batch, int blas, String gemm,
      double[] att, org.sparktp.tensor.DType dtype, double[] secs) {
    String[] kernel = {"-"};
    int tp = plan.tpSize();
    long[] nanos = new long[1];
    long[] attention = new long[tp];
    long[] compute = new long[tp];
    LocalCommunicator.run(tp, 600_000, rank -> comm -> {
      List<int[]> mine = new ArrayList<>();
      for (int i = rank; i < inputs.length; i += tp) {
        mine.add(inputs[i]);
      }
      try (CpuBackend be = (CpuBackend) Backends.create("cpu", java.util.Map.of(TpConf.CPU_THREADS, "" + blas,
          TpConf.CPU_GEMM, gemm), -1);
          RankModel m = new RankModel(plan, rank, be, shards[rank], dtype)) {
        if (rank == 0) {
          kernel[0] = m.kernel();
        }
        TpRunner runner = new TpRunner(m, comm);
        comm.barrier();
        long t0 = System.nanoTime();
        int pos = 0;
        while (true) {
          int n = Math.min(batch, mine.size() - pos);
          int total = 0;
          for (int i = 0; i < n; i++) {
            total += mine.get(pos + i).length;
          }
          int[] ids = new int[total];
          int[] off = new int[n + 1];
          for (int i = 0; i < n; i++) {
            int[] r = mine.get(pos + i);
            System.arraycopy(r, 0, ids, off[i], r.length);
            off[i + 1] = off[i] + r.length;
          }
          pos += n;
          if (runner.step(InputBatch.bags(ids, off, n)) == null) {
            break;
          }
        }
        if (rank == 0) {
          nanos[0] = System.nanoTime() - t0;
        }
        attention[rank] = runner.attentionNanos();
        compute[rank] = runner.computeNanos();
      }
      return null;
    });
    att[0] = (double) attention[0] / Math.max(1, compute[0]);
    secs[0] = nanos[0] / 1e9;
    return kernel[0];
  }

  /** A random BERT-base-shaped checkpoint in HF's layout (std 0.02, LayerNorm weights 1, biases 0). */
  static void writeBert(Path dir, int layers, int hidden, int heads, int ffn, int vocab, int seq) throws Exception {
    Random rng = new Random(11);
    SafetensorsWriter w = new SafetensorsWriter();
    String p = "bert.";
    w.add(p + "embeddings.word_embeddings.weight", new long[] {vocab, hidden}, normal(rng, vocab * hidden));
    w.add(p + "embeddings.position_embeddings.weight", new long[] {512, hidden}, normal(rng, 512 * hidden));
    w.add(p + "embeddings.token_type_embeddings.weight", new long[] {2, hidden}, normal(rng, 2 * hidden));
    norm(w, p + "embeddings.LayerNorm", hidden);
    for (int i = 0; i < layers; i++) {
      String l = p + "encoder.layer." + i + ".";
      for (String x : new String[] {"attention.self.query", "attention.self.key", "attention.self.value",
          "attention.output.dense"}) {
        linear(w, rng, l + x, hidden, hidden);
      }
      norm(w, l + "attention.output.LayerNorm", hidden);
      linear(w, rng, l + "intermediate.dense", hidden, ffn);
      linear(w, rng, l + "output.dense", ffn, hidden);
      norm(w, l + "output.LayerNorm", hidden);
    }
    w.write(new org.apache.hadoop.fs.Path(dir.resolve("model.safetensors").toString()), new Configuration());
    Files.writeString(dir.resolve("config.json"), String.format(Locale.ROOT, "{\"model_type\": \"bert\", "
        + "\"architectures\": [\"BertModel\"], \"vocab_size\": %d, \"hidden_size\": %d, \"num_hidden_layers\": %d, "
        + "\"num_attention_heads\": %d, \"intermediate_size\": %d, \"hidden_act\": \"gelu\", "
        + "\"max_position_embeddings\": 512, \"type_vocab_size\": 2, \"layer_norm_eps\": 1e-12}", vocab, hidden,
        layers, heads, ffn));
  }

  private static void linear(SafetensorsWriter w, Random rng, String name, int in, int out) {
    w.add(name + ".weight", new long[] {out, in}, normal(rng, out * in));
    w.add(name + ".bias", new long[] {out}, new float[out]);
  }

  private static void norm(SafetensorsWriter w, String name, int n) {
    float[] one = new float[n];
    Arrays.fill(one, 1f);
    w.add(name + ".weight", new long[] {n}, one);
    w.add(name + ".bias", new long[] {n}, new float[n]);
  }

  private static float[] normal(Random rng, int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) (rng.nextGaussian() * 0.02);
    }
    return a;
  }

  /** The PyTorch peer's fp32 results, or none when it cannot run here (said on stderr). */
  static List<Result> peer(String script, int threads, int batch, int seq, int layers, int hidden, int heads, int ffn,
      int vocab, int repeats, String dtypes) {
    List<Result> out = new ArrayList<>();
    if (!new File(script).isFile()) {
      System.err.println("PyTorch peer " + script + " not found: skipped (run from the repository root)");
      return out;
    }
    try {
      Process pr = new ProcessBuilder("/usr/bin/python3", script, "--threads", String.valueOf(threads), "--dtypes",
          dtypes, "--impls", "eager,fastpath", "--batch", String.valueOf(batch), "--seq", String.valueOf(seq),
          "--layers", String.valueOf(layers), "--hidden", String.valueOf(hidden), "--heads", String.valueOf(heads),
          "--ffn", String.valueOf(ffn), "--vocab", String.valueOf(vocab), "--iters", String.valueOf(repeats))
          .redirectError(ProcessBuilder.Redirect.INHERIT).start();
      String text = new String(pr.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      if (pr.waitFor() != 0) {
        System.err.println("PyTorch peer failed (exit " + pr.exitValue() + "): skipped");
        return out;
      }
      JsonNode root = new ObjectMapper().readTree(text.substring(text.indexOf('{')));
      for (JsonNode r : root.get("results")) {
        out.add(new Result("pytorch " + r.get("impl").asText() + " " + r.get("dtype").asText(), 0,
            r.get("tokens_per_s").asDouble(), r.path("attention_fraction").asDouble(Double.NaN)));
      }
    } catch (Exception e) {
      System.err.println("PyTorch peer could not run: " + e + ": skipped");
    }
    return out;
  }

  static double median(double[] v) {
    double[] s = v.clone();
    Arrays.sort(s);
    return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  }
}
