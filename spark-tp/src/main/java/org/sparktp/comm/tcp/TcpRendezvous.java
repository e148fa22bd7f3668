package org.sparktp.comm.tcp;

import java.io.IOException;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.StandardSocketOptions;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.comm.CommunicatorException;

/**
 * Connects the ranks of a group into a {@link TcpCommunicator}. Two steps, because a rank must know
 * its own port before the addresses are exchanged:
 *
 * <pre>{@code
 * try (TcpRendezvous rv = TcpRendezvous.bind(InetAddress.getByName(executorHost))) {
 *   List<String> all = exchange(rv.address());            // e.g. BarrierTaskContext.allGather
 *   TcpCommunicator comm = rv.connect(rank, all, TcpOptions.withSecret(secret));
 * }
 * }</pre>
 *
 * The listening socket is bound to the given address only (never the wildcard) on an ephemeral port,
 * and is closed once the group is connected: later connection attempts are refused by the OS. Every
 * pair of ranks gets one connection, opened by the higher rank, and authenticated in both directions
 * ({@link Handshake}) before any data. A connection that fails the handshake (random bytes, a wrong
 * secret, a duplicate or impossible rank) is logged and closed while the rank keeps waiting for its real
 * peers, each such connection served by its own short-lived thread so that a silent one delays nobody.
 */
