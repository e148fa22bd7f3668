package org.sparktp.comm.tcp;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.backend.Tensor;

/** Timeouts, abort, protocol violations and authentication of the TCP communicator (ranks as threads). */
class TcpFailureTest {
  private CpuBackend backend;

  /** Options of the groups: the default, which on loopback is the shared-memory data path. */
  TcpOptions opts() {
    return TcpGroup.options();
  }

  @BeforeEach
  void open() {
    backend = new CpuBackend();
  }

  @AfterEach
  void close() throws InterruptedException {
    backend.close(); // throws if a tensor leaked
    TcpGroup.assertNoCommThreads();
  }

  private Tensor randomTensor(int n) {
    float[] a = new float[n];
    Random rnd = ThreadLocalRandom.current();
    for (int i = 0; i < n; i++) {
      a[i] = rnd.nextFloat() - 0.5f;
    }
    return backend.upload(a, 1, n);
  }

  private static Throwable failureOf(CompletableFuture<?> f) throws Exception {
    try {
      f.get(30, TimeUnit.SECONDS);
    } catch (ExecutionException e) {
      return e.getCause();
    }
    throw new AssertionError("expected a failure");
  }

  @Test
  void aWaitForASilentPeerTimesOutNamingTheOpThePeerAndItsAddress() throws Exception {
    TcpOptions opts = opts().withTimeoutMillis(1500);
    try (TcpGroup g = TcpGroup.connect(3, opts); Tensor t0 = randomTensor(5000); Tensor t2 = randomTensor(5000)) {
      assertThat(g.comms.get(2).transport()).isEqualTo(opts.shm() ? "shm" : "tcp");
      // Rank 1 never calls: rank 2 waits on it to receive, rank 0 waits on rank 2 (ring) or fails when rank 2 aborts.
      long start = System.nanoTime();
      CompletableFuture<Void> r2 = CompletableFuture.runAsync(() -> g.comms.get(2).allReduce(t2));
      Thread.sleep(300); // rank 2 times out first
      CompletableFuture<Void> r0 = CompletableFuture.runAsync(() -> g.comms.get(0).allReduce(t0));
      Throwable e2 = failureOf(r2);
      Throwable e0 = failureOf(r0);
      long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
      assertThat(e2).isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("allReduce on rank 2")
          .hasMessageContaining("timed out after 1500 ms")
          .hasMessageContaining("rank 1 at " + g.comms.get(2).peerAddress(1));
      assertThat(e0).isInstanceOf(CommunicatorException.class).hasMessageContaining("allReduce on rank 0");
      assertThat(ms).as("both fail soon after the timeout").isLessThan(10_000);
      // A failed communicator stays failed, and says why.
      assertThatThrownBy(() -> g.comms.get(2).barrier()).isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("barrier on rank 2").hasMessageContaining("failed earlier");
    }
  }

