package org.sparktp.comm.tcp;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ClosedByInterruptException;
import java.nio.channels.SocketChannel;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.comm.AbstractCommunicator;
import org.sparktp.comm.CommunicatorException;

/**
 * The authenticated connections of one rank to its peers and what moves on them, for both data paths of a
 * {@link TcpCommunicator}.
 *
 * <ul>
 *   <li>Frames: a message is split into frames of at most one chunk ({@link #forEachChunk}); each carries a 16-byte
 *       header (type, collective number, operation, length) that the receiver checks against what it expects, and
 *       any mismatch fails the collective with a message that names both sides.</li>
 *   <li>A sender thread writes the queued frames in order, straight from the tensors' off-heap memory, while the
 *       calling thread receives ({@link #send}, {@link #receive}).</li>
 *   <li>A watchdog bounds every wait (for one frame to arrive or to be written) by the timeout; a closed or reset
 *       connection fails the waiting call at once.</li>
 *   <li>The failure state: the first failure aborts ({@link #abort}), which closes every connection so that the
 *       peers fail at once too instead of waiting for their timeout, and stays.</li>
 *   <li>The running collective: its number, operation and the bytes it moved.</li>
 * </ul>
 */
final class TcpTransport {
  private static final Logger LOG = LoggerFactory.getLogger(TcpTransport.class);

  static final int FRAME_DATA = 0x54504446; // "TPDF"
  static final int HEADER_BYTES = 16;

  static final int OP_ALL_REDUCE = 1;
  static final int OP_ALL_GATHER = 2;
  static final int OP_REDUCE_SCATTER = 3;
  static final int OP_ALL_TO_ALL = 4;
  static final int OP_BROADCAST = 5;
  static final int OP_GATHER_LONG = 6;
  static final int OP_BARRIER = 7;
  static final String[] OP_NAMES = {"?", "allReduce", "allGather", "reduceScatter", "allToAll", "broadcast",
      "allGatherLong", "barrier"};

  /** One connected peer. */
  static final class Peer {
    final int rank;
    final String address;
    final SocketChannel channel;

    Peer(int rank, String address, SocketChannel channel) {
      this.rank = rank;
      this.address = address;
      this.channel = channel;
    }

    @Override
    public String toString() {
      return "rank " + rank + " at " + address;
    }
  }

  /** What a thread is blocked on, for the watchdog. */
  private record Wait(String op, Peer peer, String what, long since) {}

  final int rank;
  final int size;
  final long timeoutMillis;
  final int chunkBytes;
  final Peer[] peers;
  private final AtomicReference<CommunicatorException> failure = new AtomicReference<>();
  private final Sender sender;
  private final Thread senderThread;
  private final Thread watchdog;
  private final ByteBuffer header = ByteBuffer.allocateDirect(HEADER_BYTES).order(ByteOrder.BIG_ENDIAN);
  private volatile Wait mainWait;
  private volatile boolean closed;
  // the running collective (calling thread)
  private int seq;
  private volatile String currentOp = "?";
  private int currentOpCode;
  private long sentBytes;
  private long receivedBytes;

  TcpTransport(int rank, int size, Peer[] peers, long timeoutMillis, int chunkBytes) {
    this.rank = rank;
    this.size = size;
    this.peers = peers;
    this.timeoutMillis = timeoutMillis;
    this.chunkBytes = chunkBytes;
    if (size > 1) {
      sender = new Sender();
      senderThread = new Thread(sender, "tp-comm-send-r" + rank);
      senderThread.setDaemon(true);
      senderThread.start();
      watchdog = new Thread(this::watch, "tp-comm-watchdog-r" + rank);
      watchdog.setDaemon(true);
      watchdog.start();
    } else {
      sender = null;
      senderThread = null;
      watchdog = null;
    }
  }

  String describePeers() {
    StringBuilder sb = new StringBuilder();
    for (Peer p : peers) {
      if (p != null) {
        sb.append(sb.length() == 0 ? "" : ", ").append(p);
      }
    }
    return sb.length() == 0 ? "no peers" : sb.toString();
  }

  // ---------------------------------------------------------------------------------------------
  // The running collective

