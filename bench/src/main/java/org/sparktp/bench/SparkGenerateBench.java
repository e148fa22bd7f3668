package org.sparktp.bench;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.spark.TensorParallelModel;
import org.sparktp.spark.TpMetrics;

/**
 * Greedy generation through Spark on a cluster ({@code bench generate --master spark://...}): the random llama
 * checkpoint of {@link GenerateBench} (written where the executors read it: the same machine's file system for
 * {@code bin/spark-tp-cluster}), {@code --prompts} prompts in one barrier stage of {@code --tp} ranks
 * ({@code TensorParallelModel}, task generate), once untimed (loads the shard cache on the executors) and then
 * {@code --repeats} timed runs. Reported per run: wall time of the job, new tokens/s over it, and from the ranks'
 * own counters ({@link TpMetrics}) the share of rank time spent in collectives and the collective time per forward
 * step (a decode step of the group's sequences, or a prefill). Run it once per {@code bin/spark-tp-cluster delay MS}
 * to see what latency between hosts costs a decode step.
 *
 * <pre>
 * bin/spark-tp bench generate --master spark://10.213.0.1:PORT [--tp 2] [--prompts 8] [--prompt-len 32]
 *     [--new-tokens 32] [--hidden 512] [--heads 8] [--kv-heads 4] [--layers 4] [--ffn 1408] [--vocab 4096]
 *     [--batch 8] [--repeats 3] [--dtype f32|bf16] [--dir DIR] [--label TEXT] [--json FILE]
 * </pre>
 */
public final class SparkGenerateBench {
  private SparkGenerateBench() {}

  record Run(double seconds, long newTokens, double commShare, double commMsPerStep, long steps, String tokens) {}

  private static final List<String> FLAGS = List.of("--master", "--tp", "--prompts", "--prompt-len", "--new-tokens",
      "--hidden", "--heads", "--kv-heads", "--layers", "--ffn", "--vocab", "--batch", "--repeats", "--dtype", "--dir",
      "--label", "--json");

