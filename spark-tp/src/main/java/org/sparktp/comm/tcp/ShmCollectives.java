package org.sparktp.comm.tcp;

import static org.sparktp.comm.tcp.Bytes.add;
import static org.sparktp.comm.tcp.Bytes.copy;
import static org.sparktp.comm.tcp.Bytes.slice;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.locks.LockSupport;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.backend.Backend;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.comm.tcp.TcpTransport.Peer;

/**
 * The collectives through a {@link ShmSegment} shared by every rank of a group on one host ({@link ShmSetup} agrees
 * on it). Each collective moves its data in rounds of one window: a rank writes its descriptor (collective number,
 * operation, size) and data into its half of the double buffer, publishes a step, waits until every peer has
 * published it too, checks the peers' descriptors, and reads theirs.
 *
 * <p>The TCP connections then only detect a dead peer: one thread per peer blocks reading it ({@link #live}), and
 * {@link #leave()} tells the peers that this rank closed.
 */
final class ShmCollectives implements DataPath {
  private static final Logger LOG = LoggerFactory.getLogger(ShmCollectives.class);
  private static final int SPINS = 2000;
  private static final byte SHM_BYE = 0x42;

  private final TcpTransport t;
  private final int rank;
  private final int size;
  private ShmSegment shm;
  private final int oneShotBytes;
  // the steps this rank has published and the rounds it has begun
  private long step;
  private long round;
  private final List<Thread> liveness = new ArrayList<>();

  /** Takes over {@code segment} (closed by {@link #close()}) and starts watching the connections. */
  ShmCollectives(TcpTransport transport, ShmSegment segment, int oneShotBytes) {
    this.t = transport;
    this.oneShotBytes = Math.min(oneShotBytes, segment.window);
    this.rank = transport.rank;
    this.size = transport.size;
    this.shm = segment;
    for (Peer p : t.peers) {
      if (p != null) {
        Thread th = new Thread(() -> live(p), "tp-comm-live-r" + rank + "-" + p.rank);
        th.setDaemon(true);
        liveness.add(th);
        th.start();
      }
    }
  }

  @Override
  public String name() {
    return "shm";
  }

  /**
   * With shared memory the connections carry nothing after the setup: one thread per peer blocks reading
   * it, so that a peer that dies or aborts (its end closes) fails this rank at once.
   */
  private void live(Peer p) {
    ByteBuffer one = ByteBuffer.allocate(1);
    String msg;
    IOException err = null;
    boolean bye = false;
    try {
      int n = p.channel.read(one);
      bye = n == 1 && one.get(0) == SHM_BYE;
      msg = n < 0 ? "the connection to " + p + " was closed by the peer (the peer process died, failed or aborted)"
          : bye ? p + " has closed its communicator (it left the group)"
          : "rejected unexpected data on the connection from " + p + " (nothing is sent on it with shared memory)";
    } catch (IOException e) {
      err = e;
      msg = "the connection to " + p + " failed (" + e + "): the peer process died, failed or aborted";
    }
    if (t.isClosed() || t.failure() != null) {
      LOG.debug("Rank {}: liveness of {} ends: {}", rank, p, msg, err);
      return;
    }
    String op = t.op();
    CommunicatorException ce = new CommunicatorException((op.equals("?") ? "rank " + rank : op + " on rank " + rank)
        + ": " + msg, err);
    if (bye) {
      // A normal end: later calls fail (the group is incomplete), the connections stay open so that this
      // rank's own close says goodbye to the others too.
      if (t.failQuietly(ce)) {
        LOG.debug("Rank {}: {}", rank, msg);
      }
    } else {
      t.abort(ce);
    }
  }

  /** Publishes the next step of this rank and waits until every peer has published it too. */
  private void step(int buffer, long arg, boolean check) {
    shm.post(rank, ++step);
    awaitPeers(step);
    if (check) {
      checkDescriptors(buffer, arg);
    }
  }

  /** Starts a round: its buffer (alternating), with this rank's descriptor written in it. */
  private int begin(long arg) {
    int b = (int) (round++ & 1);
    shm.writeDescriptor(rank, b, t.seq(), t.opCode(), arg);
    return b;
  }

