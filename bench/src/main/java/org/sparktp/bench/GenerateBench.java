package org.sparktp.bench;

import java.util.Map;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.SplittableRandom;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.TpConf;
import org.sparktp.backend.Backends;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.model.SafetensorsWriter;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.gen.Completion;
import org.sparktp.nn.gen.GenerateParams;
import org.sparktp.nn.gen.Generator;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.run.RankModel;

/**
 * Decode speed of task generate: a Llama-shaped model with random weights (written once as a Hugging Face
 * checkpoint, float32), {@code --prompts} prompts of {@code --prompt-len} random tokens, greedy, at each tp
 * size in {@code --tp} (in-process ranks, one thread each with {@code --threads 1}), beside a PyTorch
 * greedy loop with a KV cache on the same checkpoint and threads ({@code tools/peer_generate.py}). Each run
 * generates 1 token (prefill; after one untimed warm-up of it) and then {@code --new-tokens} tokens; the
 * decode time is the difference, so
 * time per output token = decode time / (new tokens - 1) (one step gives every row a token) and decode
 * tokens/s = prompts x (new tokens - 1) / decode time. The communication share is rank 0's time inside
 * collectives (including waiting for the other ranks) over the decode time.
 *
 * <pre>
 * bin/spark-tp bench generate [--hidden 2048] [--heads 16] [--kv-heads 4] [--layers 8] [--ffn 5632]
 *     [--vocab 32000] [--prompts 64] [--prompt-len 128] [--new-tokens 64] [--tp 1,2] [--threads 1]
 *     [--repeats 1] [--peer tools/peer_generate.py|none] [--python /usr/bin/python3] [--dir DIR] [--json FILE]
 *     [--dtype f32|bf16] [--shared-prefix 0]
 * </pre>
 *
 * <p>{@code --shared-prefix N} (issue 21): every prompt starts with the same N random tokens, then its own
 * {@code --prompt-len} tokens; spark-tp's prefill (the 1-token run) is also timed with prefix sharing off
 * ({@code spark.tp.generate.prefix-sharing=false}), and the table gives both times, their ratio and whether the
 * two runs drew the same first tokens. E.g. {@code --shared-prefix 512 --prompt-len 64 --prompts 64}.
 *
 * <p>{@code --dtype bf16}: spark-tp stores its linears and embedding tables in bf16 (KV cache, norms and
 * sampling f32), the peer runs its weights, activations and KV cache in torch bf16.
 */
public final class GenerateBench {
  private GenerateBench() {}

  /**
   * {@code prefillUnsharedS}: the prefill with prefix sharing off (NaN when not measured); {@code sameFirstTokens}:
   * whether that run drew the same first token for every row as the run with sharing.
   */
  record Result(String impl, int tp, double prefillS, double decodeS, double tpotMs, double tokensPerS,
      double commShare, int[][] tokens, double prefillUnsharedS, boolean sameFirstTokens) {}

