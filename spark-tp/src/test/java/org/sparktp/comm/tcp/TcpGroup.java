package org.sparktp.comm.tcp;

import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.sparktp.comm.Communicator;

/** Test helper: a TCP group whose ranks are threads of this JVM (each with its own sockets). */
final class TcpGroup implements AutoCloseable {
  static final byte[] SECRET = "a test secret of 32 bytes ......".getBytes(StandardCharsets.UTF_8);

  final List<TcpCommunicator> comms;

  TcpGroup(List<TcpCommunicator> comms) {
    this.comms = comms;
  }

  static TcpOptions options() {
    return TcpOptions.withSecret(SECRET).withTimeoutMillis(20_000).withChunkBytes(4096);
  }

  static TcpGroup connect(int p, TcpOptions opts) throws Exception {
    return connect(p, java.util.Collections.nCopies(p, opts));
  }

  /** A group whose rank {@code r} uses {@code opts.get(r)}. */
  static TcpGroup connect(int p, List<TcpOptions> opts) throws Exception {
    List<TcpRendezvous> rvs = new ArrayList<>();
    List<String> addrs = new ArrayList<>();
    for (int r = 0; r < p; r++) {
      TcpRendezvous rv = TcpRendezvous.bind(InetAddress.getLoopbackAddress());
      rvs.add(rv);
      addrs.add(rv.address());
    }
    ExecutorService pool = Executors.newFixedThreadPool(p);
    try {
      List<Future<TcpCommunicator>> fs = new ArrayList<>();
      for (int r = 0; r < p; r++) {
        int rank = r;
        fs.add(pool.submit(() -> rvs.get(rank).connect(rank, addrs, opts.get(rank))));
      }
      List<TcpCommunicator> out = new ArrayList<>();
      for (Future<TcpCommunicator> f : fs) {
        out.add(f.get(60, TimeUnit.SECONDS));
      }
      return new TcpGroup(out);
    } finally {
      pool.shutdownNow();
      rvs.forEach(TcpRendezvous::close);
    }
  }

  /** The work of one rank. */
  interface Body<T> {
    T run(Communicator c) throws Exception;
  }

  /** Runs one body per rank on its own thread; returns results in rank order, rethrows the first failure. */
  <T> List<T> run(Body<T> body) throws Exception {
    ExecutorService pool = Executors.newFixedThreadPool(comms.size());
    try {
      List<Future<T>> fs = new ArrayList<>();
      for (TcpCommunicator c : comms) {
        fs.add(pool.submit(() -> body.run(c)));
      }
      List<T> out = new ArrayList<>();
      for (Future<T> f : fs) {
        out.add(f.get(120, TimeUnit.SECONDS));
      }
      return out;
    } finally {
      pool.shutdownNow();
    }
  }

  @Override
  public void close() {
    comms.forEach(TcpCommunicator::close);
  }

  /** Fails unless every thread of the communicators ("tp-comm-*") has ended within a few seconds. */
  static void assertNoCommThreads() throws InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
    List<String> live;
    do {
      live = new ArrayList<>();
      for (Thread t : Thread.getAllStackTraces().keySet()) {
        if (t.isAlive() && t.getName().startsWith("tp-comm-")) {
          live.add(t.getName());
        }
      }
      if (live.isEmpty()) {
        return;
      }
      Thread.sleep(50);
    } while (System.nanoTime() < deadline);
    throw new AssertionError("Communicator threads still running after close: " + live);
  }
}