  private void checkDescriptors(int b, long arg) {
    for (int q = 0; q < size; q++) {
      if (q == rank) {
        continue;
      }
      int s = shm.descriptorSeq(q, b);
      int op = shm.descriptorOp(q, b);
      if (op != t.opCode() || s != t.seq()) {
        throw t.outOfOrder(t.peers[q], s, op);
      }
      long a = shm.descriptorArg(q, b);
      if (a != arg) {
        throw t.wrongLength(t.peers[q], a, arg);
      }
    }
  }

  /**
   * Waits until every peer's step counter reaches {@code target}: spins briefly, then parks for growing intervals
   * (up to 50 us during the first 20 ms, then up to 1 ms). Fails at once on an abort or a dead peer (seen by
   * {@link #live}), and after the timeout naming the first peer still missing.
   */
  private void awaitPeers(long target) {
    long start = System.nanoTime();
    long timeoutNanos = TimeUnit.MILLISECONDS.toNanos(t.timeoutMillis);
    for (int q = 0; q < size; q++) {
      if (q == rank) {
        continue;
      }
      int spins = 0;
      long park = 5_000;
      while (shm.posted(q) < target) {
        CommunicatorException f = t.failure();
        if (f != null) {
          throw failedNow(f);
        }
        if (spins < SPINS) {
          spins++;
          Thread.onSpinWait();
          continue;
        }
        long waited = System.nanoTime() - start;
        if (waited > timeoutNanos) {
          String msg = t.timedOut(t.op(), "waiting for", t.peers[q] + " over shared memory");
          LOG.error(msg);
          t.abort(new CommunicatorException(msg));
          throw failedNow(t.failure());
        }
        if (Thread.currentThread().isInterrupted()) {
          CommunicatorException ce = new CommunicatorException(t.op() + " on rank " + rank
              + ": interrupted while waiting for " + t.peers[q]);
          t.abort(ce);
          throw ce;
        }
        LockSupport.parkNanos(park);
        // Short sleeps while the peer is probably about to arrive (a late wake-up delays the whole group),
        // longer ones once it is clearly busy elsewhere.
        park = Math.min(park * 2, waited < 20_000_000 ? 50_000 : 1_000_000);
      }
    }
  }

  private CommunicatorException failedNow(CommunicatorException f) {
    String prefix = t.op() + " on rank " + rank;
    String m = f.getMessage();
    return m.startsWith(prefix) ? new CommunicatorException(m, f) : new CommunicatorException(prefix + ": " + m, f);
  }

  /**
   * All-reduce in rounds of one window: each rank copies the segments of the window that the others
   * reduce into its buffer, then reduces its own segment from every peer's buffer straight into its tensor,
   * publishes the result, and copies the others' results. Each segment is summed by one rank only, so
   * every rank gets bitwise identical results.
   */
  @Override
  public void allReduce(Backend reducer, ByteBuffer data, long n) {
    long total = 4 * n;
    if (total <= oneShotBytes) {
      oneShotAllReduce(reducer, data, (int) total);
      return;
    }
    int w = shm.window;
    long rounds = Math.max(1, (total + w - 1) / w);
    for (long r = 0; r < rounds; r++) {
      long o = r * w;
      int len = (int) Math.min(w, total - o);
      long[] seg = Bytes.balanced(len / 4, size);
      int b = begin(total);
      ByteBuffer mine = shm.data(rank, b);
      for (int k = 0; k < size; k++) {
        if (k != rank) {
          copy(data, o + 4 * seg[k], mine, 4 * seg[k], 4 * (seg[k + 1] - seg[k]));
          t.count(4 * (seg[k + 1] - seg[k]), 0);
        }
      }
      step(b, total, true);
      int myOff = (int) (4 * seg[rank]);
      int myLen = (int) (4 * (seg[rank + 1] - seg[rank]));
      ByteBuffer dst = slice(data, o + myOff, myLen);
      for (int q = 0; q < size; q++) {
        if (q != rank) {
          add(reducer, slice(shm.data(q, b), myOff, myLen), dst);
          t.count(0, myLen);
        }
      }
      copy(data, o + myOff, mine, myOff, myLen);
      t.count((long) myLen * (size - 1), 0);
      step(b, total, false);
      for (int q = 0; q < size; q++) {
        if (q != rank) {
          long qLen = 4 * (seg[q + 1] - seg[q]);
          copy(shm.data(q, b), 4 * seg[q], data, o + 4 * seg[q], qLen);
          t.count(0, qLen);
        }
      }
    }
  }

