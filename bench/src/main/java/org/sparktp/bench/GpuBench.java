package org.sparktp.bench;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Random;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.global.cudart;
import org.sparktp.backend.Backends;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.backend.cuda.CudaTensor;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * GPU benchmark (run by {@code bin/spark-tp gpu-check}): for each shape, cuBLASLt bf16 GEMM alone, the layer's bf16
 * GEMM with its fused bias + tanh-GeLU epilogue, bias epilogue + erf-GeLU kernel (fp32 output) and an fp32 GEMM;
 * then a tensor-parallel MLP step at tp 1 (d 8192, ffn 32768, 4096 tokens by default) without and with the next
 * micro-batch's host-to-device upload; then the engine ({@link GpuEngineBench}, unless {@code --no-engine}): a
 * BERT-base encoder's tokens/s and decode tokens/s of the generate shape at batch 64 against its HBM bound. Times are CUDA-event medians of 3 sets of {@code --reps} calls after
 * {@code --warmup} calls; TFLOP/s = 2MNK / t against the H200's ~790 TFLOP/s bf16 peak; "rel err" compares 64
 * sampled outputs with float64. Without a GPU it prints "no GPU: reason" and returns 2.
 *
 * <pre>
 * java -cp ... org.sparktp.bench.GpuBench [--reps 50] [--warmup 10] [--quick] [--no-engine] [--json FILE]
 * </pre>
 */
public final class GpuBench {
  private static final double PEAK_BF16_TFLOPS = 790;

  private GpuBench() {}

  record Row(String shape, String path, double ms, double tflops, double relErr, String note) {}

  public static void main(String[] args) throws IOException {
    int rc = run(args, System.out);
    if (rc != 0) {
      System.exit(rc);
    }
  }