  public static void main(String[] args) throws Exception {
    int hidden = 2048;
    int heads = 16;
    int kvHeads = 4;
    int layers = 8;
    int ffn = 5632;
    int vocab = 32000;
    int prompts = 64;
    int promptLen = 128;
    int newTokens = 64;
    int[] tps = {1, 2};
    int threads = 1;
    int repeats = 1;
    String peer = "tools/peer_generate.py";
    String python = "/usr/bin/python3";
    String dir = null;
    String json = null;
    org.sparktp.tensor.DType dtype = org.sparktp.tensor.DType.F32;
    int sharedPrefix = 0;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (i + 1 >= args.length) {
        throw new IllegalArgumentException("Flag " + a + " needs a value");
      }
      String v = args[++i];
      switch (a) {
        case "--hidden" -> hidden = Integer.parseInt(v);
        case "--heads" -> heads = Integer.parseInt(v);
        case "--kv-heads" -> kvHeads = Integer.parseInt(v);
        case "--layers" -> layers = Integer.parseInt(v);
        case "--ffn" -> ffn = Integer.parseInt(v);
        case "--vocab" -> vocab = Integer.parseInt(v);
        case "--prompts" -> prompts = Integer.parseInt(v);
        case "--prompt-len" -> promptLen = Integer.parseInt(v);
        case "--new-tokens" -> newTokens = Integer.parseInt(v);
        case "--tp" -> tps = Arrays.stream(v.split(",")).mapToInt(s -> Integer.parseInt(s.trim())).toArray();
        case "--threads" -> threads = Integer.parseInt(v);
        case "--repeats" -> repeats = Integer.parseInt(v);
        case "--peer" -> peer = v;
        case "--python" -> python = v;
        case "--dir" -> dir = v;
        case "--json" -> json = v;
        case "--dtype" -> dtype = org.sparktp.tensor.DType.parseStorage(v, "--dtype");
        case "--shared-prefix" -> sharedPrefix = Integer.parseInt(v);
        default -> throw new IllegalArgumentException("Unknown flag " + a + "; use --hidden, --heads, --kv-heads, "
            + "--layers, --ffn, --vocab, --prompts, --prompt-len, --new-tokens, --tp, --threads, --repeats, --peer, "
            + "--python, --dir, --json, --dtype, --shared-prefix");
      }
    }
    if (sharedPrefix < 0) {
      throw new IllegalArgumentException("--shared-prefix must be >= 0 (0: every prompt its own), got " + sharedPrefix);
    }
    if (newTokens < 2) {
      throw new IllegalArgumentException("--new-tokens must be at least 2 (decode time is the time after the first)");
    }
    Path model = dir != null ? Path.of(dir) : Files.createTempDirectory("spark-tp-genbench");
    long t0 = System.nanoTime();
    writeModel(model, hidden, heads, kvHeads, layers, ffn, vocab, sharedPrefix + promptLen + newTokens);
    System.err.printf(Locale.ROOT, "wrote a random llama checkpoint (%d layers, hidden %d) to %s in %.1f s%n", layers,
        hidden, model, (System.nanoTime() - t0) / 1e9);
    List<int[]> rows = prompts(prompts, sharedPrefix, promptLen, vocab);
    Path promptFile = model.resolve("prompts.txt");
    StringBuilder sb = new StringBuilder();
    for (int[] p : rows) {
      sb.append(Arrays.toString(p).replaceAll("[\\[\\],]", "")).append('\n');
    }
    Files.writeString(promptFile, sb.toString());