  /**
   * A small all-reduce in one round of one step (instead of two): each rank writes its whole buffer, and once every
   * peer has published, sums {@code x_0 + x_1 + ... + x_{p-1}} in rank order from the buffers (its own included), so
   * every rank gets bitwise identical results.
   */
  private void oneShotAllReduce(Backend reducer, ByteBuffer data, int bytes) {
    int b = begin(bytes);
    copy(data, 0, shm.data(rank, b), 0, bytes);
    t.count((long) bytes * (size - 1), 0);
    step(b, bytes, true);
    if (rank != 0) {
      copy(shm.data(0, b), 0, data, 0, bytes);
    }
    ByteBuffer sum = slice(data, 0, bytes);
    for (int q = 1; q < size; q++) {
      add(reducer, slice(shm.data(q, b), 0, bytes), sum);
    }
    t.count(0, (long) bytes * (size - 1));
  }

  @Override
  public void allGather(ByteBuffer own, ByteBuffer recv, long[] boff) {
    long mine = boff[rank + 1] - boff[rank];
    copy(own, 0, recv, boff[rank], mine);
    long max = 0;
    for (int q = 0; q < size; q++) {
      max = Math.max(max, boff[q + 1] - boff[q]);
    }
    int w = shm.window;
    long rounds = Math.max(1, (max + w - 1) / w);
    for (long r = 0; r < rounds; r++) {
      long o = r * w;
      int b = begin(boff[size]);
      long len = Math.max(0, Math.min(w, mine - o));
      copy(own, o, shm.data(rank, b), 0, len);
      t.count(len * (size - 1), 0);
      step(b, boff[size], true);
      for (int q = 0; q < size; q++) {
        long qLen = Math.max(0, Math.min(w, boff[q + 1] - boff[q] - o));
        if (q != rank && qLen > 0) {
          copy(shm.data(q, b), 0, recv, boff[q] + o, qLen);
          t.count(0, qLen);
        }
      }
    }
  }

  /** Reduce-scatter: each rank's buffer holds, per destination, a piece of that destination's block. */
  @Override
  public void reduceScatter(Backend reducer, ByteBuffer sb, ByteBuffer rb, long[] off, int[] counts,
      boolean inPlace) {
    long totalBytes = 4 * off[size];
    long mineBytes = 4L * counts[rank];
    copy(sb, 4 * off[rank], rb, 0, mineBytes); // nothing to do in place
    int sub = (shm.window / size) & ~(ShmSegment.LINE - 1);
    long max = 0;
    for (int c : counts) {
      max = Math.max(max, 4L * c);
    }
    long rounds = Math.max(1, (max + sub - 1) / sub);
    for (long r = 0; r < rounds; r++) {
      long o = r * sub;
      int b = begin(totalBytes);
      ByteBuffer buf = shm.data(rank, b);
      for (int k = 0; k < size; k++) {
        long len = Math.max(0, Math.min(sub, 4L * counts[k] - o));
        if (k != rank && len > 0) {
          copy(sb, 4 * off[k] + o, buf, (long) k * sub, len);
          t.count(len, 0);
        }
      }
      step(b, totalBytes, true);
      int len = (int) Math.max(0, Math.min(sub, mineBytes - o));
      if (len > 0) {
        ByteBuffer dst = slice(rb, o, len);
        for (int q = 0; q < size; q++) {
          if (q != rank) {
            add(reducer, slice(shm.data(q, b), rank * sub, len), dst);
            t.count(0, len);
          }
        }
      }
    }
  }

