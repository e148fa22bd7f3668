package org.sparktp.bench;

import java.util.Map;
import java.io.BufferedReader;
import java.io.BufferedWriter;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.PrintStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.sparktp.backend.Backends;
import org.sparktp.TpConf;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.HostBuffers;
import org.sparktp.comm.tcp.TcpCommunicator;
import org.sparktp.comm.tcp.TcpOptions;
import org.sparktp.comm.tcp.TcpRendezvous;
import org.sparktp.backend.Tensor;

/**
 * Benchmark of the TCP communicator: starts {@code --ranks} (default 2) rank processes on loopback and
 * prints, for each message size, the raw TCP throughput between the processes of rank 0 and rank 1
 * (one socket, one direction, direct buffers) next to the bus bandwidth of the collectives, computed as
 * nccl-tests does: {@code busbw = bytes / seconds x 2(n-1)/n} for all-reduce, {@code x (n-1)/n} for
 * all-gather and reduce-scatter ({@code bytes} is the whole buffer: the all-reduce buffer, the gathered
 * output, the reduce-scatter input). Bandwidths are GB/s (10^9 bytes per second). Each figure is the
 * median over {@code --reps} timed repetitions (after one warm-up) of the slowest rank's time. The table
 * also shows, for reference, the raw duplex throughput (both processes sending to each other at once,
 * per direction), since ring collectives send and receive at the same time. Each repetition measures
 * raw TCP and then every collective over each transport ({@code tcp}: {@value TpConf#COMM_SHM}=off,
 * {@code shm}: the shared-memory data path), so that on a shared machine all see the same conditions.
 *
 * <pre>
 * mvn -q -pl spark-tp compile exec:java -Dexec.args="--sizes 1,8,64,256 --reps 5 --json bench.json"
 * java -cp "$(cat cp.txt):spark-tp/target/classes" org.sparktp.bench.CommBench --json bench.json
 * </pre>
 *
 * With {@code --master URL}: the collectives between a cluster's executors ({@link SparkCommBench}).
 *
 * <p>Options: {@code --ranks N}, {@code --sizes MiB,MiB,...}, {@code --reps K},
 * {@code --chunk-bytes B} ({@value TpConf#COMM_CHUNK_BYTES}), {@code --transports tcp,shm},
 * {@code --json FILE} (a list of
 * {@code {"op", "transport", "bytes", "ranks", "seconds", "busbw_gbps", "loopback_gbps"}}).
 */
public final class CommBench {
  private CommBench() {}

  private static final String[] OPS = {"all_reduce", "all_gather", "reduce_scatter"};

