package org.sparktp.comm.tcp;

import java.nio.ByteBuffer;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.backend.Backend;
import org.sparktp.comm.AbstractCommunicator;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.comm.HostBuffers;
import org.sparktp.backend.Tensor;

/**
 * Collectives among ranks in different processes (usually different hosts): one authenticated TCP connection per
 * pair of ranks ({@link TcpTransport}: frames, a sender thread, a watchdog), ring algorithms for the
 * bandwidth-bound collectives ({@link RingCollectives}). Made by {@link TcpRendezvous}.
 *
 * <p>Bytes move straight between the tensors' off-heap memory and the sockets (no heap copies), in frames of at most
 * {@link TcpOptions#chunkBytes()}, pipelined.
 *
 * <p>Buffers: {@code allGather} may run in place ({@code send} is exactly this rank's block of
 * {@code recv}), {@code reduceScatter} too ({@code recv} is exactly this rank's block of {@code send});
 * any other overlap of the send and receive buffers is refused with an {@link IllegalArgumentException}.
 *
 * <p>Shared memory: when every rank is on the same host (by the addresses given to the rendezvous) and
 * {@link TcpOptions#shm()}, the ranks agree over their authenticated connections on a {@link ShmSegment}
 * ({@link ShmSetup}) and every collective moves its data through it in rounds ({@link ShmCollectives}); the
 * connections then only detect a dead peer. {@link #transport()} says which path is in use. {@link #close()} unmaps
 * the segment; its file is unlinked during the setup.
 *
 * <p>Failures: every wait is bounded by {@link #timeoutMillis()}; a closed or reset connection fails the waiting
 * call at once. Any failure aborts the communicator, which closes every connection so that the peers fail at once
 * too instead of waiting for their timeout. A communicator that failed stays failed. Collectives must be called from
 * one thread at a time; {@link #abort} and {@link #close} from any thread.
 */
public final class TcpCommunicator extends AbstractCommunicator {
  private static final Logger LOG = LoggerFactory.getLogger(TcpCommunicator.class);

  private final TcpTransport transport;
  private final DataPath path;
  private final ReentrantLock opLock = new ReentrantLock();

  TcpCommunicator(int rank, int size, TcpTransport.Peer[] peers, TcpOptions opts) {
    this(rank, size, peers, opts, null);
  }

  /**
   * {@code self}: this rank's address as given to the rendezvous; with {@link TcpOptions#shm()} and every
   * address on the same host, the ranks agree on a shared-memory segment over their connections.
   */
  TcpCommunicator(int rank, int size, TcpTransport.Peer[] peers, TcpOptions opts, String self) {
    super(rank, size, opts.timeoutMillis());
    transport = new TcpTransport(rank, size, peers, opts.timeoutMillis(), opts.chunkBytes());
    ShmSegment segment = null;
    if (size > 1 && self != null && ShmSetup.sameHost(self, peers)) {
      try {
        segment = ShmSetup.agree(transport, opts.shm());
      } catch (RuntimeException | Error e) {
        transport.markClosed();
        transport.close();
        throw e;
      }
    }
    path = segment != null ? new ShmCollectives(transport, segment, opts.oneShotBytes())
        : new RingCollectives(transport, opts.oneShotBytes());
    LOG.info("Rank {} of {} connected over {}: {}", rank, size, transport(), transport.describePeers());
  }

  /** {@code "shm"} when data moves through shared memory, else {@code "tcp"}. */
  public String transport() {
    return path.name();
  }

  /** The address of peer {@code r} as it was given to the rendezvous ({@code host:port}). */
  public String peerAddress(int r) {
    if (r == rank() || r < 0 || r >= size()) {
      throw new IllegalArgumentException("No peer " + r + " on rank " + rank() + " of " + size());
    }
    return transport.peers[r].address;
  }

  // ---------------------------------------------------------------------------------------------
  // Collectives: the tensors' host memory, the buffer checks, then the data path

  @Override
  protected void doAllReduce(Tensor buf) {
    Backend reducer = buf.backend();
    ByteBuffer data = HostBuffers.bytes(buf);
    long n = buf.numel();
    run(TcpTransport.OP_ALL_REDUCE, () -> path.allReduce(reducer, data, n));
  }