  @Test
  void abortUnblocksAWaitingCallAtOnce() throws Exception {
    // the ring (no one-shot): in one shot, rank 0 has sent all its data before it waits, so rank 1's call could
    // still complete correctly and only its next call would fail
    try (TcpGroup g = TcpGroup.connect(2, opts().withTimeoutMillis(60_000).withOneShotBytes(0));
        Tensor t = randomTensor(100)) {
      CompletableFuture<Void> r0 = CompletableFuture.runAsync(() -> g.comms.get(0).allReduce(t));
      Thread.sleep(300);
      assertThat(r0).isNotDone();
      long start = System.nanoTime();
      g.comms.get(0).abort(new IllegalStateException("the task was killed"));
      Throwable e = failureOf(r0);
      assertThat(TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start)).isLessThan(5000);
      assertThat(e).isInstanceOf(CommunicatorException.class).hasMessageContaining("the task was killed");
      // The peer learns at once: its next call fails on the closed connection, naming rank 0.
      assertThatThrownBy(() -> g.comms.get(1).allReduce(t)).isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("allReduce on rank 1").hasMessageContaining("rank 0 at ");
    }
  }

  @Test
  void aFrameOfTheWrongLengthIsRejectedWithBothSizes() throws Exception {
    try (TcpGroup g = TcpGroup.connect(2, opts()); Tensor a = randomTensor(1000);
        Tensor b = randomTensor(999)) {
      CompletableFuture<Void> r0 = CompletableFuture.runAsync(() -> g.comms.get(0).broadcast(a, 0));
      CompletableFuture<Void> r1 = CompletableFuture.runAsync(() -> g.comms.get(1).broadcast(b, 0));
      Throwable e1 = failureOf(r1);
      assertThat(e1).isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("broadcast on rank 1: rejected a frame of 4000 bytes where 3996 were expected from rank 0 at ")
          .hasMessageContaining("disagree on the counts");
      try {
        r0.get(30, TimeUnit.SECONDS); // rank 0 may have finished sending before rank 1 rejected
      } catch (ExecutionException e) {
        assertThat(e.getCause()).isInstanceOf(CommunicatorException.class);
      }
    }
  }

  @Test
  void differentCollectivesOnTheRanksAreRejected() throws Exception {
    try (TcpGroup g = TcpGroup.connect(2, opts()); Tensor a = randomTensor(10)) {
      CompletableFuture<Void> r0 = CompletableFuture.runAsync(() -> g.comms.get(0).allReduce(a));
      CompletableFuture<long[]> r1 = CompletableFuture.supplyAsync(() -> g.comms.get(1).allGatherLong(3));
      String m1 = failureOf(r1).getMessage();
      String m0 = failureOf(r0).getMessage();
      // Whichever rank reads the other's frame first rejects it; the other may only see the connection drop.
      assertThat(m0 + " | " + m1).containsAnyOf(
          "allGatherLong on rank 1: rejected a frame of its collective #1 (allReduce)",
          "allReduce on rank 0: rejected a frame of its collective #1 (allGatherLong)")
          .contains("the ranks did not call the same collectives in the same order");
    }
  }

  @Test
  void anUnknownMessageTypeFromAnAuthenticatedPeerIsRejectedAndTheRankSurvives() throws Exception {
    // A hand-made rank 1 that knows the secret but speaks garbage after the handshake (TCP frames).
    TcpOptions opts = opts().withTimeoutMillis(5000).withShm(false);
    try (TcpRendezvous rv = TcpRendezvous.bind(InetAddress.getLoopbackAddress())) {
      List<String> addrs = List.of(rv.address(), "127.0.0.1:1");
      CompletableFuture<TcpCommunicator> c0 = CompletableFuture.supplyAsync(() -> rv.connect(0, addrs, opts));
      try (SocketChannel fake = SocketChannel.open(TcpRendezvous.parse(rv.address()))) {
        Handshake.connect(fake, 1, 0, 2, opts, 5000);
        try (TcpCommunicator comm = c0.get(10, TimeUnit.SECONDS); Tensor t = randomTensor(10)) {
          ByteBuffer frame = ByteBuffer.allocate(16).putInt(0x0BADF00D).putInt(1).putInt(1).putInt(40).flip();
          fake.write(frame);
          assertThatThrownBy(() -> comm.allReduce(t)).isInstanceOf(CommunicatorException.class)
              .hasMessageContaining("allReduce on rank 0: rejected an unknown message type 0xbadf00d from rank 1");
        }
      }
    }
  }

  @Test
  void aRankWithAWrongSecretIsRefusedAndNamed() throws Exception {
    TcpOptions good = opts().withTimeoutMillis(2500);
    TcpOptions bad = TcpOptions.withSecret("another secret, also 32 bytes...".getBytes(StandardCharsets.UTF_8))
        .withTimeoutMillis(2500);
    TcpRendezvous rv0 = TcpRendezvous.bind(InetAddress.getLoopbackAddress());
    TcpRendezvous rv1 = TcpRendezvous.bind(InetAddress.getLoopbackAddress());
    List<String> addrs = List.of(rv0.address(), rv1.address());
    CompletableFuture<TcpCommunicator> c0 = CompletableFuture.supplyAsync(() -> rv0.connect(0, addrs, good));
    CompletableFuture<TcpCommunicator> c1 = CompletableFuture.supplyAsync(() -> rv1.connect(1, addrs, bad));
    Throwable e1 = failureOf(c1);
    Throwable e0 = failureOf(c0);
    assertThat(e1).isInstanceOf(CommunicatorException.class)
        .hasMessageContaining("rendezvous on rank 1: handshake with rank 0 at " + addrs.get(0))
        .hasMessageContaining("failed authentication");
    assertThat(e0).isInstanceOf(CommunicatorException.class)
        .hasMessageContaining("rendezvous on rank 0 timed out after 2500 ms waiting for rank 1 at " + addrs.get(1));
  }

  @Test
  void randomBytesAndForgedHandshakesAreRefusedWhileTheRankKeepsServingItsPeers() throws Exception {
    int p = 3;
    TcpOptions opts = opts().withTimeoutMillis(20_000);
    List<TcpRendezvous> rvs = new ArrayList<>();
    List<String> addrs = new ArrayList<>();
    for (int r = 0; r < p; r++) {
      rvs.add(TcpRendezvous.bind(InetAddress.getLoopbackAddress()));
      addrs.add(rvs.get(r).address());
    }
    InetSocketAddress target = TcpRendezvous.parse(addrs.get(0));
    // Rank 0 starts listening first; before its real peers arrive it gets garbage of several kinds.
    CompletableFuture<TcpCommunicator> c0 = CompletableFuture.supplyAsync(() -> rvs.get(0).connect(0, addrs, opts));
    byte[] junk = new byte[4096];
    ThreadLocalRandom.current().nextBytes(junk);
    try (Socket s = new Socket()) {
      s.connect(target);
      s.getOutputStream().write(junk);
      assertThat(s.getInputStream().read()).as("rank 0 closes a connection of random bytes").isEqualTo(-1);
    } catch (IOException e) {
      // a reset is a refusal too
    }
    try (SocketChannel forged = SocketChannel.open(target)) {
      TcpOptions wrong = TcpOptions.withSecret("not the secret, but 32 bytes ...".getBytes(StandardCharsets.UTF_8));
      assertThatThrownBy(() -> Handshake.connect(forged, 1, 0, p, wrong, 5000))
          .isInstanceOf(Handshake.Rejected.class).hasMessageContaining("failed authentication");
    }
    Socket silent = new Socket(target.getAddress(), target.getPort()); // connects, says nothing
    try {
      List<CompletableFuture<TcpCommunicator>> others = new ArrayList<>();
      for (int r = 1; r < p; r++) {
        int rank = r;
        others.add(CompletableFuture.supplyAsync(() -> rvs.get(rank).connect(rank, addrs, opts)));
      }
      List<TcpCommunicator> comms = new ArrayList<>();
      comms.add(c0.get(30, TimeUnit.SECONDS));
      for (CompletableFuture<TcpCommunicator> f : others) {
        comms.add(f.get(30, TimeUnit.SECONDS));
      }
      try (TcpGroup g = groupOf(comms)) {
        List<Long> sums = g.run(c -> {
          long[] all = c.allGatherLong(c.rank() + 10);
          return all[0] + all[1] + all[2];
        });
        assertThat(sums).containsOnly(33L);
        // Once connected, the rank no longer listens: a new connection is refused by the OS.
        assertThatThrownBy(() -> new Socket(target.getAddress(), target.getPort()).close())
            .isInstanceOf(IOException.class);
      }
    } finally {
      silent.close();
    }
  }

  private static TcpGroup groupOf(List<TcpCommunicator> comms) {
    return new TcpGroup(comms);
  }

  @Test
  void thePlainRendezvousFromAFixedAddressListConnects() throws Exception {
    List<String> addrs = new ArrayList<>();
    for (int r = 0; r < 3; r++) {
      try (java.net.ServerSocket probe = new java.net.ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
        addrs.add("127.0.0.1:" + probe.getLocalPort()); // a free port, released for the rank to bind
      }
    }
    List<CompletableFuture<TcpCommunicator>> fs = new ArrayList<>();
    for (int r = 2; r >= 0; r--) { // the higher ranks start first and retry until the lower ones listen
      int rank = r;
      fs.add(CompletableFuture.supplyAsync(() -> TcpRendezvous.fromAddresses(rank, addrs, opts())));
      Thread.sleep(100);
    }
    List<TcpCommunicator> comms = new ArrayList<>();
    for (int r = 2; r >= 0; r--) {
      comms.add(0, fs.get(2 - r).get(30, TimeUnit.SECONDS));
    }
    try (TcpGroup g = new TcpGroup(comms)) {
      assertThat(g.run(c -> c.allGatherLong(c.rank())[2])).containsOnly(2L);
      assertThat(g.comms.get(1).peerAddress(0)).isEqualTo(addrs.get(0));
    }
  }

  @Test
  void aPortRangeIsHonouredAndAFullRangeSaysSo() throws Exception {
    int base;
    try (java.net.ServerSocket probe = new java.net.ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
      base = probe.getLocalPort();
    }
    InetAddress lo = InetAddress.getLoopbackAddress();
    try (TcpRendezvous a = TcpRendezvous.bind(lo, base, base)) {
      assertThat(a.address()).isEqualTo("127.0.0.1:" + base);
      assertThatThrownBy(() -> TcpRendezvous.bind(lo, base, base)).isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("No free port in " + base + "-" + base + " on 127.0.0.1")
          .hasMessageContaining("spark.tp.comm.port-range");
    }
    assertThat(org.sparktp.TpConf.parsePortRange("k", "40000-40100")).containsExactly(40000, 40100);
    assertThat(org.sparktp.TpConf.parsePortRange("k", " ")).containsExactly(0, 0);
    assertThatThrownBy(() -> org.sparktp.TpConf.parsePortRange("spark.tp.comm.port-range", "9-2"))
        .hasMessageContaining("Invalid port range for spark.tp.comm.port-range");
  }

  @Test
  void theWildcardAddressIsRefused() {
    assertThatThrownBy(() -> TcpRendezvous.bind(new InetSocketAddress("0.0.0.0", 0)))
        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("not on the wildcard address");
  }

  @Test
  void closeIsIdempotentAndLaterCallsSayClosed() throws Exception {
    TcpGroup g = TcpGroup.connect(2, opts());
    g.close();
    g.close();
    try (Tensor t = randomTensor(4)) {
      assertThatThrownBy(() -> g.comms.get(0).allReduce(t)).isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("allReduce on rank 0: the communicator is closed");
    }
  }
}
