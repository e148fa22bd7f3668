package org.sparktp.bench;

import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.TreeSet;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.sql.SparkSession;
import org.sparktp.backend.Backends;
import org.sparktp.backend.Tensor;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.HostBuffers;
import org.sparktp.comm.tcp.TcpCommunicator;
import org.sparktp.spark.CommSecret;
import org.sparktp.spark.SparkRendezvous;

/**
 * The collectives between the executors of a Spark cluster ({@code bench comm --master spark://...}): one barrier
 * stage of {@code --ranks} tasks makes a {@link TcpCommunicator} the way a tensor-parallel job does
 * ({@link SparkRendezvous}: each task listens on its executor's address), then times all-reduce and all-gather for
 * each message size, from decode-sized messages (bytes to KiB, where latency rules) to MiB (bandwidth). Each figure
 * is the median over {@code --reps} repetitions (after 3 warm-ups) of the slowest rank's time; bus bandwidth as
 * nccl-tests computes it ({@code bytes / s x 2(n-1)/n} for all-reduce, {@code x (n-1)/n} for all-gather). The table
 * names the hosts the ranks ran on and the data path (tcp, or shm when every rank is on one host).
 *
 * <pre>
 * bin/spark-tp bench comm --master spark://10.213.0.1:7077 [--ranks 3] [--sizes 64,1K,8K,64K,1M,8M] [--reps 30]
 *     [--json FILE]
 * </pre>
 */
public final class SparkCommBench {
  private static final String[] OPS = {"all_reduce", "all_gather"};

  private SparkCommBench() {}

  public static void main(String[] args) throws IOException {
    String master = CommBench.opt(args, "--master", null);
    int ranks = Integer.parseInt(CommBench.opt(args, "--ranks", "2"));
    long[] sizes = Arrays.stream(CommBench.opt(args, "--sizes", "64,1K,8K,64K,1M,8M").split(","))
        .mapToLong(SparkCommBench::bytes).toArray();
    int reps = Integer.parseInt(CommBench.opt(args, "--reps", "30"));
    String json = CommBench.opt(args, "--json", null);
    if (ranks < 2) {
      throw new IllegalArgumentException("--ranks must be at least 2, got " + ranks);
    }
    SparkSession spark = SparkSession.builder().master(master).appName("spark-tp bench comm")
        .config("spark.ui.enabled", "false").getOrCreate();
    try {
      JavaSparkContext jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
      CommSecret secret = CommSecret.forJob(spark.sparkContext());
      List<Integer> idx = new ArrayList<>();
      for (int i = 0; i < ranks; i++) {
        idx.add(i);
      }
      scala.Function1<scala.collection.Iterator<Integer>, scala.collection.Iterator<String>> task =
          (scala.Function1<scala.collection.Iterator<Integer>, scala.collection.Iterator<String>>
              & java.io.Serializable) it -> scala.jdk.javaapi.CollectionConverters.asScala(run(secret, sizes, reps));
      List<String> results = Arrays.asList((String[]) jsc.parallelize(idx, ranks).rdd().barrier()
          .mapPartitions(task, false, scala.reflect.ClassTag$.MODULE$.apply(String.class)).collect());
      report(System.out, results, ranks, json);
    } finally {
      spark.stop();
    }
  }

