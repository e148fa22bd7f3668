package org.sparktp.bench;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import java.io.IOException;
import java.io.InputStream;
import java.nio.FloatBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The ONNX Runtime peer (Java, {@code com.microsoft.onnxruntime:onnxruntime} from Maven Central, benchmarks only):
 * one session over a model exported by the committed {@code tools/export_onnx_peers.py} (packed next to this class),
 * f32 ({@code torch.onnx.export}) or ORT's dynamic int8 ({@code DynamicQuantizeLinear} + {@code MatMulInteger}),
 * {@code threads} intra-op threads (ORT's own pool), one inter-op thread, every graph optimization on.
 */
final class OrtPeer implements AutoCloseable {
  private static final Pattern PATH = Pattern.compile("\"(f32|int8)\": \"([^\"]+)\"");

  private final OrtEnvironment env = OrtEnvironment.getEnvironment();
  private final OrtSession session;
  private final String input;

  OrtPeer(Path model, int threads) throws OrtException {
    try (OrtSession.SessionOptions o = new OrtSession.SessionOptions()) {
      o.setIntraOpNumThreads(threads);
      o.setInterOpNumThreads(1);
      o.setOptimizationLevel(OrtSession.SessionOptions.OptLevel.ALL_OPT);
      session = env.createSession(model.toString(), o);
    }
    input = session.getInputNames().iterator().next();
  }

  /** Seconds of one forward pass over {@code x [rows, cols]} (f32). */
  double run(float[] x, int rows, int cols) throws OrtException {
    try (OnnxTensor t = OnnxTensor.createTensor(env, FloatBuffer.wrap(x), new long[] {rows, cols})) {
      long t0 = System.nanoTime();
      try (OrtSession.Result r = session.run(Map.of(input, t))) {
        return (System.nanoTime() - t0) / 1e9;
      }
    }
  }

  /** Seconds of one forward pass over token ids {@code [batch, seq]} (int64). */
  double runIds(long[] ids, int batch, int seq) throws OrtException {
    try (OnnxTensor t = OnnxTensor.createTensor(env, java.nio.LongBuffer.wrap(ids), new long[] {batch, seq})) {
      long t0 = System.nanoTime();
      try (OrtSession.Result r = session.run(Map.of(input, t))) {
        return (System.nanoTime() - t0) / 1e9;
      }
    }
  }

  /** A body that may throw. */
  @FunctionalInterface
  interface Body<T> {
    T run() throws Exception;
  }

  /**
   * Runs {@code body} on a thread with a 256 MiB stack and returns its result: ONNX Runtime's native initialisation
   * overflowed the default 1 MiB Java thread stack here (a SIGSEGV without hs_err, with the bench's long class
   * path; fine with -Xss16m), so every ONNX Runtime call of the benchmarks goes through this.
   */
  static <T> T onBigStack(Body<T> body) throws Exception {
    Object[] result = new Object[1];
    Throwable[] failed = new Throwable[1];
    Thread t = new Thread(null, () -> {
      try {
        result[0] = body.run();
      } catch (Throwable e) {
        failed[0] = e;
      }
    }, "onnxruntime-peer", 256L << 20);
    t.start();
    t.join();
    if (failed[0] instanceof Exception e) {
      throw e;
    } else if (failed[0] != null) {
      throw new IllegalStateException(failed[0]);
    }
    @SuppressWarnings("unchecked")
    T r = (T) result[0];
    return r;
  }

  @Override
  public void close() throws OrtException {
    session.close();
  }

  /**
   * Exports (once per shape: kept in {@code dir}) the f32 and int8 ONNX models of {@code args} (the flags of
   * {@code tools/export_onnx_peers.py}) and returns their paths, {f32, int8}.
   */
  static Path[] export(String python, Path dir, String... args) throws IOException, InterruptedException {
    Path tmp = Files.createTempDirectory("onnx-peer-tools");
    try {
      for (String f : new String[] {"export_onnx_peers.py", "peer_transformer.py"}) {
        try (InputStream in = OrtPeer.class.getResourceAsStream(f)) {
          if (in == null) {
            throw new IllegalStateException(f + " is not packed next to OrtPeer in the bench jar");
          }
          Files.write(tmp.resolve(f), in.readAllBytes());
        }
      }
      String[] cmd = new String[args.length + 5];
      cmd[0] = python;
      cmd[1] = tmp.resolve("export_onnx_peers.py").toString();
      System.arraycopy(args, 0, cmd, 2, args.length);
      cmd[args.length + 2] = "--out";
      cmd[args.length + 3] = dir.toString();
      cmd[args.length + 4] = "--seed=0";
      ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
      pb.environment().put("OMP_NUM_THREADS", "1");
      Process p = pb.start();
      String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
      int code = p.waitFor();
      Path[] got = new Path[2];
      Matcher m = PATH.matcher(out);
      while (m.find()) {
        got[m.group(1).equals("f32") ? 0 : 1] = Path.of(m.group(2));
      }
      if (code != 0 || got[0] == null || got[1] == null) {
        throw new IllegalStateException("tools/export_onnx_peers.py failed with exit code " + code + " (it needs "
            + "Debian's python3-torch and python3-onnx): " + out.trim());
      }
      return got;
    } finally {
      for (String f : new String[] {"export_onnx_peers.py", "peer_transformer.py"}) {
        Files.deleteIfExists(tmp.resolve(f));
      }
      Files.deleteIfExists(tmp);
    }
  }
}