public final class TcpRendezvous implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(TcpRendezvous.class);
  /** Bound on one incoming handshake (a real peer answers in milliseconds). */
  private static final int HANDSHAKE_MILLIS = 10_000;
  /** Incoming handshakes served at once; more are closed at once. */
  private static final int MAX_PENDING_HANDSHAKES = 32;

  private final ServerSocketChannel server;
  private final String address;
  private volatile boolean closed;

  private TcpRendezvous(ServerSocketChannel server, String address) {
    this.server = server;
    this.address = address;
  }

  /** Listens on {@code host} (an interface address of this machine) at an ephemeral port. */
  public static TcpRendezvous bind(InetAddress host) {
    return bind(new InetSocketAddress(host, 0));
  }

  /**
   * Listens on {@code host} at the first free port of {@code [minPort, maxPort]}, trying them from a
   * random start so that tasks on one host rarely collide ({@link TcpOptions#PORT_RANGE_SETTING});
   * {@code minPort = 0} picks any free port.
   */
  public static TcpRendezvous bind(InetAddress host, int minPort, int maxPort) {
    if (minPort == 0) {
      return bind(host);
    }
    if (minPort < 1 || maxPort > 65535 || minPort > maxPort) {
      throw new IllegalArgumentException("Invalid port range " + minPort + "-" + maxPort);
    }
    int n = maxPort - minPort + 1;
    int start = java.util.concurrent.ThreadLocalRandom.current().nextInt(n);
    CommunicatorException last = null;
    for (int i = 0; i < n; i++) {
      try {
        return bind(new InetSocketAddress(host, minPort + (start + i) % n));
      } catch (CommunicatorException e) {
        last = e;
      }
    }
    throw new CommunicatorException("No free port in " + minPort + "-" + maxPort + " on "
        + host.getHostAddress() + " (" + TcpOptions.PORT_RANGE_SETTING + "; every port is taken, widen the range)",
        last);
  }

  /** Listens on {@code address}; port 0 picks a free one. The wildcard address is refused. */
  public static TcpRendezvous bind(InetSocketAddress address) {
    if (address.isUnresolved()) {
      throw new IllegalArgumentException("Cannot listen on unresolved host '" + address.getHostString() + "'");
    }
    if (address.getAddress().isAnyLocalAddress()) {
      throw new IllegalArgumentException("The communicator listens only on the executor's own address, not on "
          + "the wildcard address " + address.getAddress().getHostAddress());
    }
    ServerSocketChannel ch = null;
    try {
      ch = ServerSocketChannel.open();
      // Lets a fixed port of spark.tp.comm.port-range be reused while an old connection is in TIME_WAIT
      // (on Linux this never lets two sockets listen on one port).
      ch.setOption(StandardSocketOptions.SO_REUSEADDR, true);
      ch.bind(address, 64);
      InetSocketAddress local = (InetSocketAddress) ch.getLocalAddress();
      return new TcpRendezvous(ch, format(local.getAddress(), local.getPort()));
    } catch (IOException e) {
      closeQuietly(ch);
      throw new CommunicatorException("Cannot listen on " + address + ": " + e.getMessage(), e);
    }
  }

  /** {@code host:port} of the listening socket, to give to the other ranks. */
  public String address() {
    return address;
  }

  /**
   * The plain rendezvous from a list of addresses known beforehand (tools, tests): binds
   * {@code addresses.get(rank)} and connects to the others.
   */
  public static TcpCommunicator fromAddresses(int rank, List<String> addresses, TcpOptions options) {
    checkRank(rank, addresses);
    try (TcpRendezvous rv = bind(parse(addresses.get(rank)))) {
      return rv.connect(rank, addresses, options);
    }
  }

  /**
   * Connects this rank to every other rank: connects to the lower ranks (retrying until they listen)
   * and accepts the higher ranks, authenticating each. Closes the listening socket when done. Fails with
   * a {@link CommunicatorException} naming the missing ranks and their addresses after
   * {@link TcpOptions#timeoutMillis()}.
   */
  public TcpCommunicator connect(int rank, List<String> addresses, TcpOptions options) {
    checkRank(rank, addresses);
    if (closed) {
      throw new IllegalStateException("This rendezvous was already used or closed");
    }
    int size = addresses.size();
    InetSocketAddress[] addrs = new InetSocketAddress[size];
    for (int r = 0; r < size; r++) {
      addrs[r] = parse(addresses.get(r));
    }
    long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(options.timeoutMillis());
    TcpTransport.Peer[] peers = new TcpTransport.Peer[size];
    Acceptor acceptor = new Acceptor(rank, size, addresses, options, peers);
    Thread acceptThread = new Thread(acceptor, "tp-comm-accept-r" + rank);
    acceptThread.setDaemon(true);
    boolean ok = false;
    try {
      if (rank < size - 1) {
        acceptThread.start();
      }
      for (int j = 0; j < rank; j++) {
        peers[j] = new TcpTransport.Peer(j, addresses.get(j), connectTo(rank, j, size, addrs[j], addresses.get(j),
            options, deadline));
      }
      synchronized (peers) {
        while (acceptor.missing() > 0 && acceptor.error == null) {
          long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
          if (left <= 0) {
            break;
          }
          peers.wait(Math.min(left, 100));
        }
        if (acceptor.error != null) {
          throw new CommunicatorException("rendezvous on rank " + rank + ": accepting connections at " + address
              + " failed: " + acceptor.error, acceptor.error);
        }
        if (acceptor.missing() > 0) {
          StringBuilder m = new StringBuilder();
          for (int j = rank + 1; j < size; j++) {
            if (peers[j] == null) {
              m.append(m.length() == 0 ? "" : ", ").append("rank ").append(j).append(" at ").append(addresses.get(j));
            }
          }
          throw new CommunicatorException("rendezvous on rank " + rank + " timed out after "
              + options.timeoutMillis() + " ms waiting for " + m + " to connect to " + address
              + " and authenticate (check that the ranks share the secret and can reach this address)");
        }
      }
      for (TcpTransport.Peer p : peers) {
        if (p != null) {
          p.channel.setOption(StandardSocketOptions.TCP_NODELAY, true);
        }
      }
      TcpCommunicator comm = new TcpCommunicator(rank, size, peers.clone(), options, addresses.get(rank));
      ok = true;
      return comm;
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new CommunicatorException("rendezvous on rank " + rank + " was interrupted", e);
    } catch (IOException e) {
      throw new CommunicatorException("rendezvous on rank " + rank + " failed: " + e, e);
    } finally {
      close();
      acceptThread.interrupt();
      try {
        acceptThread.join(5000);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
      if (!ok) {
        synchronized (peers) {
          for (TcpTransport.Peer p : peers) {
            if (p != null) {
              closeQuietly(p.channel);
            }
          }
          acceptor.done = true;
        }
      }
    }
  }

  private static SocketChannel connectTo(int rank, int j, int size, InetSocketAddress addr, String text,
      TcpOptions options, long deadline) throws InterruptedException {
    IOException last = null;
    int backoff = 20;
    while (true) {
      long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
      if (left <= 0) {
        throw new CommunicatorException("rendezvous on rank " + rank + " timed out after " + options.timeoutMillis()
            + " ms connecting to rank " + j + " at " + text + " (last error: " + last + ")", last);
      }
      SocketChannel ch = null;
      try {
        ch = SocketChannel.open();
        ch.socket().connect(addr, (int) Math.min(left, Integer.MAX_VALUE));
        Handshake.connect(ch, rank, j, size, options, (int) Math.max(1, Math.min(left, Integer.MAX_VALUE)));
        return ch;
      } catch (Handshake.Rejected e) {
        closeQuietly(ch);
        throw new CommunicatorException("rendezvous on rank " + rank + ": handshake with rank " + j + " at " + text
            + " failed: " + e.getMessage(), e);
      } catch (IOException e) {
        // Not listening yet (or a transient network error): retry until the deadline.
        closeQuietly(ch);
        last = e;
        Thread.sleep(backoff);
        backoff = Math.min(500, backoff * 2);
      }
    }
  }

  /** Accepts the higher ranks; each incoming connection is authenticated on its own thread. */
  private final class Acceptor implements Runnable {
    private final int rank;
    private final int size;
    private final List<String> addresses;
    private final TcpOptions options;
    private final TcpTransport.Peer[] peers; // also the monitor
    private final AtomicInteger pending = new AtomicInteger();
    volatile Throwable error;
    boolean done; // under peers' monitor: no more peers may be added

    Acceptor(int rank, int size, List<String> addresses, TcpOptions options, TcpTransport.Peer[] peers) {
      this.rank = rank;
      this.size = size;
      this.addresses = addresses;
      this.options = options;
      this.peers = peers;
    }

    int missing() {
      int m = 0;
      for (int j = rank + 1; j < size; j++) {
        if (peers[j] == null) {
          m++;
        }
      }
      return m;
    }

    @Override
    public void run() {
      while (!closed) {
        SocketChannel ch;
        try {
          ch = server.accept();
        } catch (IOException e) {
          if (!closed) {
            error = e;
            synchronized (peers) {
              peers.notifyAll();
            }
          }
          return;
        }
        String remote = remote(ch);
        if (pending.incrementAndGet() > MAX_PENDING_HANDSHAKES) {
          pending.decrementAndGet();
          LOG.warn("Rank {} refused a connection from {}: too many handshakes in progress", rank, remote);
          closeQuietly(ch);
          continue;
        }
        Thread t = new Thread(() -> handshake(ch, remote), "tp-comm-handshake-r" + rank);
        t.setDaemon(true);
        t.start();
      }
    }

    private void handshake(SocketChannel ch, String remote) {
      try {
        int timeout = (int) Math.min(HANDSHAKE_MILLIS, options.timeoutMillis());
        int peer = Handshake.serve(ch, rank, size, options, timeout);
        synchronized (peers) {
          if (done || closed && missing() == 0) {
            closeQuietly(ch);
            return;
          }
          if (peers[peer] != null) {
            LOG.warn("Rank {} refused a second connection claiming rank {} from {}", rank, peer, remote);
            closeQuietly(ch);
            return;
          }
          peers[peer] = new TcpTransport.Peer(peer, addresses.get(peer), ch);
          LOG.debug("Rank {} accepted rank {} from {}", rank, peer, remote);
          peers.notifyAll();
        }
      } catch (Handshake.Rejected e) {
        LOG.warn("Rank {} refused a connection from {}: {}", rank, remote, e.getMessage());
        closeQuietly(ch);
      } catch (IOException | RuntimeException e) {
        LOG.warn("Rank {} refused a connection from {}: handshake failed ({})", rank, remote, e.toString());
        closeQuietly(ch);
      } finally {
        pending.decrementAndGet();
      }
    }
  }

  private static String remote(SocketChannel ch) {
    try {
      return String.valueOf(ch.getRemoteAddress());
    } catch (IOException e) {
      return "an unknown address";
    }
  }

  /** Stops listening; connections already made are not affected. */
  @Override
  public void close() {
    closed = true;
    closeQuietly(server);
  }

  private static void checkRank(int rank, List<String> addresses) {
    if (addresses == null || addresses.isEmpty()) {
      throw new IllegalArgumentException("The rendezvous needs the address of every rank, got none");
    }
    if (rank < 0 || rank >= addresses.size()) {
      throw new IllegalArgumentException("Rank " + rank + " outside [0, " + addresses.size() + ")");
    }
  }

  /** Parses {@code host:port} (IPv6 as {@code [addr]:port}). */
  public static InetSocketAddress parse(String hostPort) {
    int colon = hostPort == null ? -1 : hostPort.lastIndexOf(':');
    if (colon <= 0 || colon == hostPort.length() - 1) {
      throw new IllegalArgumentException("Expected host:port, got '" + hostPort + "'");
    }
    String host = hostPort.substring(0, colon);
    if (host.startsWith("[") && host.endsWith("]")) {
      host = host.substring(1, host.length() - 1);
    }
    int port;
    try {
      port = Integer.parseInt(hostPort.substring(colon + 1));
    } catch (NumberFormatException e) {
      throw new IllegalArgumentException("Expected host:port, got '" + hostPort + "'", e);
    }
    return new InetSocketAddress(host, port);
  }

  static String format(InetAddress a, int port) {
    String h = a.getHostAddress();
    return (h.indexOf(':') >= 0 ? "[" + h + "]" : h) + ":" + port;
  }

  static void closeQuietly(java.io.Closeable c) {
    if (c != null) {
      try {
        c.close();
      } catch (IOException e) {
        LOG.debug("close failed", e);
      }
    }
  }
}
