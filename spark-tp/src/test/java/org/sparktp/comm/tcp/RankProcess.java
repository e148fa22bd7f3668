package org.sparktp.comm.tcp;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.backend.Tensor;

/**
 * One rank as its own JVM, for {@link TcpProcessTest}. Prints {@code ADDR host:port}, reads
 * {@code SECRET hex}, {@code PEERS a,b,...} and {@code SEED n} from stdin, connects, runs a scenario:
 * {@code check} (every collective against a float64 reference computed from every rank's seeded data;
 * prints {@code PASS transport} or {@code FAIL why}) or {@code loop} (all-reduce until it fails; prints
 * {@code RUNNING transport} after the first, then {@code FAILED message}). A fourth argument {@code off}
 * sets {@code spark.tp.comm.shm=off}.
 */
public final class RankProcess {
  private RankProcess() {}

  public static void main(String[] args) throws Exception {
    int rank = Integer.parseInt(args[0]);
    int size = Integer.parseInt(args[1]);
    String scenario = args[2];
    boolean shm = args.length < 4 || !args[3].equals("off");
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    try (CpuBackend backend = new CpuBackend(); TcpRendezvous rv = TcpRendezvous.bind(InetAddress.getLoopbackAddress())) {
      System.out.println("ADDR " + rv.address());
      System.out.flush();
      byte[] secret = HexFormat.of().parseHex(in.readLine().substring(7));
      List<String> peers = Arrays.asList(in.readLine().substring(6).split(","));
      long seed = Long.parseLong(in.readLine().substring(5));
      TcpOptions opts = TcpOptions.withSecret(secret).withTimeoutMillis(60_000).withChunkBytes(64 << 10).withShm(shm);
      try (TcpCommunicator comm = rv.connect(rank, peers, opts)) {
        if (scenario.equals("check")) {
          String why = check(comm, backend, seed);
          System.out.println(why == null ? "PASS " + comm.transport() : "FAIL " + why);
        } else {
          loop(comm, backend, seed);
        }
      }
    } catch (Throwable t) {
      System.out.println("FAIL " + t);
      t.printStackTrace();
    }
    System.out.flush();
  }

  static float[] data(long seed, int rank, int salt, int n) {
    Random rnd = new Random(seed * 1_000_003L + rank * 7919L + salt);
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  private static String compare(String what, float[] got, double[] ref) {
    double max = 0;
    for (double v : ref) {
      max = Math.max(max, Math.abs(v));
    }
    double tol = 1e-5 * Math.max(max, 1e-30);
    if (got.length < ref.length) {
      return what + ": " + got.length + " elements, expected " + ref.length;
    }
    for (int i = 0; i < ref.length; i++) {
      if (Math.abs(got[i] - ref[i]) > tol) {
        return what + ": element " + i + " is " + got[i] + ", expected " + ref[i];
      }
    }
    return null;
  }

  private static String check(TcpCommunicator c, CpuBackend be, long seed) {
    int p = c.size();
    int r = c.rank();
    // all-reduce, uneven length (not a multiple of p, several 64 KiB chunks)
    int n = 100_003;
    double[] ref = new double[n];
    for (int q = 0; q < p; q++) {
      float[] d = data(seed, q, 1, n);
      for (int i = 0; i < n; i++) {
        ref[i] += d[i];
      }
    }
    String bad;
    try (Tensor t = be.upload(data(seed, r, 1, n), 1, n)) {
      c.allReduce(t);
      if ((bad = compare("allReduce", be.download(t), ref)) != null) {
        return bad;
      }
    }
    // all-gather and reduce-scatter with uneven counts (one empty block)
    int[] counts = new int[p];
    for (int q = 0; q < p; q++) {
      counts[q] = q == 1 ? 0 : 20_000 + 37 * q;
    }
    int total = Arrays.stream(counts).sum();
    long[] off = org.sparktp.comm.Collectives.offsets(counts);
    double[] gathered = new double[total];
    for (int q = 0; q < p; q++) {
      float[] d = data(seed, q, 2, counts[q]);
      for (int i = 0; i < counts[q]; i++) {
        gathered[(int) off[q] + i] = d[i];
      }
    }
    try (Tensor s = be.upload(data(seed, r, 2, counts[r]), 1, counts[r]); Tensor out = be.allocate(1, total)) {
      c.allGather(s, out, counts);
      if ((bad = compare("allGather", be.download(out), gathered)) != null) {
        return bad;
      }
    }
    double[] mine = new double[counts[r]];
    for (int q = 0; q < p; q++) {
      float[] d = data(seed, q, 3, total);
      for (int i = 0; i < counts[r]; i++) {
        mine[i] += d[(int) off[r] + i];
      }
    }
    try (Tensor s = be.upload(data(seed, r, 3, total), 1, total); Tensor out = be.allocate(1, Math.max(1, counts[r]))) {
      c.reduceScatter(s, counts, out);
      if ((bad = compare("reduceScatter", be.download(out), mine)) != null) {
        return bad;
      }
    }
    // all-to-all: rank s sends 1000 * (s + 1) + d elements to rank d
    int[] send = new int[p];
    int[] recv = new int[p];
    for (int q = 0; q < p; q++) {
      send[q] = 1000 * (r + 1) + q;
      recv[q] = 1000 * (q + 1) + r;
    }
    double[] expected = new double[Arrays.stream(recv).sum()];
    int pos = 0;
    for (int q = 0; q < p; q++) {
      float[] d = data(seed, q, 4, 1000 * (q + 1) * p + p * (p - 1) / 2);
      int start = 0;
      for (int k = 0; k < r; k++) {
        start += 1000 * (q + 1) + k;
      }
      for (int i = 0; i < recv[q]; i++) {
        expected[pos++] = d[start + i];
      }
    }
    int st = Arrays.stream(send).sum();
    try (Tensor s = be.upload(data(seed, r, 4, st), 1, st); Tensor out = be.allocate(1, expected.length)) {
      c.allToAll(s, send, out, recv);
      if ((bad = compare("allToAll", be.download(out), expected)) != null) {
        return bad;
      }
    }
    // broadcast from the last rank
    float[] root = data(seed, p - 1, 5, 70_001);
    try (Tensor t = be.upload(data(seed, r, 5, 70_001), 1, 70_001)) {
      c.broadcast(t, p - 1);
      if (!Arrays.equals(be.download(t), root)) {
        return "broadcast differs from the root's buffer";
      }
    }
    long[] all = c.allGatherLong(r * 11L);
    for (int q = 0; q < p; q++) {
      if (all[q] != q * 11L) {
        return "allGatherLong: " + Arrays.toString(all);
      }
    }
    c.barrier();
    return null;
  }

  private static void loop(TcpCommunicator c, CpuBackend be, long seed) {
    int n = 4 << 20; // 16 MiB
    float[] fresh = data(seed, c.rank(), 9, n);
    try (Tensor t = be.upload(fresh, 1, n)) {
      boolean announced = false;
      while (true) {
        try {
          c.allReduce(t);
          org.sparktp.comm.HostBuffers.floats(t).put(0, fresh); // fresh random data again, values stay bounded
        } catch (RuntimeException e) {
          System.out.println("FAILED " + e.getMessage().replace('\n', ' '));
          return;
        }
        if (!announced) {
          System.out.println("RUNNING " + c.transport());
          System.out.flush();
          announced = true;
        }
      }
    }
  }
}