  /** Starts collective {@code op}: the next number, no bytes moved yet. */
  void begin(int op) {
    seq++;
    currentOp = OP_NAMES[op];
    currentOpCode = op;
    sentBytes = 0;
    receivedBytes = 0;
  }

  /** Names what runs outside a collective (the shared-memory setup); {@code null} when it ends. */
  void phase(String name) {
    currentOp = name == null ? "?" : name;
  }

  void end() {
    currentOp = "?";
  }

  String op() {
    return currentOp;
  }

  int opCode() {
    return currentOpCode;
  }

  int seq() {
    return seq;
  }

  /** Counts bytes moved by the running collective outside frames (through shared memory). */
  void count(long sent, long received) {
    sentBytes += sent;
    receivedBytes += received;
  }

  long sentBytes() {
    return sentBytes;
  }

  long receivedBytes() {
    return receivedBytes;
  }

  // ---------------------------------------------------------------------------------------------
  // Failure state

  boolean isClosed() {
    return closed;
  }

  /** The first failure, or {@code null}. */
  CommunicatorException failure() {
    return failure.get();
  }

  /** Records {@code e} as the failure unless there is one already (a peer that left; no abort). */
  boolean failQuietly(CommunicatorException e) {
    return failure.compareAndSet(null, e);
  }

  void checkFailed(String op) {
    CommunicatorException f = failure.get();
    if (f != null) {
      throw new CommunicatorException(op + " on rank " + rank + ": the communicator has failed earlier and cannot "
          + "be used again: " + f.getMessage(), f);
    }
  }

  void checkFailed() {
    CommunicatorException f = failure.get();
    if (f != null) {
      throw new CommunicatorException(f.getMessage(), f);
    }
  }

  /**
   * Fails every waiting and later call with {@code cause} and closes every connection, so that the
   * peers' waits on this rank fail at once.
   */
  void abort(Throwable cause) {
    CommunicatorException ce = cause instanceof CommunicatorException c ? c
        : new CommunicatorException("rank " + rank + " was aborted: " + cause, cause);
    if (failure.compareAndSet(null, ce)) {
      LOG.warn("Rank {} aborts its communicator: {}", rank, ce.getMessage());
    }
    closeChannels();
  }

  private void closeChannels() {
    for (Peer p : peers) {
      if (p != null) {
        try {
          p.channel.close();
        } catch (IOException e) {
          LOG.debug("Closing the connection to {} failed", p, e);
        }
      }
    }
  }

  /** The message of a wait that ran past the timeout. */
  String timedOut(String op, String what, Object peer) {
    return op + " on rank " + rank + ": timed out after " + timeoutMillis + " ms " + what + " " + peer
        + " (the peer is stuck, overloaded or gone; " + AbstractCommunicator.TIMEOUT_SETTING + " sets this bound)";
  }

  /** A frame or descriptor of another collective than the running one: the ranks called them in another order. */
  CommunicatorException outOfOrder(Peer from, int theirSeq, int theirOp) {
    return protocolError(from, "a frame of its collective #" + theirSeq + " ("
        + (theirOp > 0 && theirOp < OP_NAMES.length ? OP_NAMES[theirOp] : "unknown op " + theirOp) + ")",
        "this rank is in collective #" + seq + " (" + currentOp
        + "): the ranks did not call the same collectives in the same order");
  }

  CommunicatorException wrongLength(Peer from, long got, long expected) {
    return protocolError(from, "a frame of " + got + " bytes where " + expected + " were expected",
        "the ranks disagree on the counts or buffer sizes");
  }

  /** Rejects what a peer sent: logs, aborts, and returns the exception to throw. */
  CommunicatorException protocolError(Peer from, String what, String why) {
    String msg = currentOp + " on rank " + rank + ": rejected " + what + " from " + from + "; " + why;
    LOG.error(msg);
    CommunicatorException e = new CommunicatorException(msg);
    abort(e);
    return e;
  }