  /** Runs the benchmark, prints the table; 0 on success, 2 without a GPU. */
  public static int run(String[] args, PrintStream out) throws IOException {
    int reps = 50;
    int warmup = 10;
    boolean quick = false;
    boolean engine = true;
    String json = null;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--reps" -> reps = Integer.parseInt(args[++i]);
        case "--warmup" -> warmup = Integer.parseInt(args[++i]);
        case "--quick" -> quick = true;
        case "--no-engine" -> engine = false;
        case "--census" -> {
          GpuEngineBench.census(out); // the CPU side of the engine benchmark, for gpu-check --prepare
          return 0;
        }
        case "--json" -> json = args[++i];
        default -> throw new IllegalArgumentException("Unknown flag " + args[i] + "; use --reps, --warmup, --quick,"
            + " --no-engine, --json");
      }
    }
    CudaProbe.Status st = CudaProbe.status();
    if (!st.available()) {
      out.println("no GPU: " + st.backendReason());
      return 2;
    }
    List<Row> rows = new ArrayList<>();
    try (CudaBackend gpu = (CudaBackend) Backends.create("cuda", Map.of(), 0)) {
      out.println("GpuBench on " + gpu.describe() + "; " + st.versions());
      int[][] shapes = quick
          ? new int[][] {{1024, 1024, 1024}, {256, 4096, 1024}}
          : new int[][] {{4096, 4096, 4096}, {8192, 8192, 8192}, {4096, 16384, 4096}, {4096, 4096, 16384},
              {256, 16384, 4096}};
      for (int[] s : shapes) {
        gemmRows(gpu, s[0], s[1], s[2], warmup, reps, rows, out);
      }
      if (quick) {
        mlpRows(gpu, 1024, 4096, 512, warmup, Math.min(reps, 10), rows, out);
      } else {
        mlpRows(gpu, 8192, 32768, 4096, warmup, Math.min(reps, 20), rows, out);
      }
      if (engine) {
        try {
          GpuEngineBench.bert(gpu, quick ? 8 : 64, 128, rows, out);
          GpuEngineBench.decode(gpu, 64, quick ? 16 : 128, quick ? 8 : 64, rows, out);
        } catch (Exception e) {
          throw new IllegalStateException("The engine benchmark failed: " + e, e);
        }
      }
    }
    out.println();
    out.printf(Locale.ROOT, "%-22s %-44s %10s %9s %7s %10s  %s%n", "shape (MxNxK)", "path", "median ms", "TFLOP/s",
        "% peak", "rel err", "note");
    for (Row r : rows) {
      boolean noFlops = Double.isNaN(r.tflops());
      out.printf(Locale.ROOT, "%-22s %-44s %10.3f %9s %7s %10s  %s%n", r.shape(), r.path(), r.ms(),
          noFlops ? "-" : String.format(Locale.ROOT, "%.1f", r.tflops()),
          noFlops ? "-" : String.format(Locale.ROOT, "%.1f%%", 100 * r.tflops() / PEAK_BF16_TFLOPS),
          Double.isNaN(r.relErr()) ? "-" : String.format(Locale.ROOT, "%.2e", r.relErr()), r.note());
    }
    if (json != null) {
      StringBuilder sb = new StringBuilder("[\n");
      for (int i = 0; i < rows.size(); i++) {
        Row r = rows.get(i);
        sb.append(String.format(Locale.ROOT, "  {\"shape\": \"%s\", \"path\": \"%s\", \"median_ms\": %.4f,"
            + " \"tflops\": %s, \"rel_err\": %s, \"note\": \"%s\"}%s%n", r.shape(), r.path(), r.ms(),
            Double.isNaN(r.tflops()) ? "null" : String.format(Locale.ROOT, "%.2f", r.tflops()),
            Double.isNaN(r.relErr()) ? "null" : String.format(Locale.ROOT, "%.3e", r.relErr()), r.note(),
            i + 1 < rows.size() ? "," : ""));
      }
      Files.writeString(Path.of(json), sb.append("]\n"), StandardCharsets.UTF_8);
    }
    return 0;
  }

  /** Median milliseconds per call of {@code body}, timed with CUDA events on the compute stream. */
  static double timeMs(CudaBackend gpu, Runnable body, int warmup, int reps) {
    for (int i = 0; i < warmup; i++) {
      body.run();
    }
    CUevent_st start = new CUevent_st();
    CUevent_st stop = new CUevent_st();
    check(cudart.cudaEventCreateWithFlags(start, 0), "cudaEventCreateWithFlags");
    check(cudart.cudaEventCreateWithFlags(stop, 0), "cudaEventCreateWithFlags");
    try {
      double[] sets = new double[3];
      for (int s = 0; s < 3; s++) {
        check(cudart.cudaEventRecord(start, gpu.computeStream()), "cudaEventRecord");
        for (int i = 0; i < reps; i++) {
          body.run();
        }
        check(cudart.cudaEventRecord(stop, gpu.computeStream()), "cudaEventRecord");
        check(cudart.cudaEventSynchronize(stop), "cudaEventSynchronize");
        float[] ms = {0};
        check(cudart.cudaEventElapsedTime(ms, start, stop), "cudaEventElapsedTime");
        sets[s] = ms[0] / reps;
      }
      Arrays.sort(sets);
      return sets[1];
    } finally {
      cudart.cudaEventDestroy(start);
      cudart.cudaEventDestroy(stop);
    }
  }

  private static void check(int rc, String call) {
    if (rc != 0) {
      throw new IllegalStateException(call + " failed: " + cudart.cudaGetErrorString(rc).getString() + " (" + rc + ")");
    }
  }

  private static float[] fill(int n, long seed, float scale) {
    float[] a = new float[n];
    long x = seed * 0x9E3779B97F4A7C15L + 1;
    for (int i = 0; i < n; i++) {
      x = x * 6364136223846793005L + 1442695040888963407L;
      a[i] = ((int) (x >>> 40) / (float) (1 << 23) - 1f) * scale; // uniform in [-scale, scale)
    }
    return a;
  }

  private static double gelu(double v, boolean tanh) {
    if (tanh) {
      return 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v * v * v)));
    }
    return 0.5 * v * (1 + erf(v / Math.sqrt(2)));
  }

  private static double erf(double x) {
    // Abramowitz-Stegun 7.1.26 is too coarse for 1e-3 checks of erf GeLU; use the series (|x| small here)
    double ax = Math.abs(x);
    if (ax > 5) {
      return Math.signum(x);
    }
    double sum = 0;
    double term = ax;
    for (int n = 0; n < 120; n++) {
      sum += term / (2 * n + 1);
      term *= -ax * ax / (n + 1);
    }
    return Math.copySign(2 / Math.sqrt(Math.PI) * sum, x);
  }

  private static float[] down(CudaBackend gpu, Tensor t) {
    return gpu.download(t);
  }

  /** Relative error of 64 sampled outputs of {@code act(x W^T + b)} against float64. */
  private static double sampledErr(CudaBackend gpu, CudaTensor x, CudaTensor w, float[] bias, Tensor y,
      Activation act, long seed) {
    Random r = new Random(seed);
    double num = 0;
    double den = 0;
    for (int s = 0; s < 64; s++) {
      int row = r.nextInt(x.rows());
      int o = r.nextInt(w.rows());
      float[] xr = down(gpu, x.rows(row, 1));
      float[] wr = down(gpu, w.rows(o, 1));
      double v = bias == null ? 0 : bias[o];
      for (int i = 0; i < xr.length; i++) {
        v += (double) xr[i] * wr[i];
      }
      if (act == Activation.GELU_TANH || act == Activation.GELU) {
        v = gelu(v, act == Activation.GELU_TANH);
      }
      double got = down(gpu, ((CudaTensor) y).rows(row, 1))[o];
      num += (got - v) * (got - v);
      den += v * v;
    }
    return Math.sqrt(num / Math.max(den, 1e-300));
  }

  private static void gemmRows(CudaBackend gpu, int m, int n, int k, int warmup, int reps, List<Row> rows,
      PrintStream out) {
    String shape = m + "x" + n + "x" + k;
    double flop = 2.0 * m * n * k;
    float scale = (float) (1 / Math.sqrt(k));
    float[] biasH = fill(n, 3, 1f);
    try (CudaTensor x = gpu.upload(fill(m * k, 1, 1f), 0, m, k, DType.BF16);
        CudaTensor w = gpu.upload(fill(n * k, 2, scale), 0, n, k, DType.BF16);
        CudaTensor b = gpu.upload(biasH, 0, 1, n, DType.BF16);
        CudaTensor bf = gpu.upload(biasH, 0, 1, n);
        CudaTensor y = gpu.empty(m, n, DType.BF16);
        CudaTensor yf = gpu.empty(m, n, DType.F32)) {
      double plain = timeMs(gpu, () -> gpu.gemm(false, true, 1f, x, w, 0f, y), warmup, reps);
      rows.add(new Row(shape, "cuBLASLt bf16, no epilogue", plain, flop / plain / 1e9,
          sampledErr(gpu, x, w, null, y, Activation.IDENTITY, 5), "baseline"));
      double fused = timeMs(gpu, () -> gpu.linear(x, w, b, Activation.GELU_TANH, y), warmup, reps);
      rows.add(new Row(shape, "layer: bf16 + GELU_BIAS epilogue (tanh)", fused, flop / fused / 1e9,
          sampledErr(gpu, x, w, biasH, y, Activation.GELU_TANH, 6),
          String.format(Locale.ROOT, "%.3fx of baseline (target >= 0.85)", plain / fused)));
      double erf = timeMs(gpu, () -> gpu.linear(x, w, bf, Activation.GELU, yf), warmup, reps);
      rows.add(new Row(shape, "layer: bf16 -> f32 BIAS + erf-GeLU kernel", erf, flop / erf / 1e9,
          sampledErr(gpu, x, w, biasH, yf, Activation.GELU, 7),
          String.format(Locale.ROOT, "%.3fx of baseline", plain / erf)));
      out.printf(Locale.ROOT, "%s: plain %.3f ms, fused %.3f ms, erf %.3f ms%n", shape, plain, fused, erf);
    }
    if (m * (long) k <= 4096L * 4096) {
      try (CudaTensor x = gpu.upload(fill(m * k, 1, 1f), 0, m, k);
          CudaTensor w = gpu.upload(fill(n * k, 2, scale), 0, n, k);
          CudaTensor y = gpu.empty(m, n, DType.F32)) {
        double f32 = timeMs(gpu, () -> gpu.gemm(false, true, 1f, x, w, 0f, y), Math.min(warmup, 3),
            Math.min(reps, 10));
        rows.add(new Row(shape, "cuBLASLt f32 (no TF32)", f32, flop / f32 / 1e9,
            sampledErr(gpu, x, w, null, y, Activation.IDENTITY, 8), "fp32 storage"));
      }
    }
  }

  private static void mlpRows(CudaBackend gpu, int d, int ffn, int tokens, int warmup, int reps, List<Row> rows,
      PrintStream out) {
    String shape = "MLP d" + d + " ffn" + ffn + " t" + tokens;
    double flop = 2.0 * 2 * tokens * (double) d * ffn;
    float[] big = fill(ffn * d, 11, (float) (1 / Math.sqrt(d)));
    try (CudaTensor w1 = gpu.upload(big, 0, ffn, d, DType.BF16);
        CudaTensor b1 = gpu.upload(fill(ffn, 12, 0.1f), 0, 1, ffn, DType.BF16)) {
      big = fill(d * ffn, 13, (float) (1 / Math.sqrt(ffn)));
      try (CudaTensor w2 = gpu.upload(big, 0, d, ffn, DType.BF16);
          CudaTensor b2 = gpu.upload(fill(d, 14, 0.1f), 0, 1, d, DType.BF16);
          CudaTensor h = gpu.empty(tokens, ffn, DType.BF16);
          CudaTensor y = gpu.empty(tokens, d, DType.BF16)) {
        big = null;
        float[][] inputs = {fill(tokens * d, 21, 1f), fill(tokens * d, 22, 1f)};
        CudaTensor[] x = {gpu.upload(inputs[0], 0, tokens, d, DType.BF16)};
        try {
          Runnable step = () -> {
            gpu.linear(x[0], w1, b1, Activation.GELU_TANH, h);
            gpu.linear(h, w2, b2, Activation.IDENTITY, y);
          };
          double ev = timeMs(gpu, step, warmup, reps);
          rows.add(new Row(shape, "TP MLP step (tp 1), weights resident", ev, flop / ev / 1e9, Double.NaN,
              "CUDA events"));
          // host wall time per step, without and with the next micro-batch's upload (fp32 rows -> bf16)
          double noCopy = wallMs(gpu, step, reps);
          int[] next = {1};
          Runnable withCopy = () -> {
            CudaTensor fresh = gpu.upload(inputs[next[0] % 2], 0, tokens, d, DType.BF16);
            next[0]++;
            step.run();
            x[0].close();
            x[0] = fresh;
          };
          double copy = wallMs(gpu, withCopy, reps);
          rows.add(new Row(shape, "step, host wall, no copies", noCopy, flop / noCopy / 1e9, Double.NaN, ""));
          rows.add(new Row(shape, "step, host wall, + upload of next batch", copy, flop / copy / 1e9, Double.NaN,
              String.format(Locale.ROOT, "%.3fx the step without copies (target <= 1.05)", copy / noCopy)));
          out.printf(Locale.ROOT, "%s: events %.3f ms, wall %.3f ms, with upload %.3f ms%n", shape, ev, noCopy, copy);
        } finally {
          x[0].close();
        }
      }
    }
  }

  private static double wallMs(CudaBackend gpu, Runnable body, int reps) {
    body.run();
    gpu.synchronize();
    double[] sets = new double[3];
    for (int s = 0; s < 3; s++) {
      long t0 = System.nanoTime();
      for (int i = 0; i < reps; i++) {
        body.run();
      }
      gpu.synchronize();
      sets[s] = (System.nanoTime() - t0) / 1e6 / reps;
    }
    Arrays.sort(sets);
    return sets[1];
  }
}