  /** An all-gather only moves elements: bf16/f16 move in their own dtype (2 bytes each), exactly. */
  @Override
  protected void doAllGather(Tensor send, Tensor recv, int[] counts, long[] off) {
    int es = send.dtype().size();
    ByteBuffer sb = HostBuffers.bytes(send);
    ByteBuffer rb = HostBuffers.bytes(recv);
    long[] boff = new long[size() + 1];
    for (int i = 0; i <= size(); i++) {
      boff[i] = off[i] * es;
    }
    Bytes.aliasing("allGather", rb, boff[rank()], sb, (long) es * counts[rank()]);
    run(TcpTransport.OP_ALL_GATHER, () -> path.allGather(sb, rb, boff));
  }

  @Override
  protected void doReduceScatter(Tensor send, int[] counts, long[] off, Tensor recv) {
    Backend reducer = send.backend();
    ByteBuffer sb = HostBuffers.bytes(send);
    ByteBuffer rb = HostBuffers.bytes(recv);
    boolean inPlace = Bytes.aliasing("reduceScatter", sb, off[rank()] * 4, rb, 4L * counts[rank()]);
    run(TcpTransport.OP_REDUCE_SCATTER, () -> path.reduceScatter(reducer, sb, rb, off, counts, inPlace));
  }

  /** Elements move exactly, in their own dtype. */
  @Override
  protected void doAllToAll(Tensor send, int[] sendCounts, long[] soff, Tensor recv, int[] recvCounts,
      long[] roff) {
    int es = send.dtype().size();
    ByteBuffer sb = HostBuffers.bytes(send);
    ByteBuffer rb = HostBuffers.bytes(recv);
    if (Bytes.overlap(sb, es * soff[size()], rb, es * roff[size()])) {
      throw new IllegalArgumentException("allToAll: the send and receive buffers overlap; use separate tensors");
    }
    run(TcpTransport.OP_ALL_TO_ALL, () -> path.allToAll(sb, soff, sendCounts, rb, roff, recvCounts, es));
  }

  /** Elements move exactly, in their own dtype. */
  @Override
  protected void doBroadcast(Tensor buf, int root) {
    ByteBuffer data = HostBuffers.bytes(buf);
    long bytes = buf.bytes();
    run(TcpTransport.OP_BROADCAST, () -> path.broadcast(data, bytes, root));
  }

  @Override
  protected long[] doAllGatherLong(long value) {
    long[][] out = new long[1][];
    run(TcpTransport.OP_GATHER_LONG, () -> out[0] = path.gatherLongs(value));
    return out[0];
  }

  @Override
  protected void doBarrier() {
    run(TcpTransport.OP_BARRIER, () -> path.gatherLongs(rank()));
  }

  /**
   * Runs one numbered collective: refused when closed or failed; any failure aborts the communicator (and waits
   * until no queued frame still reads the caller's tensors) before it is rethrown.
   */
  private void run(int op, Runnable body) {
    String name = TcpTransport.OP_NAMES[op];
    opLock.lock();
    try {
      if (transport.isClosed()) {
        throw new CommunicatorException(name + " on rank " + rank() + ": the communicator is closed");
      }
      transport.checkFailed(name);
      transport.begin(op);
      try {
        body.run();
        path.finish();
      } catch (RuntimeException | Error e) {
        CommunicatorException ce = e instanceof CommunicatorException c ? c
            : new CommunicatorException(name + " on rank " + rank() + " failed: " + e, e);
        transport.abort(ce);
        transport.awaitDrained(); // no frame may still read the caller's tensors once we return
        throw e;
      } finally {
        transport.end();
      }
      traffic(transport.sentBytes(), transport.receivedBytes());
    } finally {
      opLock.unlock();
    }
  }

  /**
   * Fails every waiting and later call with {@code cause} and closes every connection, so that the
   * peers' waits on this rank fail at once.
   */
  @Override
  public void abort(Throwable cause) {
    transport.abort(cause);
  }

  /** Closes every connection and stops the threads; frees the scratch memory. Harmless when called again. */
  @Override
  public void close() {
    if (!transport.markClosed()) {
      return;
    }
    path.leave();
    transport.close();
    opLock.lock();
    try {
      path.close();
    } finally {
      opLock.unlock();
    }
  }
}
