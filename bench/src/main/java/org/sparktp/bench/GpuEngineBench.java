package org.sparktp.bench;

import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.backend.cuda.CudaTensor;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.gen.GenerateParams;
import org.sparktp.nn.gen.Generator;
import org.sparktp.nn.gen.KvCache;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.nn.run.TpRunner;
import org.sparktp.nn.run.RankModel;
import org.sparktp.tensor.DType;

/**
 * The engine on the GPU, for {@link GpuBench} (tp 1, one CUDA backend, bf16 weights, f32 activations):
 *
 * <ul>
 *   <li>BERT-base encoder ({@link TransformerBench#writeBert}: 12 layers, hidden 768, 12 heads, FFN 3072, random
 *       weights), task embed with mean pooling, {@code rows} sequences of {@code seq} tokens per step: tokens/s and
 *       TFLOP/s (2 x parameters x tokens + the attention products) against the bf16 peak;
 *   <li>decode of the generate benchmark's Llama shape ({@link GenerateBench#writeModel}: hidden 2048, 16 heads on
 *       4 KV heads, 8 layers, FFN 5632, vocab 32000), 64 prompts of 128 tokens, greedy: decode tokens/s and the
 *       HBM bound, the time to read every weight once per step plus the KV cache the step attends to, at the
 *       device-to-device bandwidth measured here (bytes read + written by a 1 GiB copy); target: a step within
 *       2x of the bound.
 * </ul>
 */
final class GpuEngineBench {
  private GpuEngineBench() {}

  /** A measured device-to-device copy: bytes read plus written per second. */
  static double bandwidth(CudaBackend gpu) {
    int n = 1 << 28; // 1 GiB of f32
    try (CudaTensor a = gpu.empty(1 << 14, n >> 14, DType.F32); CudaTensor b = gpu.empty(1 << 14, n >> 14, DType.F32)) {
      gpu.zero(a);
      double ms = GpuBench.timeMs(gpu, () -> gpu.copyBlock(a, 0, 0, b, 0, 0, a.rows(), a.cols()), 2, 5);
      return 2.0 * 4 * n / (ms / 1e3);
    }
  }

  static void bert(CudaBackend gpu, int rows, int seq, List<GpuBench.Row> out, PrintStream log) throws Exception {
    int layers = 12;
    int hidden = 768;
    int ffn = 3072;
    Path dir = Files.createTempDirectory("spark-tp-gpubench-bert");
    TransformerBench.writeBert(dir, layers, hidden, 12, ffn, 30522, seq);
    int[] ids = new int[rows * seq];
    int[] off = new int[rows + 1];
    Random rng = new Random(7);
    for (int i = 0; i < ids.length; i++) {
      ids[i] = 1 + rng.nextInt(30000);
    }
    for (int r = 0; r <= rows; r++) {
      off[r] = r * seq;
    }
    double[] secs = new double[3];
    try (HfModel hf = HfModel.open(dir.toString())) {
      Plan plan = TransformerGraph.plan(hf.model(), 1, Task.EMBED, Pooling.MEAN, false, false);
      LocalCommunicator.run(1, 600_000, rank -> comm -> {
        try (RankWeights w = plan.shard(hf.weightSource(), 0, gpu, DType.BF16);
            RankModel m = new RankModel(plan, 0, gpu, w, DType.BF16)) {
          TpRunner runner = new TpRunner(m, comm);
          runner.step(InputBatch.bags(ids, off, rows)); // warm-up: kernels, cuBLASLt plans
          for (int i = 0; i < secs.length; i++) {
            long t0 = System.nanoTime();
            runner.step(InputBatch.bags(ids, off, rows));
            secs[i] = (System.nanoTime() - t0) / 1e9;
          }
          runner.step(InputBatch.bags(new int[0], new int[] {0}, 0));
        }
        return null;
      });
    }
    java.util.Arrays.sort(secs);
    double s = secs[1];
    long tokens = (long) rows * seq;
    double params = layers * (4.0 * hidden * hidden + 2.0 * hidden * ffn);
    double flop = 2 * params * tokens + layers * 4.0 * tokens * seq * hidden; // linears + QK^T and PV
    out.add(new GpuBench.Row("BERT-base " + rows + "x" + seq, "encoder, bf16 weights, tp 1", 1e3 * s,
        flop / s / 1e12, Double.NaN, String.format(Locale.ROOT, "%.0f tokens/s", tokens / s)));
    log.printf(Locale.ROOT, "BERT-base %dx%d: %.1f ms per step, %.0f tokens/s%n", rows, seq, 1e3 * s, tokens / s);
  }