  /** The exception for a failed read or write; the first failure of the communicator wins. */
  private CommunicatorException ioFailure(String op, Peer peer, String what, IOException e) {
    CommunicatorException f = failure.get();
    if (f != null) {
      return new CommunicatorException(f.getMessage(), f);
    }
    String msg;
    if (e == null) {
      msg = op + " on rank " + rank + ": the connection to " + peer + " was closed by the peer while " + what
          + " it (the peer process died, failed or aborted)";
    } else if (e instanceof ClosedByInterruptException) {
      msg = op + " on rank " + rank + ": interrupted while " + what + " " + peer;
    } else {
      msg = op + " on rank " + rank + ": the connection to " + peer + " failed while " + what + " it (" + e
          + "): the peer process died, failed or aborted";
    }
    CommunicatorException ce = new CommunicatorException(msg, e);
    abort(ce);
    f = failure.get();
    return f == ce ? ce : new CommunicatorException(f.getMessage(), f);
  }

  // ---------------------------------------------------------------------------------------------
  // Frames

  /** Queues one frame of {@code payload} for the sender thread; returns its number. */
  long send(Peer to, ByteBuffer payload) {
    sentBytes += payload.remaining();
    return sender.enqueue(new Item(to, seq, currentOpCode, currentOp, payload));
  }

  /** Receives one frame into {@code dst}'s remaining bytes; leaves {@code dst}'s position unchanged. */
  void receive(Peer from, ByteBuffer dst) {
    int expected = dst.remaining();
    header.clear();
    readFully(from, header, "receiving from");
    int type = header.getInt(0);
    int theirSeq = header.getInt(4);
    int theirOp = header.getInt(8);
    int len = header.getInt(12);
    if (type != FRAME_DATA) {
      throw protocolError(from, "an unknown message type 0x" + Integer.toHexString(type), "not a spark-tp frame");
    }
    if (theirOp != currentOpCode || theirSeq != seq) {
      throw outOfOrder(from, theirSeq, theirOp);
    }
    if (len != expected) {
      throw wrongLength(from, len, expected);
    }
    readFully(from, dst.duplicate(), "receiving from");
    receivedBytes += expected;
  }

  /** Reads exactly {@code b}'s remaining bytes, watched by the watchdog. */
  void readFully(Peer from, ByteBuffer b, String what) {
    mainWait = new Wait(currentOp, from, what, System.nanoTime());
    try {
      while (b.hasRemaining()) {
        if (from.channel.read(b) < 0) {
          throw ioFailure(currentOp, from, what, null);
        }
      }
    } catch (IOException e) {
      throw ioFailure(currentOp, from, what, e);
    } finally {
      mainWait = null;
    }
  }

  /** Writes {@code b} on the calling thread (outside the frames: the shared-memory setup). */
  void writeFully(Peer to, ByteBuffer b) {
    try {
      while (b.hasRemaining()) {
        to.channel.write(b);
      }
    } catch (IOException e) {
      throw ioFailure(currentOp, to, "sending to", e);
    }
  }

  interface ChunkBody {
    void accept(long offset, int length);
  }

  /** Splits {@code [offset, offset + bytes)} into frames of at most one chunk; an empty block is one empty frame. */
  void forEachChunk(long offset, long bytes, ChunkBody body) {
    if (bytes == 0) {
      body.accept(offset, 0);
      return;
    }
    for (long o = 0; o < bytes; o += chunkBytes) {
      body.accept(offset + o, (int) Math.min(chunkBytes, bytes - o));
    }
  }

  /** The number of the last frame queued. */
  long enqueued() {
    return sender.enqueued();
  }

  /** Waits until frame {@code id} has been written (or dropped after a failure). */
  void awaitSent(long id) {
    sender.awaitCompleted(id);
  }

  /** Waits until every queued frame is written; fails if the sender failed. */
  void awaitAllSent() {
    sender.awaitCompleted(sender.enqueued());
    checkFailed();
  }