  public static void main(String[] args) throws Exception {
    List<String> a = Arrays.asList(args);
    if (a.contains("--worker")) {
      worker(args);
      return;
    }
    if (a.contains("--master")) {
      SparkCommBench.main(args); // between the executors of a cluster, as a job's ranks run
      return;
    }
    int ranks = Integer.parseInt(opt(args, "--ranks", "2"));
    String sizes = opt(args, "--sizes", "1,8,64,256");
    int reps = Integer.parseInt(opt(args, "--reps", "5"));
    String chunk = opt(args, "--chunk-bytes", TpConf.COMM_CHUNK_BYTES_DEFAULT);
    String json = opt(args, "--json", null);
    String transports = opt(args, "--transports", "tcp,shm");
    if (ranks < 2) {
      throw new IllegalArgumentException("--ranks must be at least 2 (raw throughput is measured between ranks 0 and 1)");
    }
    String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
    String cp = classPath();
    List<Process> procs = new ArrayList<>();
    List<BufferedReader> outs = new ArrayList<>();
    List<String> rows = new ArrayList<>();
    try {
      for (int r = 0; r < ranks; r++) {
        long maxMiB = Arrays.stream(sizes.split(",")).mapToLong(Long::parseLong).max().orElse(1);
        List<String> cmd = List.of(java, "-Xmx1g", "-XX:MaxDirectMemorySize=64m",
            "-Dorg.bytedeco.javacpp.maxBytes=" + (maxMiB * 4 + 256) + "m", "-Djava.net.preferIPv4Stack=true",
            "-cp", cp, CommBench.class.getName(), "--worker", "--rank", "" + r, "--ranks", "" + ranks,
            "--sizes", sizes, "--reps", "" + reps, "--chunk-bytes", chunk, "--transports", transports);
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT);
        pb.environment().put("OPENBLAS_NUM_THREADS", "1");
        Process p = pb.start();
        procs.add(p);
        outs.add(new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8)));
      }
      List<String> addrs = new ArrayList<>();
      List<String> shmAddrs = new ArrayList<>();
      String raw = null;
      for (int r = 0; r < ranks; r++) {
        String[] two = expect(outs.get(r), "ADDR ").split(" ");
        addrs.add(two[0]);
        shmAddrs.add(two[1]);
        if (r == 1) {
          raw = expect(outs.get(r), "RAW ");
        }
      }
      byte[] secret = new byte[32];
      new SecureRandom().nextBytes(secret);
      for (Process p : procs) {
        BufferedWriter w = new BufferedWriter(new OutputStreamWriter(p.getOutputStream(), StandardCharsets.UTF_8));
        w.write("SECRET " + HexFormat.of().formatHex(secret) + "\nPEERS " + String.join(",", addrs) + "\nPEERS "
            + String.join(",", shmAddrs) + "\nRAW " + raw + "\n");
        w.flush();
      }
      System.out.printf(Locale.ROOT, "CommBench: %d ranks (processes) on loopback, %s, chunk %s, median of %d%n",
          ranks, System.getProperty("java.vm.name") + " " + System.getProperty("java.version"), chunk, reps);
      System.out.printf(Locale.ROOT, "%-15s %-9s %8s %10s %11s %10s %10s %16s%n", "op", "transport", "MiB", "ms",
          "busbw GB/s", "raw GB/s", "busbw/raw", "raw duplex GB/s");
      String line;
      while ((line = outs.get(0).readLine()) != null) {
        if (!line.startsWith("RESULT ")) {
          continue;
        }
        String[] f = line.substring(7).split(" ");
        String transport = f[1];
        long bytes = Long.parseLong(f[2]);
        double sec = Double.parseDouble(f[4]);
        double bus = Double.parseDouble(f[5]);
        double rawBw = Double.parseDouble(f[6]);
        double duplex = Double.parseDouble(f[7]);
        System.out.printf(Locale.ROOT, "%-15s %-9s %8d %10.2f %11.3f %10.3f %10.2f %16.3f%n", f[0], transport,
            bytes >> 20, sec * 1e3, bus, rawBw, bus / rawBw, duplex);
        rows.add(String.format(Locale.ROOT,
            "{\"op\": \"%s\", \"transport\": \"%s\", \"bytes\": %d, \"ranks\": %s, \"seconds\": %.6f, "
            + "\"busbw_gbps\": %.4f, \"loopback_gbps\": %.4f}", f[0], transport, bytes, f[3], sec, bus, rawBw));
      }
      for (Process p : procs) {
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
          throw new IllegalStateException("A rank process did not exit");
        }
        if (p.exitValue() != 0) {
          throw new IllegalStateException("A rank process failed with exit code " + p.exitValue() + " (see its stderr)");
        }
      }
    } finally {
      for (Process p : procs) {
        p.destroyForcibly();
      }
    }
    if (json != null) {
      Files.writeString(Path.of(json), "[\n  " + String.join(",\n  ", rows) + "\n]\n");
      System.out.println("Wrote " + json);
    }
  }

  private static String expect(BufferedReader in, String prefix) throws IOException {
    String line;
    while ((line = in.readLine()) != null) {
      if (line.startsWith(prefix)) {
        return line.substring(prefix.length()).trim();
      }
    }
    throw new IllegalStateException("A rank process ended before printing " + prefix.trim());
  }

  /** The class path of this program, including the URLs of a class loader (as under {@code mvn exec:java}). */
  private static String classPath() {
    Set<String> parts = new LinkedHashSet<>();
    for (ClassLoader cl = CommBench.class.getClassLoader(); cl != null; cl = cl.getParent()) {
      if (cl instanceof URLClassLoader u) {
        for (URL url : u.getURLs()) {
          if ("file".equals(url.getProtocol())) {
            try {
              parts.add(new File(url.toURI()).getPath());
            } catch (java.net.URISyntaxException e) {
              parts.add(url.getPath());
            }
          }
        }
      }
    }
    parts.addAll(Arrays.asList(System.getProperty("java.class.path").split(File.pathSeparator)));
    return String.join(File.pathSeparator, parts);
  }

  static String opt(String[] args, String name, String def) {
    for (int i = 0; i + 1 < args.length; i++) {
      if (args[i].equals(name)) {
        return args[i + 1];
      }
    }
    return def;
  }

  // ------------------------------------------------------------------------------------------------

  private static void worker(String[] args) throws Exception {
    int rank = Integer.parseInt(opt(args, "--rank", "0"));
    int ranks = Integer.parseInt(opt(args, "--ranks", "2"));
    int reps = Integer.parseInt(opt(args, "--reps", "5"));
    int chunk = (int) TpConf.parseBytes("--chunk-bytes", opt(args, "--chunk-bytes", TpConf.COMM_CHUNK_BYTES_DEFAULT));
    long[] sizesMiB = Arrays.stream(opt(args, "--sizes", "1,8,64,256").split(",")).mapToLong(Long::parseLong).toArray();
    String[] transports = opt(args, "--transports", "tcp,shm").split(",");
    for (String t : transports) {
      if (!t.equals("tcp") && !t.equals("shm")) {
        throw new IllegalArgumentException("--transports: expected tcp and/or shm, got '" + t + "'");
      }
    }
    PrintStream out = System.out;
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    InetAddress lo = InetAddress.getLoopbackAddress();
    try (CpuBackend backend = (CpuBackend) Backends.create("cpu", Map.of(), -1);
        TcpRendezvous rv = TcpRendezvous.bind(lo);
        TcpRendezvous rvShm = TcpRendezvous.bind(lo);
        ServerSocketChannel rawServer = ServerSocketChannel.open()) {
      out.println("ADDR " + rv.address() + " " + rvShm.address());
      if (rank == 1) {
        rawServer.bind(new InetSocketAddress(lo, 0));
        InetSocketAddress a = (InetSocketAddress) rawServer.getLocalAddress();
        out.println("RAW " + a.getAddress().getHostAddress() + ":" + a.getPort());
      }
      out.flush();
      byte[] secret = HexFormat.of().parseHex(field(in.readLine(), "SECRET "));
      List<String> peers = Arrays.asList(field(in.readLine(), "PEERS ").split(","));
      List<String> shmPeers = Arrays.asList(field(in.readLine(), "PEERS ").split(","));
      InetSocketAddress rawAddr = TcpRendezvous.parse(field(in.readLine(), "RAW "));
      TcpOptions opts = TcpOptions.withSecret(secret).withChunkBytes(chunk).withTimeoutMillis(120_000);
      try (TcpCommunicator tcpComm = rv.connect(rank, peers, opts.withShm(false));
          TcpCommunicator shmComm = rvShm.connect(rank, shmPeers, opts.withShm(true));
          SocketChannel raw = rank == 0 ? SocketChannel.open(rawAddr) : rank == 1 ? rawServer.accept() : null) {
        long maxBytes = Arrays.stream(sizesMiB).max().orElse(1) << 20;
        int maxElems = (int) (maxBytes / 4);
        if (Arrays.asList(transports).contains("shm") && !shmComm.transport().equals("shm")) {
          throw new IllegalStateException("The shared-memory path is not available here (see the log)");
        }
        TcpCommunicator comm = tcpComm;
        try (Tensor a = backend.allocate(1, maxElems); Tensor b = backend.allocate(1, maxElems)) {
          fill(a, rank);
          for (long mib : sizesMiB) {
            long bytes = mib << 20;
            int n = (int) (bytes / 4);
            int[] counts = new int[ranks];
            int base = n / ranks;
            for (int r = 0; r < ranks; r++) {
              counts[r] = base + (r < n % ranks ? 1 : 0);
            }
            // Each repetition measures raw TCP (between the processes of ranks 0 and 1) and then every
            // collective, so that both see the same conditions on a shared machine.
            double[] rawT = new double[reps];
            double[] duplexT = new double[reps];
            double[][][] opT = new double[transports.length][OPS.length][reps];
            ByteBuffer ab = HostBuffers.bytes(a).slice(0, (int) bytes);
            ByteBuffer bb = HostBuffers.bytes(b).slice(0, (int) bytes);
            for (int i = -1; i < reps; i++) {
              comm.barrier();
              double rt = rank <= 1 ? rawOnce(raw, rank, ab) : 0;
              double dt2 = rank <= 1 ? duplexOnce(raw, ab, bb) : 0;
              if (i >= 0) {
                rawT[i] = rt;
                duplexT[i] = dt2;
              }
              for (int tr = 0; tr < transports.length; tr++) {
                TcpCommunicator c = transports[tr].equals("shm") ? shmComm : tcpComm;
                for (int k = 0; k < OPS.length; k++) {
                  c.barrier();
                  long t0 = System.nanoTime();
                  switch (OPS[k]) {
                    case "all_reduce" -> c.allReduce(view(a, n));
                    case "all_gather" -> c.allGather(view(b, counts[rank]), view(a, n), counts);
                    default -> c.reduceScatter(view(a, n), counts, view(b, counts[rank]));
                  }
                  long dt = System.nanoTime() - t0;
                  long slowest = Arrays.stream(c.allGatherLong(dt)).max().orElse(dt);
                  if (i >= 0) {
                    opT[tr][k][i] = slowest / 1e9;
                  }
                  if (OPS[k].equals("all_reduce")) {
                    fill(a, rank); // keep the values bounded
                  }
                }
              }
            }
            double rawGbps = rank == 0 ? bytes / median(rawT) / 1e9 : 0;
            double duplexGbps = rank == 0 ? bytes / median(duplexT) / 1e9 : 0;
            for (int k = 0; k < OPS.length; k++) {
              for (int tr = 0; tr < transports.length; tr++) {
                String op = OPS[k];
                double sec = median(opT[tr][k]);
                double factor = op.equals("all_reduce") ? 2.0 * (ranks - 1) / ranks : (ranks - 1.0) / ranks;
                double busbw = bytes / sec * factor / 1e9;
                if (rank == 0) {
                  out.printf(Locale.ROOT, "RESULT %s %s %d %d %.6f %.4f %.4f %.4f%n", op, transports[tr], bytes, ranks,
                      sec, busbw, rawGbps, duplexGbps);
                  out.flush();
                }
              }
            }
          }
        }
      }
    }
  }

  static double median(double[] t) {
    double[] s = t.clone();
    Arrays.sort(s);
    return s.length % 2 == 1 ? s[s.length / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  }

  /** A {@code [1, n]} view of the first {@code n} elements of a {@code [1, N]} tensor. */
  static Tensor view(Tensor t, int n) {
    return t.reshape(t.cols(), 1).rows(0, n).reshape(1, n);
  }

  private static void fill(Tensor t, int rank) {
    java.nio.FloatBuffer f = HostBuffers.floats(t);
    Random rnd = new Random(rank + 1);
    for (int i = 0; i < f.capacity(); i++) {
      f.put(i, rnd.nextFloat() - 0.5f);
    }
  }

  /** Rank 0 sends {@code buf} to rank 1, which answers one byte; the seconds it took. */
  private static double rawOnce(SocketChannel ch, int rank, ByteBuffer buf) throws IOException {
    ByteBuffer ack = ByteBuffer.allocateDirect(1);
    ByteBuffer b = buf.duplicate().clear();
    long t0 = System.nanoTime();
    if (rank == 0) {
      while (b.hasRemaining()) {
        ch.write(b);
      }
      while (ack.hasRemaining()) {
        if (ch.read(ack) < 0) {
          throw new IOException("raw peer closed");
        }
      }
    } else {
      while (b.hasRemaining()) {
        if (ch.read(b) < 0) {
          throw new IOException("raw peer closed");
        }
      }
      ch.write(ack);
    }
    return (System.nanoTime() - t0) / 1e9;
  }

  /**
   * Both processes send {@code out} to each other at once (a writer thread each) and read into
   * {@code in}; the seconds it took (per-direction throughput = bytes / seconds).
   */
  private static double duplexOnce(SocketChannel ch, ByteBuffer out, ByteBuffer in) throws Exception {
    ByteBuffer o = out.duplicate().clear();
    ByteBuffer r = in.duplicate().clear();
    IOException[] err = new IOException[1];
    long t0 = System.nanoTime();
    Thread w = new Thread(() -> {
      try {
        while (o.hasRemaining()) {
          ch.write(o);
        }
      } catch (IOException e) {
        err[0] = e;
      }
    });
    w.start();
    while (r.hasRemaining()) {
      if (ch.read(r) < 0) {
        throw new IOException("raw peer closed");
      }
    }
    w.join();
    if (err[0] != null) {
      throw err[0];
    }
    return (System.nanoTime() - t0) / 1e9;
  }

  private static String field(String line, String prefix) {
    if (line == null || !line.startsWith(prefix)) {
      throw new IllegalStateException("Expected '" + prefix.trim() + " ...' on stdin, got " + line);
    }
    return line.substring(prefix.length()).trim();
  }
}
