package org.sparktp.comm.tcp;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ThreadLocalRandom;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.shard.Split;
import org.sparktp.backend.Tensor;

/**
 * Every collective of {@link TcpCommunicator} against {@link LocalCommunicator} (the in-process
 * reference) for p = 1..4, with uneven counts, empty blocks and messages of many chunks. Sums are
 * compared with |tcp - ref| <= 1e-5 * max|ref| (different summation order); allReduce must also be
 * bitwise identical on every rank.
 */
class TcpCommunicatorTest {
  private final long seed = ThreadLocalRandom.current().nextLong();

  /** The options of the groups under test: here TCP only ({@code spark.tp.comm.shm=off}). */
  TcpOptions opts() {
    return TcpGroup.options().withShm(false);
  }

  /** The transport the groups must use. */
  String transport() {
    return "tcp";
  }
  private CpuBackend backend;

  @BeforeEach
  void open() {
    backend = new CpuBackend();
  }

  @AfterEach
  void close() throws InterruptedException {
    backend.close(); // throws if a tensor leaked
    TcpGroup.assertNoCommThreads();
  }

  private float[] random(int rank, int salt, int n) {
    Random rnd = new Random(seed * 31 + rank * 1_000_003L + salt);
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  /** The same per-rank body on the in-process group and on a TCP group; returns {local, tcp} results. */
  private List<List<float[]>> both(int p, TcpGroup.Body<float[]> body) throws Exception {
    List<float[]> local = LocalCommunicator.run(p, 20_000, r -> body::run);
    List<float[]> tcp;
    try (TcpGroup g = TcpGroup.connect(p, opts())) {
      for (TcpCommunicator c : g.comms) {
        assertThat(c.transport()).isEqualTo(p == 1 ? "tcp" : transport());
      }
      tcp = g.run(body);
    }
    return List.of(local, tcp);
  }

  private void assertClose(float[] actual, float[] expected, String what) {
    assertThat(actual.length).as(what).isEqualTo(expected.length);
    float max = 0;
    for (float v : expected) {
      max = Math.max(max, Math.abs(v));
    }
    // relative to the larger of the result and the inputs' scale (N(0, 1) values): a sum of p inputs may
    // cancel to a tiny element, whose rounding error is still that of the inputs (a sum in another order)
    float tol = 1e-5f * Math.max(max, 1f);
    for (int i = 0; i < expected.length; i++) {
      if (Math.abs(actual[i] - expected[i]) > tol) {
        throw new AssertionError(what + ": element " + i + " is " + actual[i] + ", expected " + expected[i]
            + " (tolerance " + tol + ", seed " + seed + ")");
      }
    }
  }

  private float[] download(Tensor t) {
    return backend.download(t);
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {1, 2, 3, 4})
  void allReduceMatchesInProcessAndIsIdenticalOnEveryRank(int p) throws Exception {
    for (int n : new int[] {1, 3, 1000, 12_345}) { // 12,345 floats = 13 chunks of 4 KiB, not divisible by p
      List<List<float[]>> res = both(p, c -> {
        try (Tensor t = backend.upload(random(c.rank(), n, n), 1, n)) {
          c.allReduce(t);
          return download(t);
        }
      });
      for (int r = 0; r < p; r++) {
        assertClose(res.get(1).get(r), res.get(0).get(r), "allReduce n=" + n + " rank " + r);
        assertThat(res.get(1).get(r)).as("bitwise identical on every rank").isEqualTo(res.get(1).get(0));
      }
    }
  }

  /**
   * bf16 partial sums are accumulated in f32 and rounded once: at p = 3, 1 + 2^-8 + 2^-8 is 1 + 2^-7 (a bf16
   * value), while rounding at each hop of a ring could give 1 (1 + 2^-8 is a tie that rounds to even, 1).
   */
  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {2, 3})
  void bf16ReductionsAccumulateInF32AndRoundOnce(int p) throws Exception {
    int n = 1001;
    List<List<float[]>> res = both(p, c -> {
      float[] v = new float[n];
      java.util.Arrays.fill(v, c.rank() == 0 ? 1f : (float) (Math.pow(2, -7) / (p - 1)));
      try (Tensor f = backend.upload(v, 1, n); Tensor t = backend.convert(f, org.sparktp.tensor.DType.BF16)) {
        c.allReduce(t);
        assertThat(t.dtype()).isEqualTo(org.sparktp.tensor.DType.BF16);
        int[] counts = Split.balanced(n, p).lengths();
        try (Tensor out = backend.allocate(1, counts[c.rank()], org.sparktp.tensor.DType.BF16)) {
          c.reduceScatter(t, counts, out);
          float[] a = download(t);
          float[] b = download(out);
          float[] both = java.util.Arrays.copyOf(a, a.length + b.length);
          System.arraycopy(b, 0, both, a.length, b.length);
          return both;
        }
      }
    });
    float once = 1f + (float) Math.pow(2, -7);
    for (List<float[]> group : res) {
      for (int r = 0; r < p; r++) {
        float[] got = group.get(r);
        for (int i = 0; i < n; i++) {
          assertThat(got[i]).as("all-reduce element %d on rank %d", i, r).isEqualTo(once);
        }
        for (int i = n; i < got.length; i++) {
          // p copies of 1 + 2^-7: 2.015625 (exact) for p = 2; 3.0234375 = 1.10000011b x 2 for p = 3, a tie
          // between bf16 neighbours 3.015625 and 3.03125, which rounds to even (3.03125)
          assertThat(got[i]).as("reduce-scatter element on rank %d", r).isEqualTo(p == 2 ? 2.015625f : 3.03125f);
        }
      }
    }
  }