  /** After a failure: waits until no queued frame still reads the caller's memory. */
  void awaitDrained() {
    if (sender != null) {
      sender.awaitDrained();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Sender thread, watchdog, close

  private record Item(Peer to, int seq, int op, String opName, ByteBuffer payload) {}

  private static final Item STOP = new Item(null, 0, 0, null, null);

  /** Writes queued frames in order; after a failure it drops them. */
  private final class Sender implements Runnable {
    private final LinkedBlockingQueue<Item> queue = new LinkedBlockingQueue<>();
    private final ByteBuffer hdr = ByteBuffer.allocateDirect(HEADER_BYTES).order(ByteOrder.BIG_ENDIAN);
    private final ByteBuffer[] pair = new ByteBuffer[2];
    private final Object progress = new Object();
    private long enqueued; // calling thread only
    private volatile long completed;
    volatile Wait wait;

    long enqueue(Item it) {
      enqueued++;
      queue.add(it);
      return enqueued;
    }

    long enqueued() {
      return enqueued;
    }

    /** Waits until frame {@code id} has been written (or dropped after a failure). */
    void awaitCompleted(long id) {
      if (completed >= id) {
        return;
      }
      synchronized (progress) {
        while (completed < id) {
          try {
            progress.wait(50);
          } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            CommunicatorException ce = new CommunicatorException(currentOp + " on rank " + rank
                + ": interrupted while waiting for frames to be sent", e);
            abort(ce);
            throw ce;
          }
          if (!senderThread.isAlive() && completed < id) {
            throw new CommunicatorException(currentOp + " on rank " + rank + ": the sender thread has stopped",
                failure.get());
          }
        }
      }
    }

    /**
     * After a failure: waits (ignoring interrupts, at most 10 s) until the sender has dropped or finished
     * every queued frame, so that none still reads the caller's memory.
     */
    void awaitDrained() {
      boolean interrupted = false;
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
      synchronized (progress) {
        while (completed < enqueued && senderThread.isAlive() && System.nanoTime() < deadline) {
          try {
            progress.wait(20);
          } catch (InterruptedException e) {
            interrupted = true;
          }
        }
      }
      if (completed < enqueued && senderThread.isAlive()) {
        LOG.error("Rank {}: the sender thread still holds frames 10 s after a failure", rank);
      }
      if (interrupted) {
        Thread.currentThread().interrupt();
      }
    }

    @Override
    public void run() {
      try {
        while (true) {
          Item it = queue.take();
          if (it == STOP) {
            return;
          }
          if (failure.get() == null) {
            write(it);
          }
          synchronized (progress) {
            completed++;
            progress.notifyAll();
          }
        }
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      } catch (Throwable t) {
        abort(t);
        throw t;
      } finally {
        synchronized (progress) {
          completed = Long.MAX_VALUE;
          progress.notifyAll();
        }
      }
    }

    private void write(Item it) {
      hdr.clear();
      hdr.putInt(FRAME_DATA).putInt(it.seq).putInt(it.op).putInt(it.payload.remaining()).flip();
      pair[0] = hdr;
      pair[1] = it.payload;
      wait = new Wait(it.opName, it.to, "sending to", System.nanoTime());
      try {
        while (hdr.hasRemaining() || it.payload.hasRemaining()) {
          it.to.channel.write(pair);
        }
      } catch (IOException e) {
        ioFailure(it.opName, it.to, "sending to", e);
      } finally {
        wait = null;
        pair[1] = null;
      }
    }
  }

  private void watch() {
    long timeoutNanos = TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    long pollMillis = Math.max(5, Math.min(100, timeoutMillis / 20));
    while (!closed && failure.get() == null) {
      try {
        Thread.sleep(pollMillis);
      } catch (InterruptedException e) {
        return;
      }
      long now = System.nanoTime();
      for (Wait w : new Wait[] {mainWait, sender.wait}) {
        if (w != null && now - w.since > timeoutNanos) {
          String msg = timedOut(w.op, w.what, w.peer);
          LOG.error(msg);
          abort(new CommunicatorException(msg));
          return;
        }
      }
    }
  }

  /** Marks the transport closed; false when it was already. */
  boolean markClosed() {
    if (closed) {
      return false;
    }
    closed = true;
    return true;
  }

  /** Fails later calls, closes every connection and stops the threads (after {@link #markClosed}). */
  void close() {
    if (failure.get() == null) {
      failure.compareAndSet(null, new CommunicatorException("the communicator of rank " + rank + " was closed"));
    }
    closeChannels();
    if (sender != null) {
      sender.queue.add(STOP);
      join(senderThread);
      watchdog.interrupt();
      join(watchdog);
    }
  }

  void join(Thread t) {
    try {
      t.join(TimeUnit.MILLISECONDS.toMillis(Math.max(1000, timeoutMillis)));
      if (t.isAlive()) {
        LOG.warn("Thread {} of rank {} did not stop", t.getName(), rank);
      }
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