  static void decode(CudaBackend gpu, int prompts, int promptLen, int newTokens, List<GpuBench.Row> out,
      PrintStream log) throws Exception {
    int hidden = 2048;
    int heads = 16;
    int kvHeads = 4;
    int layers = 8;
    int ffn = 5632;
    int vocab = 32000;
    Path dir = Files.createTempDirectory("spark-tp-gpubench-llama");
    GenerateBench.writeModel(dir, hidden, heads, kvHeads, layers, ffn, vocab, promptLen + newTokens);
    List<int[]> rows = GenerateBench.prompts(prompts, promptLen, vocab);
    double[] t = new double[2];
    long[] copies = new long[2];
    try (HfModel hf = HfModel.open(dir.toString())) {
      Plan plan = TransformerGraph.plan(hf.model(), 1, Task.GENERATE, null, false, false);
      long kv = (long) (promptLen + newTokens) * prompts * KvCache.bytesPerToken(plan) * 2;
      GenerateParams full = GenerateParams.greedy(newTokens).withBudgets(kv, 1 << 16);
      GenerateParams one = GenerateParams.greedy(1).withBudgets(kv, 1 << 16);
      long[] seeds = new long[prompts];
      LocalCommunicator.run(1, 600_000, rank -> comm -> {
        try (RankWeights w = plan.shard(hf.weightSource(), 0, gpu, DType.BF16);
            RankModel m = new RankModel(plan, 0, gpu, w, DType.BF16)) {
          new Generator(m, comm, one, null).generate(rows, seeds, 0); // warm-up
          long a = System.nanoTime();
          new Generator(m, comm, one, null).generate(rows, seeds, 0);
          long b = System.nanoTime();
          org.sparktp.backend.cuda.CudaTransfers before = gpu.transfers();
          Generator g = new Generator(m, comm, full, null);
          g.generate(rows, seeds, 0);
          long c = System.nanoTime();
          org.sparktp.backend.cuda.CudaTransfers d = gpu.transfers().since(before);
          t[0] = (b - a) / 1e9;
          t[1] = (c - b) / 1e9 - t[0];
          copies[0] = d.toDevice() / Math.max(1, g.steps());
          copies[1] = d.toHost() / Math.max(1, g.steps());
        }
        return null;
      });
    }
    double decode = t[1];
    int steps = newTokens - 1;
    double perStep = decode / steps;
    long hd = hidden / heads;
    double weights = 2.0 * (layers * ((double) hidden * (heads + 2 * kvHeads) * hd + (double) hidden * hidden
        + 3.0 * hidden * ffn) + (double) vocab * hidden); // bf16 linears + LM head, read once per step
    double avgCtx = promptLen + newTokens / 2.0;
    double kvBytes = 4.0 * prompts * avgCtx * layers * 2 * kvHeads * hd; // f32 KV cache read per step
    double bw = bandwidth(gpu);
    double bound = (weights + kvBytes) / bw;
    out.add(new GpuBench.Row(String.format(Locale.ROOT, "llama-2k decode b%d", prompts), "generate, bf16, tp 1",
        1e3 * perStep, Double.NaN, Double.NaN, String.format(Locale.ROOT,
            "%.0f tokens/s; HBM bound %.3f ms/step (%.0f MB weights + %.0f MB KV at %.2f TB/s): %.2fx the bound"
                + " (target <= 2); %d up / %d down copies per step; prefill %.2f s",
            prompts * steps / decode, 1e3 * bound, weights / 1e6, kvBytes / 1e6, bw / 1e12, perStep / bound,
            copies[0], copies[1], t[0])));
    log.printf(Locale.ROOT, "decode b%d: %.3f ms per step, %.0f tokens/s, bound %.3f ms%n", prompts, 1e3 * perStep,
        prompts * steps / decode, 1e3 * bound);
  }

  /**
   * What the engine benchmark does besides the GPU, on small shapes (checkpoints written and read, plans built),
   * so that {@code gpu-check --prepare} sees the classes it loads.
   */
  static void census(PrintStream log) {
    try {
      Path bert = Files.createTempDirectory("spark-tp-census-bert");
      TransformerBench.writeBert(bert, 1, 64, 4, 128, 500, 16);
      Path llama = Files.createTempDirectory("spark-tp-census-llama");
      GenerateBench.writeModel(llama, 64, 4, 2, 1, 128, 500, 32);
      try (HfModel b = HfModel.open(bert.toString()); HfModel l = HfModel.open(llama.toString())) {
        TransformerGraph.plan(b.model(), 1, Task.EMBED, Pooling.MEAN, false, false);
        Plan p = TransformerGraph.plan(l.model(), 1, Task.GENERATE, null, false, false);
        log.println("census: engine benchmark models written and planned (" + KvCache.bytesPerToken(p)
            + " KV bytes per token)");
      }
    } catch (Exception e) {
      throw new IllegalStateException("census of the engine benchmark failed: " + e, e);
    }
  }
}
