package org.sparktp.bench;

import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.SplittableRandom;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.spark.TensorParallelModel;

/**
 * A 1B-class model with the defaults: a Llama-3.2-1B-shaped checkpoint (hidden 2048, 16 layers, 32 heads, 8 KV heads,
 * intermediate 8192, vocabulary 128256, tied embeddings, bf16: 1.24 B parameters, 2.5 GB) with random weights, written
 * once (streamed, never whole in memory) under {@code --dir}, then run on Spark with spark-tp's defaults at {@code --tp}
 * (default 2, on {@code local[2]}: both ranks in this JVM): task score on {@code --rows} rows of {@code --prompt-len}
 * random ids twice (the first loads the ranks' shards: load time = first - second), then, the score models released
 * from the shard cache, task generate of {@code --new-tokens} tokens per row (greedy; its load included). Reports load time, score and generate tokens/s, and the peak RSS
 * ({@code VmHWM}) of each JVM that ran ranks (local master: the driver, holding every rank; local-cluster: one
 * executor per rank) with the ranks it held.
 *
 * <pre>
 * bin/spark-tp bench large [--dir /tmp/spark-tp-llama-1b] [--layers 16] [--hidden 2048] [--heads 32] [--kv-heads 8]
 *     [--ffn 8192] [--vocab 128256] [--tp 2] [--master local[2]] [--rows 16] [--prompt-len 128] [--new-tokens 32]
 *     [--json FILE]
 * </pre>
 */
public final class LargeModelBench {
  private LargeModelBench() {}

  public static void main(String[] args) throws Exception {
    Map<String, String> f = new LinkedHashMap<>(Map.of("dir", "/tmp/spark-tp-llama-1b", "layers", "16", "hidden", "2048",
        "heads", "32", "kv-heads", "8", "ffn", "8192", "vocab", "128256", "tp", "2", "rows", "16", "prompt-len", "128"));
    f.put("new-tokens", "32");
    f.put("master", null);
    f.put("json", null);
    for (int i = 0; i < args.length; i += 2) {
      String k = args[i].startsWith("--") ? args[i].substring(2) : args[i];
      if (!f.containsKey(k) || i + 1 >= args.length) {
        throw new IllegalArgumentException("bench large: unknown flag or missing value: " + args[i] + "; flags: "
            + f.keySet());
      }
      f.put(k, args[i + 1]);
    }
    int tp = Integer.parseInt(f.get("tp"));
    int hidden = Integer.parseInt(f.get("hidden"));
    int vocab = Integer.parseInt(f.get("vocab"));
    Path dir = Path.of(f.get("dir"));
    long t0 = System.nanoTime();
    long params = writeCheckpoint(dir, Integer.parseInt(f.get("layers")), hidden, Integer.parseInt(f.get("heads")),
        Integer.parseInt(f.get("kv-heads")), Integer.parseInt(f.get("ffn")), vocab);
    double writeS = (System.nanoTime() - t0) / 1e9;
    String master = f.get("master") != null ? f.get("master") : "local[" + tp + "]";
    SparkSession spark = SparkSession.builder().master(master).appName("spark-tp bench large")
        .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1").getOrCreate();
    try {
      int rows = Integer.parseInt(f.get("rows"));
      int len = Integer.parseInt(f.get("prompt-len"));
      int newTokens = Integer.parseInt(f.get("new-tokens"));
      List<Row> data = new ArrayList<>();
      SplittableRandom rnd = new SplittableRandom(7);
      for (int r = 0; r < rows; r++) {
        int[] ids = new int[len];
        for (int i = 0; i < len; i++) {
          ids[i] = rnd.nextInt(vocab);
        }
        data.add(RowFactory.create(r, ids));
      }
      Dataset<Row> df = spark.createDataFrame(data, new StructType().add("id", DataTypes.IntegerType)
          .add("ids", DataTypes.createArrayType(DataTypes.IntegerType, false))).repartition(tp).cache();
      df.count();
      TensorParallelModel score = TensorParallelModel.fromDirectory(dir.toString()).setInputCol("ids").setTpSize(tp)
          .setGroups(1).setTask("score");
      System.out.printf(Locale.ROOT, "model: llama shape, %.2f B parameters (bf16, %.2f GB), %s; written in %.1f s%n",
          params / 1e9, 2.0 * params / 1e9, dir, writeS);
      System.out.printf(Locale.ROOT, "spark: %s, tp %d, spark-tp defaults (org.bytedeco.javacpp.maxBytes=%d, max heap"
          + " %d)%n", master, tp, org.bytedeco.javacpp.Pointer.maxBytes(), Runtime.getRuntime().maxMemory());
      double first = time(() -> score.transform(df).count());
      double second = time(() -> score.transform(df).count());
      System.out.printf(Locale.ROOT, "score %d x %d tokens: first job %.1f s (loads the shards), second %.1f s: load ~"
          + " %.1f s; %.0f tokens/s; peak RSS so far %s%n", rows, len, first, second, first - second,
          rows * (double) len / second, peakRss(spark));
      // the score ranks' models stay in the shard cache (another plan than generate's): free them first, or the
      // generate job's load would hold a second copy of the weights next to them
      score.release();
      TensorParallelModel gen = TensorParallelModel.fromDirectory(dir.toString()).setInputCol("ids").setTpSize(tp)
          .setGroups(1).setTask("generate").setMaxNewTokens(newTokens);
      double genS = time(() -> gen.transform(df).count());
      System.out.printf(Locale.ROOT, "generate %d rows x %d new tokens (prompts %d): %.1f s, %.1f new tokens/s%n", rows,
          newTokens, len, genS, rows * (double) newTokens / genS);
      Map<String, Long> rss = peakRss(spark);
      for (Map.Entry<String, Long> e : rss.entrySet()) {
        System.out.printf(Locale.ROOT, "peak RSS %s: %.2f GiB%n", e.getKey(), e.getValue() / (double) (1L << 30));
      }
      if (f.get("json") != null) {
        StringBuilder j = new StringBuilder(String.format(Locale.ROOT, "{\"params\": %d, \"tp\": %d, \"master\": \"%s\","
            + " \"rows\": %d, \"prompt_len\": %d, \"new_tokens\": %d, \"score_first_s\": %.3f, \"score_second_s\": %.3f,"
            + " \"load_s\": %.3f, \"generate_s\": %.3f, \"peak_rss\": {", params, tp, master, rows, len, newTokens, first,
            second, first - second, genS));
        String sep = "";
        for (Map.Entry<String, Long> e : rss.entrySet()) {
          j.append(sep).append('"').append(e.getKey()).append("\": ").append(e.getValue());
          sep = ", ";
        }
        Files.writeString(Path.of(f.get("json")), j.append("}}\n").toString());
      }
    } finally {
      spark.stop();
    }
  }

