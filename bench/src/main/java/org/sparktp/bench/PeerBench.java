package org.sparktp.bench;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.sparktp.backend.Activation;
import org.sparktp.model.LayerModel;
import org.sparktp.nn.Parallel;
import org.sparktp.tensor.DType;

/**
 * spark-tp's engine side by side with PyTorch on the same Megatron MLP ({@code d -> ffn (gelu) -> d}, tp ranks,
 * one thread each, {@code batch x tp} rows per step), in bf16 and f32, in one run: the repetitions alternate
 * between the two so that both see the same machine load. The PyTorch peer is the committed script
 * {@code tools/torch_mlp_peer.py} (packed next to this class in the bench jar): {@code torch.distributed} gloo,
 * {@code F.linear} on {@code [out, in]} weights, partial sums all-reduced in fp32; it runs with
 * {@code LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-pthread} so that Debian's torch uses OpenBLAS for
 * fp32, as spark-tp does.
 *
 * <p>The ONNX Runtime peer ({@link OrtPeer}, {@code --ort-threads} intra-op threads, default the tp size) runs the
 * same MLP shape exported by {@code tools/export_onnx_peers.py}: f32 for {@code f32}, ORT's dynamic int8
 * ({@code DynamicQuantizeLinear} + {@code MatMulInteger}) for {@code int8} and {@code int8-wo}, nothing for bf16/f16
 * (ORT's CPU provider has no bf16 MatMul); {@code --no-ort} leaves it out. Every table row also gives GFLOP/s
 * ({@code 4 d ffn} per row) and, per core used, the fraction of a nominal peak (cpu MHz x ops per cycle of two
 * 512-bit pipes: f32 FMA 64, bf16 dot 128, int8 VNNI 256; an estimate, not a measured roofline).
 *
 * <pre>
 * PeerBench [--in 4096] [--hidden 16384] [--rows 4096] [--batch 256] [--tp 2] [--repeats 3]
 *           [--dtypes bf16,f32] [--python /usr/bin/python3] [--json FILE] [--no-ort] [--ort-threads N]
 *           [--onnx-dir /tmp/spark-tp-onnx]
 * </pre>
 */
public final class PeerBench {
  private PeerBench() {}

  private static final Pattern ROWS_PER_S = Pattern.compile("\"rows_per_s\": ([0-9.eE+-]+)");

  public static void main(String[] args) throws Exception {
    OrtPeer.onBigStack(() -> {
      run(args);
      return null;
    });
  }

