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
import java.util.SplittableRandom;
import org.sparktp.TpConf;
import org.sparktp.backend.Backends;
import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.cpu.CpuTensor;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.nn.LinearKernel;
import org.sparktp.nn.RunContext;

/**
 * Overhead of a layer over the bare GEMM: OpenBLAS {@code sgemm} called directly on
 * {@code X[m x k] W[k x n]}, side by side with the engine's linear kernel ({@link LinearKernel}, what a LinearOp runs at p = 1) computing
 * {@code gelu(X W^T + b)} on the same sizes with PyTorch's {@code [n, k]} weight layout, and the oneDNN
 * linear (weights prepacked once, bias + GeLU as post-ops) with f32, bf16 and int8 weight-only weights (s8
 * with one f32 scale per output channel, {@code spark.tp.dtype=int8}).
 *
 * <pre>
 * java -cp ... org.sparktp.bench.GemmBench [--m 512] [--k 4096] [--n 16384] [--reps 5] [--threads 1] [--json FILE]
 * </pre>
 */
public final class GemmBench {
  private GemmBench() {}

  /**
   * The OpenBLAS thread count that makes the rows comparable with oneDNN's, whose OpenMP reads
   * {@code OMP_NUM_THREADS} once at start (all {@code cores} when it is unset): without {@code --threads},
   * OpenBLAS gets oneDNN's count; a warning line says so, or says that an explicit {@code --threads} differs.
   */
  static int comparableThreads(int threads, boolean given, String omp, int cores, java.io.PrintStream out) {
    int onednn = cores;
    if (omp != null && !omp.isBlank()) {
      try {
        onednn = Integer.parseInt(omp.trim().split(",")[0].trim());
      } catch (NumberFormatException e) {
        out.println("warning: OMP_NUM_THREADS=" + omp + " is not a number; oneDNN's OpenMP may use every core ("
            + cores + ")");
        return threads;
      }
    }
    String ompText = omp == null || omp.isBlank() ? "OMP_NUM_THREADS is unset, so oneDNN's OpenMP uses every core ("
        + cores + ")" : "OMP_NUM_THREADS=" + omp.trim() + ": oneDNN uses " + onednn + " thread(s)";
    if (!given) {
      if (onednn != threads || omp == null || omp.isBlank()) {
        out.println("warning: " + ompText + "; OpenBLAS is set to " + onednn + " thread(s) too, so the rows compare "
            + "(for one thread: OMP_NUM_THREADS=1 and --threads 1)");
      }
      return onednn;
    }
    if (onednn != threads) {
      out.println("warning: " + ompText + " but --threads " + threads + " gives OpenBLAS " + threads
          + ": the oneDNN rows are not comparable with the OpenBLAS rows (set OMP_NUM_THREADS=" + threads + ")");
    }
    return threads;
  }