  private static double time(Runnable r) {
    long t = System.nanoTime();
    r.run();
    return (System.nanoTime() - t) / 1e9;
  }

  /** VmHWM of each JVM that runs tasks: the driver with a local master, else each executor (one task per slot). */
  static Map<String, Long> peakRss(SparkSession spark) {
    Map<String, Long> out = new LinkedHashMap<>();
    if (spark.sparkContext().isLocal()) {
      out.put("driver JVM (every rank of local mode)", vmHwm());
      return out;
    }
    int n = Math.max(1, spark.sparkContext().statusTracker().getExecutorInfos().length - 1);
    List<Integer> parts = new ArrayList<>();
    for (int i = 0; i < 4 * n; i++) {
      parts.add(i);
    }
    for (String s : org.apache.spark.api.java.JavaSparkContext.fromSparkContext(spark.sparkContext())
        .parallelize(parts, 4 * n).map(i -> "executor " + org.apache.spark.SparkEnv.get().executorId() + "=" + vmHwm())
        .distinct().collect()) {
      int eq = s.lastIndexOf('=');
      out.put(s.substring(0, eq), Long.parseLong(s.substring(eq + 1)));
    }
    return out;
  }

  /** This process's peak resident set ({@code VmHWM} of /proc/self/status), or -1. */
  static long vmHwm() {
    try {
      for (String l : Files.readAllLines(Path.of("/proc/self/status"))) {
        if (l.startsWith("VmHWM:")) {
          return Long.parseLong(l.replaceAll("[^0-9]", "")) * 1024;
        }
      }
    } catch (IOException e) {
      return -1;
    }
    return -1;
  }