  private static void run(String[] args) throws Exception {
    int d = 4096;
    int ffn = 16384;
    int rows = 4096;
    int batch = 256;
    int tp = 2;
    int repeats = 3;
    String python = "/usr/bin/python3";
    String json = null;
    List<DType> dtypes = List.of(DType.BF16, DType.F32);
    boolean ort = true;
    int ortThreads = -1;
    Path onnxDir = Path.of(System.getProperty("java.io.tmpdir"), "spark-tp-onnx");
    for (int i = 0; i < args.length; i++) {
      String a = args[i];
      if (a.equals("--no-ort")) {
        ort = false;
        continue;
      }
      if (i + 1 >= args.length) {
        throw new IllegalArgumentException("Flag " + a + " needs a value");
      }
      String v = args[++i];
      switch (a) {
        case "--in" -> d = Integer.parseInt(v);
        case "--hidden" -> ffn = Integer.parseInt(v);
        case "--rows" -> rows = Integer.parseInt(v);
        case "--batch" -> batch = Integer.parseInt(v);
        case "--tp" -> tp = Integer.parseInt(v);
        case "--repeats" -> repeats = Integer.parseInt(v);
        case "--python" -> python = v;
        case "--json" -> json = v;
        case "--ort-threads" -> ortThreads = Integer.parseInt(v);
        case "--onnx-dir" -> onnxDir = Path.of(v);
        case "--dtypes" -> {
          List<DType> l = new ArrayList<>();
          for (String s : v.split(",")) {
            l.add(DType.parseStorage(s, "--dtypes"));
          }
          dtypes = l;
        }
        default -> throw new IllegalArgumentException("Unknown flag " + a + "; use --in, --hidden, --rows, --batch, "
            + "--tp, --repeats, --dtypes, --python, --json, --no-ort, --ort-threads, --onnx-dir");
      }
    }
    Path script = Files.createTempFile("torch_mlp_peer", ".py");
    try (InputStream in = PeerBench.class.getResourceAsStream("torch_mlp_peer.py")) {
      Files.write(script, in.readAllBytes());
    }
    Random rng = new Random(42);
    LayerModel spec = SparkBench.mlp(rng, d, ffn, d);
    float[][] x = new float[rows][];
    for (int i = 0; i < rows; i++) {
      x[i] = SparkBench.row(i, d);
    }
    int n = dtypes.size();
    double[][] ours = new double[n][repeats];
    double[][] peer = new double[n][repeats];
    double[][] onnx = new double[n][repeats];
    int ot = ortThreads > 0 ? ortThreads : tp;
    OrtPeer[] ortPeers = new OrtPeer[n];
    String[] ortModels = new String[n];
    if (ort) {
      Path[] models = OrtPeer.export(python, onnxDir, "--model", "mlp", "--d", "" + d, "--ffn", "" + ffn);
      for (int j = 0; j < n; j++) {
        DType dt = dtypes.get(j);
        if (dt == DType.F32 || dt.isInt8()) {
          ortModels[j] = dt == DType.F32 ? "f32" : "dynamic int8";
          ortPeers[j] = new OrtPeer(models[dt == DType.F32 ? 0 : 1], ot);
        }
      }
    }
    float[] ortX = new float[batch * tp * d];
    for (int i = 0; i < batch * tp; i++) {
      System.arraycopy(x[i % rows], 0, ortX, i * d, d);
    }
    System.out.println("CPU: " + Benchmarks.cpuName() + "; load average " + Benchmarks.loadAverage());
    System.out.printf(Locale.ROOT, "Megatron MLP %d -> %d (gelu) -> %d, tp %d, %d rows per step (batch %d per rank), "
        + "%d rows, %d repeats (alternating)%n", d, ffn, d, tp, batch * tp, batch, rows, repeats);
    try {
      // warm-up: per dtype at least 3 passes and 2 s, so that the medians are of the steady state (C2 compiles the
      // engine's Java loops over the first passes; with one warm-up pass the first timed repeats ran at half speed)
      for (int j = 0; j < n; j++) {
        long until = System.nanoTime() + 2_000_000_000L;
        for (int w = 0; w < 3 || System.nanoTime() < until; w++) {
          SparkBench.runEngine(spec, x, tp, batch, dtypes.get(j));
        }
      }
      for (int r = 0; r < repeats; r++) {
        for (int j = 0; j < n; j++) {
          DType dt = dtypes.get(j);
          ours[j][r] = rows / SparkBench.runEngine(spec, x, tp, batch, dt);
          peer[j][r] = torch(python, script, dt, d, ffn, rows, batch * tp, tp);
          if (ortPeers[j] != null) {
            ortPeers[j].run(ortX, batch * tp, d); // warm
            double sec = 0;
            int steps = Math.max(1, rows / (batch * tp));
            for (int s = 0; s < steps; s++) {
              sec += ortPeers[j].run(ortX, batch * tp, d);
            }
            onnx[j][r] = steps * batch * tp / sec;
          }
          System.out.printf(Locale.ROOT, "  repeat %d %-7s spark-tp %8.1f rows/s   pytorch %8.1f rows/s   onnxruntime "
              + "%8.1f rows/s%n", r + 1, dt.id(), ours[j][r], peer[j][r], onnx[j][r]);
        }
      }
    } finally {
      Files.deleteIfExists(script);
      for (OrtPeer o : ortPeers) {
        if (o != null) {
          o.close();
        }
      }
    }
    StringBuilder t = new StringBuilder();
    t.append(String.format(Locale.ROOT, "%-7s %-30s %15s %14s %8s %14s %8s %9s %9s%n", "dtype", "spark-tp kernel",
        "spark-tp rows/s", "pytorch rows/s", "ratio", "ort rows/s", "vs ort", "GFLOP/s", "of peak"));
    double flopsPerRow = 4.0 * d * ffn;
    List<String> rowsJson = new ArrayList<>();
    for (int j = 0; j < n; j++) {
      double a = median(ours[j]);
      double b = median(peer[j]);
      String k = SparkBench.kernel(dtypes.get(j));
      double o = ortPeers[j] == null ? Double.NaN : median(onnx[j]);
      double gf = a * flopsPerRow / 1e9;
      double peak = Benchmarks.nominalPeakGflops(dtypes.get(j)) * tp;
      t.append(String.format(Locale.ROOT, "%-7s %-30s %15.1f %14.1f %8.2f %14s %8s %9.1f %8.0f%%%n",
          dtypes.get(j).id(), k.length() > 30 ? k.substring(0, 30) : k, a, b, a / b,
          Double.isNaN(o) ? "-" : String.format(Locale.ROOT, "%.1f", o),
          Double.isNaN(o) ? "-" : String.format(Locale.ROOT, "%.2f", a / o), gf, 100 * gf / peak));
      rowsJson.add(String.format(Locale.ROOT, "{\"dtype\": \"%s\", \"kernel\": \"%s\", \"tp\": %d, "
          + "\"engine_rows_per_s\": %.1f, \"pytorch_rows_per_s\": %.1f, \"ratio\": %.3f, \"engine_runs\": %s, "
          + "\"pytorch_runs\": %s, \"ort_model\": %s, \"ort_threads\": %d, \"ort_rows_per_s\": %s, "
          + "\"ratio_vs_ort\": %s, \"ort_runs\": %s, \"engine_gflops\": %.1f, \"nominal_peak_gflops\": %.1f}",
          dtypes.get(j).id(), k, tp, a, b, a / b, Arrays.toString(ours[j]), Arrays.toString(peer[j]),
          ortModels[j] == null ? "null" : "\"" + ortModels[j] + "\"", ot, Double.isNaN(o) ? "null" : "" + o,
          Double.isNaN(o) ? "null" : "" + a / o, Arrays.toString(onnx[j]), gf, peak));
    }
    System.out.print(t);
    if (json != null) {
      Files.writeString(Path.of(json), String.format(Locale.ROOT, "{\"cpu\": \"%s\", \"load_average\": \"%s\", "
          + "\"d\": %d, \"ffn\": %d, \"rows\": %d, \"rows_per_step\": %d, \"repeats\": %d, \"results\": [%s]}%n",
          Benchmarks.cpuName(), Benchmarks.loadAverage(), d, ffn, rows, batch * tp, repeats,
          String.join(", ", rowsJson)), StandardCharsets.UTF_8);
    }
  }