  public static void main(String[] args) throws Exception {
    for (int i = 0; i < args.length; i += 2) {
      if (!FLAGS.contains(args[i]) || i + 1 >= args.length) {
        throw new IllegalArgumentException((FLAGS.contains(args[i]) ? "Flag " + args[i] + " needs a value"
            : "Unknown flag " + args[i]) + "; bench generate --master takes " + String.join(", ", FLAGS));
      }
    }
    String master = CommBench.opt(args, "--master", null);
    int tp = Integer.parseInt(CommBench.opt(args, "--tp", "2"));
    int prompts = Integer.parseInt(CommBench.opt(args, "--prompts", "8"));
    int promptLen = Integer.parseInt(CommBench.opt(args, "--prompt-len", "32"));
    int newTokens = Integer.parseInt(CommBench.opt(args, "--new-tokens", "32"));
    int hidden = Integer.parseInt(CommBench.opt(args, "--hidden", "512"));
    int heads = Integer.parseInt(CommBench.opt(args, "--heads", "8"));
    int kvHeads = Integer.parseInt(CommBench.opt(args, "--kv-heads", "4"));
    int layers = Integer.parseInt(CommBench.opt(args, "--layers", "4"));
    int ffn = Integer.parseInt(CommBench.opt(args, "--ffn", "1408"));
    int vocab = Integer.parseInt(CommBench.opt(args, "--vocab", "4096"));
    int batch = Integer.parseInt(CommBench.opt(args, "--batch", String.valueOf(prompts)));
    int repeats = Integer.parseInt(CommBench.opt(args, "--repeats", "3"));
    String dtype = CommBench.opt(args, "--dtype", "f32");
    String dir = CommBench.opt(args, "--dir", null);
    String label = CommBench.opt(args, "--label", "");
    String json = CommBench.opt(args, "--json", null);
    if (master == null) {
      throw new IllegalArgumentException("bench generate through Spark needs --master (spark://HOST:PORT, or local[N])");
    }
    if (tp < 1 || prompts < 1 || newTokens < 2 || repeats < 1) {
      throw new IllegalArgumentException("--tp and --prompts must be >= 1, --new-tokens >= 2, --repeats >= 1; got tp "
          + tp + ", prompts " + prompts + ", new tokens " + newTokens + ", repeats " + repeats);
    }
    Path model = dir != null ? Path.of(dir) : Files.createTempDirectory("spark-tp-genbench");
    GenerateBench.writeModel(model, hidden, heads, kvHeads, layers, ffn, vocab, promptLen + newTokens);
    List<int[]> rows = GenerateBench.prompts(prompts, promptLen, vocab);

    SparkSession spark = SparkSession.builder().master(master).appName("spark-tp bench generate")
        .config("spark.ui.enabled", "false").getOrCreate();
    List<Run> runs = new ArrayList<>();
    try {
      StructType schema = new StructType().add("id", DataTypes.IntegerType)
          .add("ids", DataTypes.createArrayType(DataTypes.IntegerType, false));
      List<Row> data = new ArrayList<>();
      for (int i = 0; i < rows.size(); i++) {
        data.add(RowFactory.create(i, Arrays.stream(rows.get(i)).boxed().toArray()));
      }
      Dataset<Row> input = spark.createDataFrame(data, schema).repartition(tp).cache();
      input.count();
      TensorParallelModel m = TensorParallelModel.fromDirectory(model.toString()).setInputCol("ids").setTpSize(tp)
          .setGroups(1).setTask("generate").setMaxNewTokens(newTokens).setBatchSize(batch).setDtype(dtype);
      String first = null;
      for (int rep = 0; rep <= repeats; rep++) {
        long t0 = System.nanoTime();
        List<Row> out = m.transform(input).select("id", "generated_ids").orderBy("id").collectAsList();
        double secs = (System.nanoTime() - t0) / 1e9;
        String tokens = out.toString();
        TpMetrics mt = m.lastMetrics();
        long comm = 0;
        long all = 0;
        for (int r = 0; r < mt.tpSize(); r++) {
          comm += mt.commNanos(r);
          all += mt.commNanos(r) + mt.computeNanos(r);
        }
        long steps = mt.steps(0);
        Run run = new Run(secs, mt.newTokens(), all == 0 ? 0 : (double) comm / all,
            steps == 0 ? 0 : mt.commNanos(0) / 1e6 / steps, steps, tokens);
        if (rep == 0) {
          first = tokens;
          System.err.printf(Locale.ROOT, "warm-up: %.2f s (loads the shards on the executors)%n", secs);
          continue;
        }
        if (!tokens.equals(first)) {
          throw new IllegalStateException("run " + rep + " generated other tokens than the warm-up run: greedy "
              + "generation must repeat exactly");
        }
        runs.add(run);
        System.err.printf(Locale.ROOT, "run %d: %.2f s, %d new tokens, comm %.1f%%, %.3f ms comm per step%n", rep,
            secs, run.newTokens(), 100 * run.commShare(), run.commMsPerStep());
      }
    } finally {
      spark.stop();
    }
    Run med = median(runs);
    System.out.printf(Locale.ROOT, "%nGenerate through Spark: %s, llama hidden %d, %d heads (%d kv), %d layers, ffn %d, "
        + "vocab %d, %s; %d prompts x %d tokens, %d new tokens, greedy, tp %d, one group; median of %d%n%s%n", master,
        hidden, heads, kvHeads, layers, ffn, vocab, dtype, prompts, promptLen, newTokens, tp, runs.size(),
        Benchmarks.cpuName() + ", load " + Benchmarks.loadAverage());
    System.out.printf(Locale.ROOT, "%-12s %10s %12s %10s %8s %16s%n", "label", "job s", "new tokens", "tokens/s",
        "comm %", "comm ms / step");
    System.out.printf(Locale.ROOT, "%-12s %10.2f %12d %10.1f %8.1f %16.3f%n", label.isEmpty() ? "-" : label,
        med.seconds(), med.newTokens(), med.newTokens() / med.seconds(), 100 * med.commShare(), med.commMsPerStep());
    if (json != null) {
      Files.writeString(Path.of(json), String.format(Locale.ROOT, "{\"benchmark\": \"generate-spark\", \"master\": \"%s\", "
          + "\"label\": \"%s\", \"tp\": %d, \"prompts\": %d, \"prompt_len\": %d, \"new_tokens\": %d, \"dtype\": \"%s\", "
          + "\"job_s\": %.4f, \"tokens\": %d, \"tokens_per_s\": %.2f, \"comm_share\": %.4f, \"comm_ms_per_step\": %.4f, "
          + "\"steps\": %d}%n", master, label, tp, prompts, promptLen, newTokens, dtype, med.seconds(), med.newTokens(),
          med.newTokens() / med.seconds(), med.commShare(), med.commMsPerStep(), med.steps()));
    }
  }

  private static Run median(List<Run> runs) {
    List<Run> s = new ArrayList<>(runs);
    s.sort((a, b) -> Double.compare(a.seconds(), b.seconds()));
    return s.get(s.size() / 2);
  }
}