  /**
   * All-to-all: a first round exchanges the block sizes (each rank checks what its peers send it and
   * learns the largest block), then each round moves one piece of every block through per-destination
   * parts of the buffers.
   */
  @Override
  public void allToAll(ByteBuffer sb, long[] soff, int[] sendCounts, ByteBuffer rb, long[] roff, int[] recvCounts,
      int es) {
    int sub = (shm.window / size) & ~(ShmSegment.LINE - 1);
    long myMax = 0;
    for (int d = 0; d < size; d++) {
      if (d != rank) {
        myMax = Math.max(myMax, (long) es * sendCounts[d]);
      }
    }
    int b0 = begin(0);
    ByteBuffer first = shm.data(rank, b0);
    for (int d = 0; d < size; d++) {
      first.putLong(d * sub, d == rank ? myMax : (long) es * sendCounts[d]);
    }
    step(b0, 0, true);
    long max = myMax;
    for (int q = 0; q < size; q++) {
      if (q != rank) {
        ByteBuffer theirs = shm.data(q, b0);
        max = Math.max(max, theirs.getLong(q * sub));
        long toMe = theirs.getLong(rank * sub);
        if (toMe != (long) es * recvCounts[q]) {
          throw t.wrongLength(t.peers[q], toMe, (long) es * recvCounts[q]);
        }
      }
    }
    copy(sb, soff[rank] * es, rb, roff[rank] * es, (long) es * sendCounts[rank]);
    long rounds = (max + sub - 1) / sub;
    for (long r = 0; r < rounds; r++) {
      long o = r * sub;
      int b = begin(0);
      ByteBuffer buf = shm.data(rank, b);
      for (int d = 0; d < size; d++) {
        long len = Math.max(0, Math.min(sub, (long) es * sendCounts[d] - o));
        if (d != rank && len > 0) {
          copy(sb, es * soff[d] + o, buf, (long) d * sub, len);
          t.count(len, 0);
        }
      }
      step(b, 0, true);
      for (int q = 0; q < size; q++) {
        long len = Math.max(0, Math.min(sub, (long) es * recvCounts[q] - o));
        if (q != rank && len > 0) {
          copy(shm.data(q, b), (long) rank * sub, rb, es * roff[q] + o, len);
          t.count(0, len);
        }
      }
    }
  }

  @Override
  public void broadcast(ByteBuffer data, long bytes, int root) {
    int w = shm.window;
    long rounds = Math.max(1, (bytes + w - 1) / w);
    for (long r = 0; r < rounds; r++) {
      long o = r * w;
      long len = Math.min(w, bytes - o);
      int b = begin(bytes);
      if (rank == root) {
        copy(data, o, shm.data(rank, b), 0, len);
        t.count(len * (size - 1), 0);
      }
      step(b, bytes, true);
      if (rank != root) {
        copy(shm.data(root, b), 0, data, o, len);
        t.count(0, len);
      }
    }
  }

  @Override
  public long[] gatherLongs(long value) {
    int b = begin(8);
    shm.data(rank, b).putLong(0, value);
    t.count(8L * (size - 1), 0);
    step(b, 8, true);
    long[] out = new long[size];
    for (int q = 0; q < size; q++) {
      out[q] = q == rank ? value : shm.data(q, b).getLong(0);
    }
    t.count(0, 8L * (size - 1));
    return out;
  }

  /** Over shared memory the body has seen every peer's data: nothing is in flight. */
  @Override
  public void finish() {}

  /**
   * Tells the peers that this rank left (they fail their next wait on it, without a warning); after an abort the
   * connections are closed already and the peers saw that instead.
   */
  @Override
  public void leave() {
    for (Peer p : t.peers) {
      if (p != null) {
        try {
          p.channel.write(ByteBuffer.wrap(new byte[] {SHM_BYE}));
        } catch (IOException e) {
          LOG.debug("Rank {} could not say goodbye to {} (it is gone already)", rank, p, e);
        }
      }
    }
  }

  /** Waits for the liveness threads (the connections are closed) and unmaps the segment. */
  @Override
  public void close() {
    for (Thread th : liveness) {
      t.join(th);
    }
    if (shm != null) {
      shm.close();
      shm = null;
    }
  }
}