  /** Runs in each task: every op and size; rank 0 returns one line per (op, size) and one line per host. */
  private static Iterator<String> run(CommSecret secret, long[] sizes, int reps) {
    BarrierTaskContext ctx = BarrierTaskContext.get();
    List<String> out = new ArrayList<>();
    long max = Arrays.stream(sizes).max().orElse(1);
    int maxElems = (int) Math.max(1, max / 4);
    try (TcpCommunicator comm = SparkRendezvous.connect(ctx, secret);
        CpuBackend be = (CpuBackend) Backends.create("cpu", Map.of(), -1);
        Tensor a = be.allocate(1, maxElems);
        Tensor b = be.allocate(1, maxElems)) {
      int n = comm.size();
      int rank = comm.rank();
      String address = ctx.getTaskInfos()[ctx.partitionId()].address();
      String host = address.contains(":") ? address.substring(0, address.lastIndexOf(':')) : address;
      for (String h : ctx.allGather(host)) {
        if (rank == 0) {
          out.add("HOST " + h);
        }
      }
      if (rank == 0) {
        out.add("PATH " + comm.transport());
      }
      java.nio.FloatBuffer f = HostBuffers.floats(a);
      for (long bytes : sizes) {
        int elems = (int) Math.max(n, bytes / 4);
        int[] counts = new int[n];
        for (int r = 0; r < n; r++) {
          counts[r] = elems / n + (r < elems % n ? 1 : 0);
        }
        for (int k = 0; k < OPS.length; k++) {
          double[] t = new double[reps];
          for (int i = -3; i < reps; i++) {
            for (int j = 0; j < elems; j++) {
              f.put(j, (j % 7) * 0.25f - rank);
            }
            comm.barrier();
            long t0 = System.nanoTime();
            if (k == 0) {
              comm.allReduce(CommBench.view(a, elems));
            } else {
              comm.allGather(CommBench.view(b, counts[rank]), CommBench.view(a, elems), counts);
            }
            long dt = System.nanoTime() - t0;
            long slowest = Arrays.stream(comm.allGatherLong(dt)).max().orElse(dt);
            if (i >= 0) {
              t[i] = slowest / 1e9;
            }
          }
          if (rank == 0) {
            out.add(String.format(Locale.ROOT, "RESULT %s %d %.9f", OPS[k], elems * 4L, CommBench.median(t)));
          }
        }
      }
    }
    return out.iterator();
  }

  private static void report(PrintStream ps, List<String> lines, int ranks, String json) throws IOException {
    TreeSet<String> hosts = new TreeSet<>();
    String path = "?";
    StringBuilder js = new StringBuilder("[");
    List<String[]> rows = new ArrayList<>();
    for (String l : lines) {
      if (l.startsWith("HOST ")) {
        hosts.add(l.substring(5));
      } else if (l.startsWith("PATH ")) {
        path = l.substring(5);
      } else {
        rows.add(l.split(" "));
      }
    }
    ps.printf(Locale.ROOT, "bench comm: %d ranks on %d host(s) %s, data path %s, median of the slowest rank%n",
        ranks, hosts.size(), hosts, path);
    ps.printf(Locale.ROOT, "%-12s %12s %14s %14s%n", "op", "bytes", "latency us", "busbw GB/s");
    for (String[] r : rows) {
      String op = r[1];
      long bytes = Long.parseLong(r[2]);
      double sec = Double.parseDouble(r[3]);
      double factor = op.equals("all_reduce") ? 2.0 * (ranks - 1) / ranks : (ranks - 1.0) / ranks;
      double busbw = bytes / sec * factor / 1e9;
      ps.printf(Locale.ROOT, "%-12s %12d %14.1f %14.4f%n", op, bytes, sec * 1e6, busbw);
      js.append(js.length() > 1 ? "," : "").append(String.format(Locale.ROOT,
          "{\"op\":\"%s\",\"transport\":\"%s\",\"bytes\":%d,\"ranks\":%d,\"hosts\":%d,\"seconds\":%.9f,"
              + "\"busbw_gbps\":%.6f}", op, path, bytes, ranks, hosts.size(), sec, busbw));
    }
    if (json != null) {
      Files.writeString(Path.of(json), js.append("]\n").toString(), StandardCharsets.UTF_8);
    }
  }

  /** {@code 64}, {@code 8K}, {@code 1M}: bytes. */
  static long bytes(String s) {
    String t = s.trim().toUpperCase(Locale.ROOT);
    long unit = t.endsWith("K") ? 1024 : t.endsWith("M") ? 1024 * 1024 : 1;
    return Long.parseLong(unit == 1 ? t : t.substring(0, t.length() - 1)) * unit;
  }
}