  /**
   * Writes {@code dir}/config.json and model.safetensors (bf16, tied embeddings) unless the file is there; returns the
   * parameter count. Linear weights and the table uniform with std 0.02, norm weights 1.
   */
  static long writeCheckpoint(Path dir, int layers, int hidden, int heads, int kvHeads, int ffn, int vocab)
      throws IOException {
    Files.createDirectories(dir);
    int hd = hidden / heads;
    Files.writeString(dir.resolve("config.json"), String.format(Locale.ROOT, "{\"architectures\": "
        + "[\"LlamaForCausalLM\"], \"model_type\": \"llama\", \"hidden_size\": %d, \"intermediate_size\": %d, "
        + "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, \"num_hidden_layers\": %d, "
        + "\"vocab_size\": %d, \"max_position_embeddings\": 8192, \"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, "
        + "\"tie_word_embeddings\": true, \"hidden_act\": \"silu\", \"bos_token_id\": 1, \"eos_token_id\": 2, "
        + "\"torch_dtype\": \"bfloat16\"}", hidden, ffn, heads, kvHeads, hd, layers, vocab), StandardCharsets.UTF_8);
    Map<String, long[]> shapes = new LinkedHashMap<>();
    shapes.put("model.embed_tokens.weight", new long[] {vocab, hidden});
    for (int l = 0; l < layers; l++) {
      String p = "model.layers." + l + ".";
      shapes.put(p + "input_layernorm.weight", new long[] {hidden});
      shapes.put(p + "self_attn.q_proj.weight", new long[] {(long) heads * hd, hidden});
      shapes.put(p + "self_attn.k_proj.weight", new long[] {(long) kvHeads * hd, hidden});
      shapes.put(p + "self_attn.v_proj.weight", new long[] {(long) kvHeads * hd, hidden});
      shapes.put(p + "self_attn.o_proj.weight", new long[] {hidden, (long) heads * hd});
      shapes.put(p + "post_attention_layernorm.weight", new long[] {hidden});
      shapes.put(p + "mlp.gate_proj.weight", new long[] {ffn, hidden});
      shapes.put(p + "mlp.up_proj.weight", new long[] {ffn, hidden});
      shapes.put(p + "mlp.down_proj.weight", new long[] {hidden, ffn});
    }
    shapes.put("model.norm.weight", new long[] {hidden});
    long params = 0;
    StringBuilder header = new StringBuilder("{\"__metadata__\": {\"format\": \"pt\"}");
    for (Map.Entry<String, long[]> e : shapes.entrySet()) {
      long n = e.getValue().length == 1 ? e.getValue()[0] : e.getValue()[0] * e.getValue()[1];
      header.append(String.format(Locale.ROOT, ", \"%s\": {\"dtype\": \"BF16\", \"shape\": %s, \"data_offsets\": [%d, %d]}",
          e.getKey(), java.util.Arrays.toString(e.getValue()), 2 * params, 2 * (params + n)));
      params += n;
    }
    header.append('}');
    Path st = dir.resolve("model.safetensors");
    if (Files.exists(st) && Files.size(st) > 2 * params) {
      return params; // written before with this shape (the header is part of the size)
    }
    while ((header.length() + 8) % 8 != 0) {
      header.append(' ');
    }
    byte[] h = header.toString().getBytes(StandardCharsets.UTF_8);
    Path tmp = dir.resolve("model.safetensors.tmp");
    SplittableRandom rnd = new SplittableRandom(42);
    try (OutputStream out = new BufferedOutputStream(Files.newOutputStream(tmp), 1 << 20)) {
      byte[] len = new byte[8];
      for (int i = 0; i < 8; i++) {
        len[i] = (byte) ((long) h.length >>> (8 * i));
      }
      out.write(len);
      out.write(h);
      byte[] buf = new byte[1 << 16];
      float half = (float) (0.02 * Math.sqrt(3));
      for (Map.Entry<String, long[]> e : shapes.entrySet()) {
        boolean norm = e.getValue().length == 1;
        long n = norm ? e.getValue()[0] : e.getValue()[0] * e.getValue()[1];
        for (long done = 0; done < n; ) {
          int m = (int) Math.min(buf.length / 2, n - done);
          for (int i = 0; i < m; i++) {
            float v = norm ? 1f : (float) ((rnd.nextDouble() * 2 - 1) * half);
            int bits = Float.floatToRawIntBits(v) >>> 16; // bf16: the high half (truncated)
            buf[2 * i] = (byte) bits;
            buf[2 * i + 1] = (byte) (bits >>> 8);
          }
          out.write(buf, 0, 2 * m);
          done += m;
        }
      }
    }
    Files.move(tmp, st, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
    return params;
  }
}