  /**
   * All-gather, all-to-all and broadcast only move elements: bf16 tensors move in their own 2 bytes (half the
   * bytes of f32 on the wire), exactly (the result is bit-identical to the f32 collective of the same values).
   */
  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {2, 3})
  void bf16MovesAreExactAndHalveTheBytes(int p) throws Exception {
    org.sparktp.tensor.DType bf16 = org.sparktp.tensor.DType.BF16;
    int n = 5003;
    int[] counts = Split.balanced(n, p).lengths();
    List<List<float[]>> res = both(p, c -> {
      float[] out = new float[3 * n + 6];
      int at = 0;
      for (org.sparktp.tensor.DType dt : new org.sparktp.tensor.DType[] {org.sparktp.tensor.DType.F32, bf16}) {
        // the same values (bf16-representable) in both dtypes
        try (Tensor f = backend.upload(random(c.rank(), 7, counts[c.rank()]), 1, counts[c.rank()]);
            Tensor h = backend.convert(f, bf16); Tensor s = backend.convert(h, dt);
            Tensor g = backend.allocate(1, n, dt)) {
          long s0 = c.stats().bytesSent();
          long r0 = c.stats().bytesReceived();
          c.allGather(s, g, counts);
          long s1 = c.stats().bytesSent();
          long r1 = c.stats().bytesReceived();
          // the last rank broadcasts its gathered copy; the others receive into zeros
          Tensor b = c.rank() == p - 1 ? backend.convert(g, dt) : backend.allocate(1, n, dt);
          try {
            c.broadcast(b, p - 1);
            if (dt == bf16) {
              System.arraycopy(download(b), 0, out, 2 * n, n);
            }
          } finally {
            b.close();
          }
          long s2 = c.stats().bytesSent();
          float[] a = download(g);
          System.arraycopy(a, 0, out, at, n);
          at += n;
          out[3 * n + (dt == bf16 ? 3 : 0)] = s1 - s0;
          out[3 * n + (dt == bf16 ? 4 : 1)] = r1 - r0;
          out[3 * n + (dt == bf16 ? 5 : 2)] = (s2 - s1) + (c.stats().bytesReceived() - r1);
        }
      }
      return out;
    });
    for (List<float[]> group : res) {
      for (int r = 0; r < p; r++) {
        float[] got = group.get(r);
        for (int i = 0; i < n; i++) {
          assertThat(got[n + i]).as("bf16 all-gather element %d on rank %d", i, r).isEqualTo(got[i]);
        }
        assertThat(got[3 * n + 3]).as("bf16 bytes sent by the all-gather").isEqualTo(got[3 * n] / 2);
        assertThat(got[3 * n + 4]).as("bf16 bytes received by the all-gather").isEqualTo(got[3 * n + 1] / 2);
        assertThat(got[3 * n + 5]).as("bf16 bytes moved by the broadcast").isEqualTo(got[3 * n + 2] / 2);
        assertThat(got[3 * n + 2]).isPositive();
        assertThat(got[3 * n + 1]).isEqualTo(4f * (n - counts[r]));
      }
      // the broadcast of the last rank's gathered copy: the same on every rank
      for (int r = 0; r < p; r++) {
        float[] got = group.get(r);
        for (int i = 0; i < n; i++) {
          assertThat(got[2 * n + i]).as("broadcast element %d on rank %d", i, r).isEqualTo(got[n + i]);
        }
      }
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {1, 2, 3, 4})
  void allGatherConcatenatesUnevenBlocksInRankOrder(int p) throws Exception {
    for (int n : new int[] {p, 10, 5003}) {
      int[] counts = Split.balanced(n, p).lengths();
      counts[p - 1] += 7; // not balanced either
      int total = Arrays.stream(counts).sum();
      List<List<float[]>> res = both(p, c -> {
        int mine = counts[c.rank()];
        try (Tensor s = backend.upload(random(c.rank(), n, mine), 1, mine); Tensor out = backend.allocate(1, total)) {
          c.allGather(s, out, counts);
          return download(out);
        }
      });
      for (int r = 0; r < p; r++) {
        assertThat(res.get(1).get(r)).as("allGather n=" + n + " rank " + r).isEqualTo(res.get(0).get(r));
      }
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {1, 2, 3, 4})
  void reduceScatterSumsEachRanksBlock(int p) throws Exception {
    for (int n : new int[] {p, 11, 9001}) {
      int[] counts = Split.balanced(n, p).lengths();
      if (p > 2) {
        counts[1] += counts[2]; // an empty block
        counts[2] = 0;
      }
      int total = Arrays.stream(counts).sum();
      List<List<float[]>> res = both(p, c -> {
        try (Tensor s = backend.upload(random(c.rank(), n, total), 1, total);
            Tensor out = backend.allocate(1, Math.max(1, counts[c.rank()]))) {
          c.reduceScatter(s, counts, out);
          float[] all = download(out);
          return Arrays.copyOf(all, counts[c.rank()]);
        }
      });
      for (int r = 0; r < p; r++) {
        assertClose(res.get(1).get(r), res.get(0).get(r), "reduceScatter n=" + n + " rank " + r);
      }
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {3, 4})
  void reduceScatterOfBlocksLargerThanTheSocketBuffersDoesNotStall(int p) throws Exception {
    // 12 MiB blocks: far more than loopback's socket buffers hold, so a rank that stops reading while it
    // waits for its own sends would stall the ring.
    int block = 3 << 20;
    int[] counts = new int[p];
    Arrays.fill(counts, block);
    counts[p - 1] += 5;
    int total = Arrays.stream(counts).sum();
    long[] off = org.sparktp.comm.Collectives.offsets(counts);
    TcpOptions opts = opts().withChunkBytes(1 << 20).withTimeoutMillis(30_000);
    try (TcpGroup g = TcpGroup.connect(p, opts)) {
      List<float[]> res = g.run(c -> {
        try (Tensor s = backend.upload(random(c.rank(), 5, total), 1, total);
            Tensor out = backend.allocate(1, counts[c.rank()])) {
          c.reduceScatter(s, counts, out);
          return download(out);
        }
      });
      for (int r = 0; r < p; r++) {
        float[] ref = new float[counts[r]];
        for (int q = 0; q < p; q++) {
          float[] d = random(q, 5, total);
          for (int i = 0; i < counts[r]; i++) {
            ref[i] += d[(int) off[r] + i];
          }
        }
        assertClose(res.get(r), ref, "reduceScatter of large blocks, rank " + r);
      }
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {2, 3})
  void inPlaceReduceScatterAndAllGatherUseTheRanksOwnBlock(int p) throws Exception {
    int[] counts = Split.balanced(20_011, p).lengths();
    int total = Arrays.stream(counts).sum();
    long[] off = org.sparktp.comm.Collectives.offsets(counts);
    List<List<float[]>> res = both(p, c -> {
      int r = c.rank();
      try (Tensor all = backend.upload(random(r, 8, total), total, 1)) {
        Tensor mine = all.rows((int) off[r], counts[r]); // a view of this rank's block
        c.reduceScatter(all, counts, mine);
        c.allGather(mine, all, counts);
        return download(all);
      }
    });
    for (int r = 0; r < p; r++) {
      assertClose(res.get(1).get(r), res.get(0).get(r), "in-place reduceScatter + allGather, rank " + r);
    }
    try (TcpGroup g = TcpGroup.connect(2, opts()); Tensor t = backend.allocate(10, 1)) {
      org.assertj.core.api.Assertions.assertThatThrownBy(() -> g.comms.get(0).reduceScatter(t, new int[] {5, 5},
          t.rows(3, 5))).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("overlap");
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {1, 2, 3, 4})
  void allToAllDeliversEveryBlock(int p) throws Exception {
    // rank s sends (s + 2d + 1) * 700 + d elements to rank d: uneven, several chunks, different both ways.
    int[][] counts = new int[p][p];
    for (int s = 0; s < p; s++) {
      for (int d = 0; d < p; d++) {
        counts[s][d] = (s + 2 * d + 1) * 700 + d;
      }
    }
    List<List<float[]>> res = both(p, c -> {
      int r = c.rank();
      int[] send = counts[r];
      int[] recv = new int[p];
      for (int s = 0; s < p; s++) {
        recv[s] = counts[s][r];
      }
      int st = Arrays.stream(send).sum();
      int rt = Arrays.stream(recv).sum();
      try (Tensor s = backend.upload(random(r, 77, st), 1, st); Tensor out = backend.allocate(1, rt)) {
        c.allToAll(s, send, out, recv);
        return download(out);
      }
    });
    for (int r = 0; r < p; r++) {
      assertThat(res.get(1).get(r)).as("allToAll rank " + r).isEqualTo(res.get(0).get(r));
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {1, 2, 3, 4})
  void broadcastCopiesTheRootsBufferFromEveryRoot(int p) throws Exception {
    for (int root = 0; root < p; root++) {
      int rt = root;
      List<List<float[]>> res = both(p, c -> {
        try (Tensor t = backend.upload(random(c.rank(), rt, 10_001), 1, 10_001)) {
          c.broadcast(t, rt);
          return download(t);
        }
      });
      for (int r = 0; r < p; r++) {
        assertThat(res.get(1).get(r)).as("broadcast root " + rt + " rank " + r).isEqualTo(random(rt, rt, 10_001));
      }
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {1, 2, 3, 4})
  void allGatherLongAndBarrierAndStats(int p) throws Exception {
    try (TcpGroup g = TcpGroup.connect(p, opts())) {
      List<long[]> res = g.run(c -> {
        long[] a = null;
        for (int i = 0; i < 50; i++) {
          a = c.allGatherLong(1000L * c.rank() + i);
          c.barrier();
        }
        return a;
      });
      for (long[] a : res) {
        long[] expected = new long[p];
        for (int r = 0; r < p; r++) {
          expected[r] = 1000L * r + 49;
        }
        assertThat(a).isEqualTo(expected);
      }
      if (p > 1) {
        assertThat(g.comms.get(0).stats().calls()).isEqualTo(100);
        assertThat(g.comms.get(0).stats().bytesSent()).isEqualTo(100L * 8 * (p - 1));
      }
    }
  }

  @ParameterizedTest(name = "p={0}")
  @ValueSource(ints = {2, 3})
  void manyCollectivesInARowOnOneGroup(int p) throws Exception {
    // A mixed sequence, to check that frames of consecutive collectives never mix.
    try (TcpGroup g = TcpGroup.connect(p, opts())) {
      List<float[]> res = g.run(c -> {
        float[] last = null;
        for (int i = 0; i < 20; i++) {
          int n = 100 + 997 * i;
          try (Tensor t = backend.upload(random(c.rank(), i, n), 1, n)) {
            c.allReduce(t);
            c.broadcast(t, i % p);
            last = download(t);
          }
        }
        return last;
      });
      for (float[] r : res) {
        assertThat(r).isEqualTo(res.get(0));
      }
    }
  }
}