  /** Rows per second of one run of the PyTorch peer. */
  private static double torch(String python, Path script, DType dt, int d, int ffn, int rows, int perStep, int tp)
      throws IOException, InterruptedException {
    ProcessBuilder pb = new ProcessBuilder(python, script.toString(), "--dtype", dt.id(), "--d", String.valueOf(d),
        "--ffn", String.valueOf(ffn), "--rows", String.valueOf(rows), "--rows-per-step", String.valueOf(perStep),
        "--tp", String.valueOf(tp), "--threads", "1");
    String blas = "/usr/lib/x86_64-linux-gnu/openblas-pthread";
    if (Files.isDirectory(Path.of(blas))) {
      pb.environment().put("LD_LIBRARY_PATH", blas);
    }
    pb.environment().put("OMP_NUM_THREADS", "1");
    pb.environment().put("OPENBLAS_NUM_THREADS", "1"); // OpenBLAS-pthread has its own pool: one thread per rank
    pb.redirectErrorStream(true);
    Process p = pb.start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    int code = p.waitFor();
    Matcher m = ROWS_PER_S.matcher(out);
    if (code != 0 || !m.find()) {
      throw new IllegalStateException("The PyTorch peer (" + python + " " + script.getFileName() + ") failed with exit "
          + "code " + code + " (it needs Debian's python3-torch): " + out.trim());
    }
    return Double.parseDouble(m.group(1));
  }


  private static double median(double[] v) {
    double[] s = v.clone();
    Arrays.sort(s);
    return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  }
}