  public static void main(String[] args) throws IOException {
    int m = 512;
    int k = 4096;
    int n = 16384;
    int reps = 5;
    int threads = 1;
    boolean threadsGiven = false;
    String json = null;
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (i + 1 >= args.length) {
        throw new IllegalArgumentException("Flag " + a + " needs a value");
      }
      String v = args[++i];
      switch (a) {
        case "--m" -> m = Integer.parseInt(v);
        case "--k" -> k = Integer.parseInt(v);
        case "--n" -> n = Integer.parseInt(v);
        case "--reps" -> reps = Integer.parseInt(v);
        case "--threads" -> {
          threads = Integer.parseInt(v);
          threadsGiven = true;
        }
        case "--json" -> json = v;
        default -> throw new IllegalArgumentException("Unknown flag " + a
            + "; use --m, --k, --n, --reps, --threads, --json");
      }
    }
    threads = comparableThreads(threads, threadsGiven, System.getenv("OMP_NUM_THREADS"),
        Runtime.getRuntime().availableProcessors(), System.out);
    SplittableRandom rnd = new SplittableRandom();
    float[] x = random(rnd, m * k, 1);
    float[] w = random(rnd, n * k, 1 / Math.sqrt(k));
    float[] b = random(rnd, n, 0.1);
    double flops = 2.0 * m * n * k;
    double[] bare = new double[reps];
    double[] layerTimes = new double[reps];
    double[] bareT = new double[reps];
    double[] dnnlF32 = new double[reps];
    double[] dnnlBf16 = new double[reps];
    double[] dnnlInt8 = new double[reps];
    String[] impls = new String[3];
    long[] bytes = new long[3];
    double[] errors = new double[3]; // vs float64 of the unquantized weights, first rows
    double[] quantizeSeconds = new double[1];
    try (CpuBackend be = (CpuBackend) Backends.create("cpu", Map.of(TpConf.CPU_THREADS, "" + threads), -1);
        CpuBackend dn = (CpuBackend) Backends.create("cpu", Map.of(TpConf.CPU_THREADS, "" + threads,
            TpConf.CPU_GEMM, "onednn", TpConf.BATCH_SIZE, "" + m), -1)) {
      System.out.println("oneDNN: isa " + CpuBackend.onednnIsa() + ", " + CpuBackend.onednnThreads());
      System.out.println("OpenBLAS: " + CpuBackend.describe());
      final int fm = m;
      final int fk = k;
      final int fn = n;
      final int freps = reps;
      LocalCommunicator.run(1, 60_000, rank -> comm -> {
        try (CpuTensor xt = (CpuTensor) be.upload(x, fm, fk); CpuTensor wkn = (CpuTensor) be.upload(w, fk, fn);
            CpuTensor y = be.empty(fm, fn);
            CpuTensor wnk = (CpuTensor) be.upload(w, fn, fk);
            LinearKernel layer = new LinearKernel(be.upload(w, fn, fk), be.upload(b, 1, fn), Activation.GELU);
            Backend.PreparedLinear lf = dn.prepareLinear(dn.upload(w, fn, fk), dn.upload(b, 1, fn), Activation.GELU);
            Backend.PreparedLinear lb = dn.prepareLinear(bf16(dn, w, fn, fk), dn.upload(b, 1, fn), Activation.GELU);
            Backend.PreparedLinear lq = int8(dn, w, b, fn, fk, quantizeSeconds);
            CpuTensor xd = dn.upload(x, 0, fm, fk)) {
          impls[0] = lf.kernel();
          impls[1] = lb.kernel();
          impls[2] = lq.kernel();
          bytes[0] = lf.bytes();
          bytes[1] = lb.bytes();
          bytes[2] = lq.bytes();
          int er = Math.min(fm, 8);
          double[] ref = reference(x, w, b, er, fk, fn);
          Backend.PreparedLinear[] ls = {lf, lb, lq};
          for (int i = 0; i < 3; i++) {
            try (org.sparktp.backend.Tensor y0 = ls[i].apply(xd, true)) {
              float[] got = dn.download(y0);
              double maxErr = 0;
              double maxRef = 0;
              for (int j = 0; j < ref.length; j++) {
                maxErr = Math.max(maxErr, Math.abs(got[j] - ref[j]));
                maxRef = Math.max(maxRef, Math.abs(ref[j]));
              }
              errors[i] = maxErr / maxRef;
            }
          }
          RunContext ctx = new RunContext(be, comm);
          for (int r = -1; r < freps; r++) { // r = -1 warms up both paths
            long t0 = System.nanoTime();
            // the backend's sgemm: OpenBLAS on one thread per call, split over the backend's threads
            be.gemm(false, false, 1f, xt, wkn, 0f, y);
            long t1 = System.nanoTime();
            be.gemm(false, true, 1f, xt, wnk, 0f, y);
            long t1b = System.nanoTime();
            CpuTensor in = be.empty(fm, fk);
            be.copyBlock(xt, 0, 0, in, 0, 0, fm, fk);
            long t2 = System.nanoTime();
            try (in; org.sparktp.backend.Tensor out = layer.apply(in, true, ctx, "bench")) {
              long t3 = System.nanoTime();
              if (r >= 0) {
                bare[r] = (t1 - t0) / 1e9;
                bareT[r] = (t1b - t1) / 1e9;
                layerTimes[r] = (t3 - t2) / 1e9;
              }
            }
            long t4 = System.nanoTime();
            lf.apply(xd, true).close();
            long t5 = System.nanoTime();
            lb.apply(xd, true).close();
            long t6 = System.nanoTime();
            lq.apply(xd, true).close();
            long t7 = System.nanoTime();
            if (r >= 0) {
              dnnlF32[r] = (t5 - t4) / 1e9;
              dnnlBf16[r] = (t6 - t5) / 1e9;
              dnnlInt8[r] = (t7 - t6) / 1e9;
            }
          }
        }
        return null;
      });
    }
    double mb = median(bare);
    double ml = median(layerTimes);
    double mt = median(bareT);
    System.out.printf(Locale.ROOT, "%nX[%d x %d] . W[%d x %d], %d BLAS thread(s), %d repetitions (median)%n", m, k, k, n,
        threads, reps);
    System.out.printf(Locale.ROOT, "%-44s %10s %10s %10s%n", "path", "seconds", "GFLOP/s", "speed/sgemm");
    System.out.printf(Locale.ROOT, "%-44s %10.4f %10.1f %10s%n", "sgemm (OpenBLAS, direct)", mb, flops / mb / 1e9,
        "1.000");
    System.out.printf(Locale.ROOT, "%-44s %10.4f %10.1f %10.3f%n", "sgemm, W as [n, k] (PyTorch layout, W^T)", mt,
        flops / mt / 1e9, mb / mt);
    System.out.printf(Locale.ROOT, "%-44s %10.4f %10.1f %10.3f%n", "LinearOp p=1, bias + gelu", ml,
        flops / ml / 1e9, mb / ml);
    double mf = median(dnnlF32);
    double mbf = median(dnnlBf16);
    System.out.printf(Locale.ROOT, "%-44s %10.4f %10.1f %10.3f%n", "onednn f32 linear, prepacked, bias + gelu", mf,
        flops / mf / 1e9, mb / mf);
    System.out.printf(Locale.ROOT, "%-44s %10.4f %10.1f %10.3f%n", "onednn bf16 linear, prepacked, bias + gelu", mbf,
        flops / mbf / 1e9, mb / mbf);
    double mq = median(dnnlInt8);
    System.out.printf(Locale.ROOT, "%-44s %10.4f %10.1f %10.3f%n", "onednn int8 linear (s8 + scales), bias + gelu", mq,
        flops / mq / 1e9, mb / mq);
    System.out.printf(Locale.ROOT, "oneDNN kernels: f32 %s, bf16 %s, int8 %s%n", impls[0], impls[1], impls[2]);
    System.out.printf(Locale.ROOT, "weight bytes (packed): f32 %d, bf16 %d, int8 %d (with scales); int8 quantize + "
        + "pack once: %.3f s%n", bytes[0], bytes[1], bytes[2], quantizeSeconds[0]);
    System.out.printf(Locale.ROOT, "relative error vs float64 of the unquantized weights (max |y - ref| / max |ref|, "
        + "first %d rows): f32 %.2e, bf16 %.2e, int8 %.2e%n", Math.min(m, 8), errors[0], errors[1], errors[2]);
    System.out.printf(Locale.ROOT, "int8 (oneDNN) speed-up: %.2fx over sgemm, %.2fx over oneDNN bf16, %.2fx over "
        + "oneDNN f32%n", mb / mq, mbf / mq, mf / mq);
    System.out.printf(Locale.ROOT, "bf16 (oneDNN) speed-up over sgemm: %.2fx (target >= 4x on AMX)%n", mb / mbf);
    System.out.printf(Locale.ROOT, "layer overhead over the bare GEMM: %.1f%% (target < 10%%)%n", (ml / mb - 1) * 100);
    System.out.println("all onednn f32 runs: " + Arrays.toString(dnnlF32));
    System.out.println("all onednn bf16 runs: " + Arrays.toString(dnnlBf16));
    System.out.println("all onednn int8 runs: " + Arrays.toString(dnnlInt8));
    System.out.println("all sgemm runs: " + Arrays.toString(bare));
    System.out.println("all sgemm W^T runs: " + Arrays.toString(bareT));
    System.out.println("all layer runs: " + Arrays.toString(layerTimes));
    if (json != null) {
      List<String> rows = new ArrayList<>();
      rows.add(String.format(Locale.ROOT,
          "{\"path\": \"sgemm\", \"m\": %d, \"k\": %d, \"n\": %d, \"threads\": %d, \"seconds\": %.6f, \"gflops\": %.2f}",
          m, k, n, threads, mb, flops / mb / 1e9));
      rows.add(String.format(Locale.ROOT,
          "{\"path\": \"sgemm_weight_transposed\", \"m\": %d, \"k\": %d, \"n\": %d, \"threads\": %d, \"seconds\": %.6f, \"gflops\": %.2f}",
          m, k, n, threads, mt, flops / mt / 1e9));
      rows.add(String.format(Locale.ROOT,
          "{\"path\": \"column_parallel_linear_bias_gelu\", \"m\": %d, \"k\": %d, \"n\": %d, \"threads\": %d, "
              + "\"seconds\": %.6f, \"gflops\": %.2f, \"overhead\": %.4f}",
          m, k, n, threads, ml, flops / ml / 1e9, ml / mb - 1));
      rows.add(String.format(Locale.ROOT,
          "{\"path\": \"onednn_f32_linear_bias_gelu\", \"m\": %d, \"k\": %d, \"n\": %d, \"threads\": %d, "
              + "\"seconds\": %.6f, \"gflops\": %.2f, \"kernel\": \"%s\"}", m, k, n, threads, mf, flops / mf / 1e9,
          impls[0]));
      rows.add(String.format(Locale.ROOT,
          "{\"path\": \"onednn_bf16_linear_bias_gelu\", \"m\": %d, \"k\": %d, \"n\": %d, \"threads\": %d, "
              + "\"seconds\": %.6f, \"gflops\": %.2f, \"kernel\": \"%s\", \"speedup_vs_sgemm\": %.3f}", m, k, n,
          threads, mbf, flops / mbf / 1e9, impls[1], mb / mbf));
      rows.add(String.format(Locale.ROOT,
          "{\"path\": \"onednn_int8_linear_bias_gelu\", \"m\": %d, \"k\": %d, \"n\": %d, \"threads\": %d, "
              + "\"seconds\": %.6f, \"gflops\": %.2f, \"kernel\": \"%s\", \"speedup_vs_sgemm\": %.3f, "
              + "\"speedup_vs_bf16\": %.3f, \"weight_bytes\": %d, \"rel_error\": %.3e}", m, k, n, threads, mq,
          flops / mq / 1e9, impls[2], mb / mq, mbf / mq, bytes[2], errors[2]));
      Files.writeString(Path.of(json), "[\n  " + String.join(",\n  ", rows) + "\n]\n", StandardCharsets.UTF_8);
    }
  }

  /** The int8 weight-only linear of {@code w}, timing its quantization and packing into {@code seconds[0]}. */
  private static Backend.PreparedLinear int8(CpuBackend be, float[] w, float[] b, int rows, int cols,
      double[] seconds) {
    CpuTensor wt = be.upload(w, 0, rows, cols);
    long t0 = System.nanoTime();
    Backend.PreparedLinear l = be.prepareLinear(wt, be.upload(b, 1, rows), Activation.GELU, DType.I8);
    seconds[0] = (System.nanoTime() - t0) / 1e9;
    return l;
  }

  /** {@code gelu(x W^T + b)} (erf GeLU) in float64 for the first {@code rows} rows of {@code x}. */
  private static double[] reference(float[] x, float[] w, float[] b, int rows, int k, int n) {
    double[] y = new double[rows * n];
    for (int r = 0; r < rows; r++) {
      for (int c = 0; c < n; c++) {
        double s = b[c];
        for (int i = 0; i < k; i++) {
          s += (double) x[r * k + i] * w[c * k + i];
        }
        y[r * n + c] = 0.5 * s * (1 + erf(s / Math.sqrt(2)));
      }
    }
    return y;
  }

  /** erf by its Taylor series, or +-1 beyond 5 (far below float32 resolution there). */
  private static double erf(double v) {
    double ax = Math.abs(v);
    if (ax > 5) {
      return Math.signum(v);
    }
    double sum = 0;
    double term = ax;
    for (int i = 0; i < 200 && Math.abs(term) > 1e-17; i++) {
      sum += term / (2 * i + 1);
      term *= -ax * ax / (i + 1);
    }
    return Math.signum(v) * 2 / Math.sqrt(Math.PI) * sum;
  }

  private static CpuTensor bf16(CpuBackend be, float[] w, int rows, int cols) {
    try (CpuTensor f = be.upload(w, 0, rows, cols)) {
      return be.convert(f, DType.BF16);
    }
  }

  private static float[] random(SplittableRandom rnd, int n, double scale) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) ((rnd.nextDouble() * 2 - 1) * scale);
    }
    return a;
  }

  static double median(double[] v) {
    double[] s = v.clone();
    Arrays.sort(s);
    return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  }
}