    List<Result> results = new ArrayList<>();
    for (int rep = 0; rep < repeats; rep++) {
      for (int tp : tps) {
        results.add(runTp(model, tp, threads, rows, newTokens, dtype, sharedPrefix > 0));
        print(results.get(results.size() - 1));
      }
      if (!peer.equals("none")) {
        Result r = runPeer(python, peer, model, promptFile, threads, newTokens, dtype);
        results.add(r);
        print(r);
      }
    }
    StringBuilder table = new StringBuilder();
    table.append(String.format(Locale.ROOT, "%nGenerate benchmark: llama hidden %d, %d heads (%d kv), %d layers, ffn %d, "
        + "vocab %d; %d prompts x %s%d tokens, %d new tokens, greedy, %s weights, %d thread(s) per rank%n", hidden, heads,
        kvHeads, layers, ffn, vocab, prompts, sharedPrefix > 0 ? "(a shared " + sharedPrefix + " + own) " : "",
        promptLen, newTokens, dtype.id(), threads));
    table.append(String.format(Locale.ROOT, "%-10s %3s %10s %10s %10s %12s %8s %s%n", "impl", "tp", "prefill s",
        "decode s", "TPOT ms", "decode tok/s", "comm %", "same tokens as spark-tp tp1"));
    int[][] base = null;
    for (Result r : results) {
      if (r.impl().equals("spark-tp") && r.tp() == tps[0]) {
        base = r.tokens();
      }
    }
    for (Result r : results) {
      table.append(String.format(Locale.ROOT, "%-10s %3s %10.2f %10.2f %10.1f %12.1f %8s %s%n", r.impl(),
          r.tp() == 0 ? "-" : Integer.toString(r.tp()), r.prefillS(), r.decodeS(), r.tpotMs(), r.tokensPerS(),
          Double.isNaN(r.commShare()) ? "-" : String.format(Locale.ROOT, "%.1f", 100 * r.commShare()),
          agreement(base, r.tokens())));
    }
    for (Result r : results) {
      if (!Double.isNaN(r.prefillUnsharedS())) {
        table.append(String.format(Locale.ROOT, "spark-tp tp=%d prefill: %.2f s without prefix sharing, %.2f s with "
            + "(%.2fx), same first tokens: %s%n", r.tp(), r.prefillUnsharedS(), r.prefillS(),
            r.prefillUnsharedS() / r.prefillS(), r.sameFirstTokens() ? "yes" : "NO"));
      }
    }
    System.out.print(table);
    if (json != null) {
      StringBuilder j = new StringBuilder("{\"benchmark\": \"generate\", \"model\": {");
      j.append(String.format(Locale.ROOT, "\"hidden\": %d, \"heads\": %d, \"kv_heads\": %d, \"layers\": %d, \"ffn\": %d, "
          + "\"vocab\": %d}, \"prompts\": %d, \"prompt_len\": %d, \"shared_prefix\": %d, \"new_tokens\": %d, "
          + "\"threads\": %d, \"dtype\": \"%s\", \"results\": [", hidden, heads, kvHeads, layers, ffn, vocab, prompts,
          promptLen, sharedPrefix, newTokens, threads, dtype.id()));
      for (int i = 0; i < results.size(); i++) {
        Result r = results.get(i);
        j.append(i == 0 ? "" : ", ").append(String.format(Locale.ROOT, "{\"impl\": \"%s\", \"tp\": %d, "
            + "\"prefill_s\": %.4f, \"decode_s\": %.4f, \"tpot_ms\": %.3f, \"decode_tokens_per_s\": %.2f, "
            + "\"comm_share\": %s, \"same_tokens_as_tp1\": \"%s\", \"prefill_unshared_s\": %s, "
            + "\"same_first_tokens_unshared\": %s}", r.impl(), r.tp(), r.prefillS(), r.decodeS(),
            r.tpotMs(), r.tokensPerS(), Double.isNaN(r.commShare()) ? "null" : String.format(Locale.ROOT, "%.4f",
                r.commShare()), agreement(base, r.tokens()), Double.isNaN(r.prefillUnsharedS()) ? "null"
                : String.format(Locale.ROOT, "%.4f", r.prefillUnsharedS()),
            Double.isNaN(r.prefillUnsharedS()) ? "null" : Boolean.toString(r.sameFirstTokens())));
      }
      j.append("]}\n");
      Files.writeString(Path.of(json), j.toString());
    }
  }

  static String agreement(int[][] base, int[][] t) {
    if (base == null || t == null) {
      return "-";
    }
    int same = 0;
    for (int r = 0; r < base.length && r < t.length; r++) {
      same += Arrays.equals(base[r], t[r]) ? 1 : 0;
    }
    return same + "/" + base.length + " rows";
  }

  static void print(Result r) {
    System.err.printf(Locale.ROOT, "%s tp=%d: prefill %.2f s, decode %.2f s, %.1f ms per output token, %.1f tokens/s%n",
        r.impl(), r.tp(), r.prefillS(), r.decodeS(), r.tpotMs(), r.tokensPerS());
  }

  /** {@code n} prompts of {@code len} random ids in {@code [3, vocab)} (seed 7: the same prompts every run). */
  static List<int[]> prompts(int n, int len, int vocab) {
    return prompts(n, 0, len, vocab);
  }

  /**
   * {@code n} prompts of {@code shared} random ids common to all, then {@code len} of their own, in {@code [3, vocab)}
   * (seeds 7 and 11: the same prompts every run).
   */
  static List<int[]> prompts(int n, int shared, int len, int vocab) {
    SplittableRandom rnd = new SplittableRandom(7);
    SplittableRandom common = new SplittableRandom(11);
    int[] prefix = new int[shared];
    for (int i = 0; i < shared; i++) {
      prefix[i] = 3 + common.nextInt(vocab - 3);
    }
    List<int[]> rows = new ArrayList<>();
    for (int r = 0; r < n; r++) {
      int[] p = Arrays.copyOf(prefix, shared + len);
      for (int i = shared; i < shared + len; i++) {
        p[i] = 3 + rnd.nextInt(vocab - 3);
      }
      rows.add(p);
    }
    return rows;
  }

  /**
   * Rank r brings rows r, r + tp, ...; generations per rank: 1 token (warm-up), [1 token without prefix sharing],
   * 1 token, then all of them.
   */
  static Result runTp(Path model, int tp, int threads, List<int[]> rows, int newTokens,
      org.sparktp.tensor.DType dtype, boolean unshared) throws IOException {
    try (HfModel hf = HfModel.open(model.toString())) {
      Plan plan = TransformerGraph.plan(hf.model(), tp, Task.GENERATE, null, false, false);
      int n = rows.size();
      long kv = (long) (rows.get(0).length + newTokens) * n * org.sparktp.nn.gen.KvCache.bytesPerToken(plan) * 2;
      GenerateParams full = GenerateParams.greedy(newTokens).withBudgets(kv, 4096);
      GenerateParams one = GenerateParams.greedy(1).withBudgets(kv, 4096);
      int[][] tokens = new int[n][];
      boolean[] same = {true};
      List<double[]> times = LocalCommunicator.run(tp, 3_600_000, rank -> comm -> {
        CpuBackend be = (CpuBackend) Backends.create("cpu", Map.of(TpConf.CPU_THREADS, "" + threads), -1);
        RankWeights w;
        synchronized (hf) {
          w = plan.shard(hf.weightSource(), rank, be, dtype);
        }
        List<int[]> mine = new ArrayList<>();
        for (int r = rank; r < n; r += tp) {
          mine.add(rows.get(r));
        }
        long[] seeds = new long[mine.size()];
        try (be; w; RankModel m = new RankModel(plan, rank, be, w, dtype)) {
          new Generator(m, comm, one, null).generate(mine, seeds, 0); // warm-up (JIT, first touch)
          double prefillUnshared = Double.NaN;
          List<Completion> firstUnshared = null;
          if (unshared) {
            long u = System.nanoTime();
            firstUnshared = new Generator(m, comm, one.withPrefixSharing(false), null).generate(mine, seeds, 0);
            prefillUnshared = (System.nanoTime() - u) / 1e9;
          }
          long a = System.nanoTime();
          List<Completion> first = new Generator(m, comm, one, null).generate(mine, seeds, 0);
          long b = System.nanoTime();
          for (int j = 0; firstUnshared != null && j < first.size(); j++) {
            if (!Arrays.equals(first.get(j).ids(), firstUnshared.get(j).ids())) {
              synchronized (same) {
                same[0] = false;
              }
            }
          }
          long commBefore = comm.stats().nanos();
          List<Completion> got = new Generator(m, comm, full, null).generate(mine, seeds, 0);
          long c = System.nanoTime();
          long commNanos = comm.stats().nanos() - commBefore;
          for (int j = 0; j < got.size(); j++) {
            tokens[rank + j * tp] = got.get(j).ids();
          }
          double prefill = (b - a) / 1e9;
          double decode = (c - b) / 1e9 - prefill;
          // comm share of the decode: the full run's comm minus the prefill's share, estimated pro rata
          return new double[] {prefill, decode, commNanos / 1e9, (c - b) / 1e9, prefillUnshared};
        }
      });
      double[] r0 = times.get(0);
      double decode = r0[1];
      double commShare = r0[2] / r0[3];
      return new Result("spark-tp", tp, r0[0], decode, 1e3 * decode / (newTokens - 1),
          n * (newTokens - 1) / decode, commShare, tokens, r0[4], same[0]);
    }
  }

  static Result runPeer(String python, String script, Path model, Path prompts, int threads, int newTokens,
      org.sparktp.tensor.DType dtype) throws IOException, InterruptedException {
    Path out = model.resolve("peer.json");
    ProcessBuilder pb = new ProcessBuilder(python, script, "--model", model.toString(), "--prompts",
        prompts.toString(), "--new-tokens", Integer.toString(newTokens), "--threads", Integer.toString(threads),
        "--json", out.toString(), "--dtype", dtype == org.sparktp.tensor.DType.F32 ? "f32" : dtype.id());
    pb.redirectError(ProcessBuilder.Redirect.INHERIT);
    pb.redirectOutput(ProcessBuilder.Redirect.DISCARD);
    Process p = pb.start();
    int rc = p.waitFor();
    if (rc != 0) {
      throw new IllegalStateException("The PyTorch peer " + script + " failed with exit code " + rc);
    }
    com.fasterxml.jackson.databind.JsonNode j = new com.fasterxml.jackson.databind.ObjectMapper()
        .readTree(new File(out.toString()));
    com.fasterxml.jackson.databind.JsonNode t = j.get("tokens");
    int[][] tokens = new int[t.size()][];
    for (int r = 0; r < tokens.length; r++) {
      tokens[r] = new int[t.get(r).size()];
      for (int i = 0; i < tokens[r].length; i++) {
        tokens[r][i] = t.get(r).get(i).asInt();
      }
    }
    double prefill = j.get("prefill_s").asDouble();
    double decode = j.get("decode_s").asDouble();
    int n = tokens.length;
    return new Result("pytorch", 0, prefill, decode, 1e3 * decode / (newTokens - 1), n * (newTokens - 1) / decode,
        Double.NaN, tokens, Double.NaN, true);
  }

  /** A Hugging Face llama checkpoint with random weights (uniform, std 0.02; norms 1 + small noise). */
  static void writeModel(Path dir, int hidden, int heads, int kvHeads, int layers, int ffn, int vocab, int maxPos)
      throws IOException {
    Files.createDirectories(dir);
    int hd = hidden / heads;
    String config = String.format(Locale.ROOT, "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
        + "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_attention_heads\": %d, \"num_key_value_heads\": %d, "
        + "\"num_hidden_layers\": %d, \"vocab_size\": %d, \"max_position_embeddings\": %d, \"rms_norm_eps\": 1e-05, "
        + "\"rope_theta\": 10000.0, \"tie_word_embeddings\": false, \"hidden_act\": \"silu\", \"bos_token_id\": 1, "
        + "\"eos_token_id\": 2, \"torch_dtype\": \"float32\"}", hidden, ffn, heads, kvHeads, layers, vocab, maxPos);
    Files.writeString(dir.resolve("config.json"), config, StandardCharsets.UTF_8);
    Path st = dir.resolve("model.safetensors");
    if (Files.exists(st)) {
      return; // the same shape was written before (--dir reused)
    }
    SplittableRandom rnd = new SplittableRandom(42);
    SafetensorsWriter w = new SafetensorsWriter();
    w.add("model.embed_tokens.weight", new long[] {vocab, hidden}, random(rnd, (long) vocab * hidden, 0.02, 0));
    for (int l = 0; l < layers; l++) {
      String p = "model.layers." + l + ".";
      w.add(p + "input_layernorm.weight", new long[] {hidden}, random(rnd, hidden, 0.02, 1));
      w.add(p + "self_attn.q_proj.weight", new long[] {heads * hd, hidden}, random(rnd, (long) heads * hd * hidden, 0.02, 0));
      w.add(p + "self_attn.k_proj.weight", new long[] {kvHeads * hd, hidden},
          random(rnd, (long) kvHeads * hd * hidden, 0.02, 0));
      w.add(p + "self_attn.v_proj.weight", new long[] {kvHeads * hd, hidden},
          random(rnd, (long) kvHeads * hd * hidden, 0.02, 0));
      w.add(p + "self_attn.o_proj.weight", new long[] {hidden, heads * hd}, random(rnd, (long) hidden * heads * hd, 0.02, 0));
      w.add(p + "post_attention_layernorm.weight", new long[] {hidden}, random(rnd, hidden, 0.02, 1));
      w.add(p + "mlp.gate_proj.weight", new long[] {ffn, hidden}, random(rnd, (long) ffn * hidden, 0.02, 0));
      w.add(p + "mlp.up_proj.weight", new long[] {ffn, hidden}, random(rnd, (long) ffn * hidden, 0.02, 0));
      w.add(p + "mlp.down_proj.weight", new long[] {hidden, ffn}, random(rnd, (long) hidden * ffn, 0.02, 0));
    }
    w.add("model.norm.weight", new long[] {hidden}, random(rnd, hidden, 0.02, 1));
    w.add("lm_head.weight", new long[] {vocab, hidden}, random(rnd, (long) vocab * hidden, 0.02, 0));
    w.write(new org.apache.hadoop.fs.Path(st.toString()), new org.apache.hadoop.conf.Configuration());
  }

  static float[] random(SplittableRandom rnd, long n, double std, double mean) {
    float[] a = new float[Math.toIntExact(n)];
    double half = std * Math.sqrt(3);
    for (int i = 0; i < a.length; i++) {
      a[i] = (float) (mean + (rnd.nextDouble() * 2 - 1) * half);
    }
    return a;
  }
}
