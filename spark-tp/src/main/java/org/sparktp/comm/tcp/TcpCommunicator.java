package org.sparktp.comm.tcp;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.ClosedByInterruptException;
import java.nio.channels.SocketChannel;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.FloatPointer;
import org.bytedeco.javacpp.Pointer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.TpConf;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.comm.CommStats;
import org.sparktp.comm.Collectives;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.comm.HalfPrecision;
import org.sparktp.comm.HostBuffers;
import org.sparktp.tensor.Tensor;

/**
 * Collectives over TCP among ranks in different processes (usually different hosts): one authenticated
 * connection per pair of ranks, ring algorithms for the bandwidth-bound collectives. Made by
 * {@link TcpRendezvous}.
 *
 * <ul>
 *   <li>{@code allReduce}: ring reduce-scatter then ring all-gather over {@code p} balanced segments;
 *       each rank sends {@code 2(p-1)/p} of the buffer. Segment {@code k} is summed in one fixed order
 *       ({@code x_k + x_{k+1} + ...}) and then copied to every rank, so all ranks get bitwise identical
 *       results.</li>
 *   <li>{@code allGather}, {@code reduceScatter}: the ring's two phases alone, blocks of uneven sizes.</li>
 *   <li>{@code allToAll}: pairwise exchange, step {@code s} sends to {@code rank+s} and receives from
 *       {@code rank-s}.</li>
 *   <li>{@code broadcast}: a pipelined chain from the root around the ring.</li>
 * </ul>
 *
 * <p>Bytes move straight between the tensors' off-heap memory and the sockets (no heap copies). Every
 * message is split into frames of at most {@link TcpOptions#chunkBytes()} and pipelined: a dedicated
 * sender thread writes to the next rank while the calling thread receives from the previous one and
 * reduces chunk {@code k} while chunk {@code k+1} arrives. Each frame carries a 16-byte header (type,
 * collective number, operation, length) that the receiver checks against what it expects; any mismatch
 * fails the collective with a message that names both sides.
 *
 * <p>Buffers: {@code allGather} may run in place ({@code send} is exactly this rank's block of
 * {@code recv}), {@code reduceScatter} too ({@code recv} is exactly this rank's block of {@code send});
 * any other overlap of the send and receive buffers is refused with an {@link IllegalArgumentException}.
 * {@code reduceScatter} with three or more ranks keeps two off-heap work buffers of the largest block it
 * forwards, reused by later calls and freed by {@link #close()}.
 *
 * <p>Shared memory: when every rank is on the same host (by the addresses given to the rendezvous) and
 * {@link TcpOptions#shm()}, the ranks agree over their authenticated connections on a {@link ShmSegment}
 * and every collective moves its data through it in rounds (see {@code shmAllReduce} and the others); the
 * connections then only detect a dead peer (one thread per peer blocks reading it). {@link #transport()}
 * says which path is in use. {@link #close()} unmaps the segment; its file is unlinked during the setup.
 *
 * <p>Failures: a watchdog bounds every wait (for one frame to arrive or to be written) by
 * {@link #timeoutMillis()}; a closed or reset connection
 * fails the waiting call at once. Any failure aborts the communicator, which closes every connection so
 * that the peers fail at once too instead of waiting for their timeout. A communicator that failed stays
 * failed. Collectives must be called from one thread at a time; {@link #abort} and {@link #close} from
 * any thread.
 */
public final class TcpCommunicator implements Communicator {
  private static final Logger LOG = LoggerFactory.getLogger(TcpCommunicator.class);

  static final int FRAME_DATA = 0x54504446; // "TPDF"
  static final int HEADER_BYTES = 16;

  private static final int OP_ALL_REDUCE = 1;
  private static final int OP_ALL_GATHER = 2;
  private static final int OP_REDUCE_SCATTER = 3;
  private static final int OP_ALL_TO_ALL = 4;
  private static final int OP_BROADCAST = 5;
  private static final int OP_GATHER_LONG = 6;
  private static final int OP_BARRIER = 7;
  private static final String[] OP_NAMES = {"?", "allReduce", "allGather", "reduceScatter", "allToAll", "broadcast",
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

  private final int rank;
  private final int size;
  private final long timeoutMillis;
  private final int chunkBytes;
  private final Peer[] peers;
  private final CommStats stats = new CommStats();
  private final AtomicReference<CommunicatorException> failure = new AtomicReference<>();
  private final ReentrantLock opLock = new ReentrantLock();
  private final Sender sender;
  private final Thread senderThread;
  private final Thread watchdog;
  private final ByteBuffer header = ByteBuffer.allocateDirect(HEADER_BYTES).order(ByteOrder.BIG_ENDIAN);
  private volatile Wait mainWait;
  private volatile boolean closed;
  private int seq;
  private volatile String currentOp = "?";
  // Shared-memory data path (all ranks on one host): the segment, the steps this rank has published and
  // the rounds it has begun, and the threads that watch the TCP connections for a dead peer.
  private ShmSegment shm;
  private long shmStep;
  private long shmRound;
  private final List<Thread> liveness = new ArrayList<>();
  private int currentOpCode;
  // Off-heap scratch for reductions, allocated on first use and freed by close().
  private BytePointer scratchMemory;
  private ByteBuffer scratch;
  private BytePointer workMemory;
  private long workBytes;
  private ByteBuffer[] work;
  private long sentBytes;
  private long receivedBytes;

  TcpCommunicator(int rank, int size, Peer[] peers, TcpOptions opts) {
    this(rank, size, peers, opts, null);
  }

  /**
   * {@code self}: this rank's address as given to the rendezvous; with {@link TcpOptions#shm()} and every
   * address on the same host, the ranks agree on a shared-memory segment over their connections.
   */
  /** The backend whose reduction kernel sums partial results (that of the tensor being reduced). */
  private volatile Backend reducer;

  TcpCommunicator(int rank, int size, Peer[] peers, TcpOptions opts, String self) {
    this.rank = rank;
    this.size = size;
    this.peers = peers;
    this.timeoutMillis = opts.timeoutMillis();
    this.chunkBytes = opts.chunkBytes();
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
    if (size > 1 && self != null && sameHost(self)) {
      try {
        setUpShm(opts.shm());
      } catch (RuntimeException | Error e) {
        close();
        throw e;
      }
    }
    LOG.info("Rank {} of {} connected over {}: {}", rank, size, transport(), describePeers());
  }

  /** {@code "shm"} when data moves through shared memory, else {@code "tcp"}. */
  public String transport() {
    return shm != null ? "shm" : "tcp";
  }

  private String describePeers() {
    StringBuilder sb = new StringBuilder();
    for (Peer p : peers) {
      if (p != null) {
        sb.append(sb.length() == 0 ? "" : ", ").append(p);
      }
    }
    return sb.length() == 0 ? "no peers" : sb.toString();
  }

  @Override
  public int rank() {
    return rank;
  }

  @Override
  public int size() {
    return size;
  }

  @Override
  public long timeoutMillis() {
    return timeoutMillis;
  }

  @Override
  public CommStats stats() {
    return stats;
  }

  /** The address of peer {@code r} as it was given to the rendezvous ({@code host:port}). */
  public String peerAddress(int r) {
    if (r == rank || r < 0 || r >= size) {
      throw new IllegalArgumentException("No peer " + r + " on rank " + rank + " of " + size);
    }
    return peers[r].address;
  }

  // ---------------------------------------------------------------------------------------------
  // Collectives

  @Override
  public void allReduce(Tensor buf) {
    if (HalfPrecision.needed(buf)) {
      HalfPrecision.allReduce(this, buf);
      return;
    }
    reducer = buf.backend();

    ByteBuffer data = HostBuffers.bytes(buf);
    if (size == 1) {
      return;
    }
    long n = buf.numel();
    if (shm != null) {
      run(OP_ALL_REDUCE, () -> shmAllReduce(data, n));
      return;
    }
    run(OP_ALL_REDUCE, () -> {
      long[] seg = balanced(n, size);
      Peer next = peers[(rank + 1) % size];
      Peer prev = peers[(rank + size - 1) % size];
      ByteBuffer scratch = scratch();
      // Reduce-scatter: p-1 steps; the segment received and reduced at step s is sent on at step s+1,
      // and the segment completed at the last step is the first one sent by the all-gather.
      forEachChunk(seg[rank] * 4, (seg[rank + 1] - seg[rank]) * 4, (off, len) -> send(next, slice(data, off, len)));
      for (int s = 0; s < size - 1; s++) {
        int k = mod(rank - s - 1);
        forEachChunk(seg[k] * 4, (seg[k + 1] - seg[k]) * 4, (off, len) -> {
          ByteBuffer in = scratch.duplicate().clear().limit(len);
          receive(prev, in);
          ByteBuffer dst = slice(data, off, len);
          add(in, dst);
          send(next, dst);
        });
      }
      // All-gather: every received segment is final; forward it unless the next rank already has it.
      for (int t = 0; t < size - 1; t++) {
        int k = mod(rank - t);
        boolean forward = t < size - 2;
        forEachChunk(seg[k] * 4, (seg[k + 1] - seg[k]) * 4, (off, len) -> {
          ByteBuffer dst = slice(data, off, len);
          receive(prev, dst);
          if (forward) {
            send(next, dst);
          }
        });
      }
    });
  }

  @Override
  public void allGather(Tensor send, Tensor recv, int[] counts) {
    HalfPrecision.checkSame("allGather", send, recv);
    // an all-gather only moves elements: bf16/f16 move in their own dtype (2 bytes each), exactly
    int es = send.dtype().size();
    Collectives.checkCounts("allGather", counts, size);
    long total = Collectives.sum(counts);
    Collectives.checkFits("allGather", "send", send, counts[rank]);
    Collectives.checkFits("allGather", "receive", recv, total);
    long[] off = Collectives.offsets(counts);
    ByteBuffer sb = HostBuffers.bytes(send);
    ByteBuffer rb = HostBuffers.bytes(recv);
    if (size == 1) {
      copy(sb, 0, rb, 0, (long) es * counts[0]);
      return;
    }
    long[] boff = new long[size + 1];
    for (int i = 0; i <= size; i++) {
      boff[i] = off[i] * es;
    }
    aliasing("allGather", rb, boff[rank], sb, (long) es * counts[rank]);
    run(OP_ALL_GATHER, () -> {
      if (shm != null) {
        shmAllGather(sb, rb, boff);
      } else {
        ringAllGather(sb, rb, boff);
      }
    });
  }

  /** Ring all-gather of byte blocks {@code [boff[r], boff[r+1])}; this rank's block comes from {@code own}. */
  private void ringAllGather(ByteBuffer own, ByteBuffer recv, long[] boff) {
    Peer next = peers[(rank + 1) % size];
    Peer prev = peers[(rank + size - 1) % size];
    long mine = boff[rank + 1] - boff[rank];
    forEachChunk(0, mine, (o, len) -> send(next, slice(own, o, len)));
    // This rank's own block is copied into place one chunk after each chunk received, so that the
    // copy never keeps the socket unread for long.
    long[] copied = {0};
    for (int s = 0; s < size - 1; s++) {
      int k = mod(rank - s - 1);
      boolean forward = s < size - 2;
      forEachChunk(boff[k], boff[k + 1] - boff[k], (o, len) -> {
        ByteBuffer dst = slice(recv, o, len);
        receive(prev, dst);
        if (forward) {
          send(next, dst);
        }
        if (copied[0] < mine) {
          long c = Math.min(chunkBytes, mine - copied[0]);
          copy(own, copied[0], recv, boff[rank] + copied[0], c);
          copied[0] += c;
        }
      });
    }
    copy(own, copied[0], recv, boff[rank] + copied[0], mine - copied[0]);
  }

  @Override
  public void reduceScatter(Tensor send, int[] counts, Tensor recv) {
    HalfPrecision.checkSame("reduceScatter", send, recv);
    if (HalfPrecision.needed(send)) {
      HalfPrecision.reduceScatter(this, send, counts, recv);
      return;
    }
    reducer = send.backend();

    Collectives.checkCounts("reduceScatter", counts, size);
    long total = Collectives.sum(counts);
    Collectives.checkFits("reduceScatter", "send", send, total);
    Collectives.checkFits("reduceScatter", "receive", recv, counts[rank]);
    long[] off = Collectives.offsets(counts);
    ByteBuffer sb = HostBuffers.bytes(send);
    ByteBuffer rb = HostBuffers.bytes(recv);
    if (size == 1) {
      copy(sb, 0, rb, 0, 4L * counts[0]);
      return;
    }
    boolean inPlace = aliasing("reduceScatter", sb, off[rank] * 4, rb, 4L * counts[rank]);
    if (shm != null) {
      run(OP_REDUCE_SCATTER, () -> shmReduceScatter(sb, rb, off, counts));
      return;
    }
    run(OP_REDUCE_SCATTER, () -> {
      Peer next = peers[(rank + 1) % size];
      Peer prev = peers[(rank + size - 1) % size];
      // Block k starts at rank k+1 (its own values) and gathers one summand per hop, ending at rank k.
      // Partial sums in flight live in two work buffers used alternately by the steps: buffer s % 2 is
      // reused at step s + 2, once the frames forwarded from it (at step s) are written. That wait only
      // depends on the next rank having read its step s + 1, never on a later step, so the ring cannot
      // stall however small the socket buffers are.
      int first = mod(rank - 1);
      forEachChunk(off[first] * 4, 4L * counts[first], (o, len) -> send(next, slice(sb, o, len)));
      long maxBlock = 0;
      for (int s = 0; s < size - 2; s++) {
        maxBlock = Math.max(maxBlock, 4L * counts[mod(rank - s - 2)]);
      }
      ByteBuffer[] work = size > 2 ? workBuffers(maxBlock) : null;
      long[] lastSend = new long[2];
      for (int s = 0; s < size - 1; s++) {
        int k = mod(rank - s - 2);
        boolean last = s == size - 2;
        long base = off[k] * 4;
        ByteBuffer w = last ? rb : work[s % 2];
        if (!last) {
          sender.awaitCompleted(lastSend[s % 2]);
          checkFailed();
        }
        forEachChunk(base, 4L * counts[k], (o, len) -> {
          ByteBuffer acc = slice(w, o - base, len);
          if (last && inPlace) {
            // recv is this rank's own block of send: receive aside, then add into it.
            ByteBuffer in = scratch().duplicate().clear().limit(len);
            receive(prev, in);
            add(in, acc);
            return;
          }
          receive(prev, acc);
          add(slice(sb, o, len), acc);
          if (!last) {
            send(next, acc);
          }
        });
        if (!last) {
          lastSend[s % 2] = sender.enqueued();
        }
      }
    });
  }

  @Override
  public void allToAll(Tensor send, int[] sendCounts, Tensor recv, int[] recvCounts) {
    HalfPrecision.checkSame("allToAll", send, recv);
    int es = send.dtype().size(); // elements move exactly, in their own dtype

    Collectives.checkCounts("allToAll", sendCounts, size);
    Collectives.checkCounts("allToAll", recvCounts, size);
    long sendTotal = Collectives.sum(sendCounts);
    long recvTotal = Collectives.sum(recvCounts);
    Collectives.checkFits("allToAll", "send", send, sendTotal);
    Collectives.checkFits("allToAll", "receive", recv, recvTotal);
    long[] soff = Collectives.offsets(sendCounts);
    long[] roff = Collectives.offsets(recvCounts);
    ByteBuffer sb = HostBuffers.bytes(send);
    ByteBuffer rb = HostBuffers.bytes(recv);
    if (size == 1) {
      copy(sb, 0, rb, 0, (long) es * sendCounts[0]);
      return;
    }
    if (sendCounts[rank] != recvCounts[rank]) {
      throw new IllegalArgumentException("allToAll: rank " + rank + " sends " + sendCounts[rank]
          + " elements to itself but expects " + recvCounts[rank]);
    }
    if (overlap(sb, es * sendTotal, rb, es * recvTotal)) {
      throw new IllegalArgumentException("allToAll: the send and receive buffers overlap; use separate tensors");
    }
    if (shm != null) {
      run(OP_ALL_TO_ALL, () -> shmAllToAll(sb, soff, sendCounts, rb, roff, recvCounts, es));
      return;
    }
    run(OP_ALL_TO_ALL, () -> {
      // The sender works through the destinations in step order while this thread receives in step
      // order; step s of every rank only waits on step s of its source, so there is no cycle.
      for (int s = 1; s < size; s++) {
        int dst = (rank + s) % size;
        forEachChunk(soff[dst] * es, (long) es * sendCounts[dst], (o, len) -> send(peers[dst], slice(sb, o, len)));
      }
      copy(sb, soff[rank] * es, rb, roff[rank] * es, (long) es * sendCounts[rank]);
      for (int s = 1; s < size; s++) {
        int src = mod(rank - s);
        forEachChunk(roff[src] * es, (long) es * recvCounts[src], (o, len) -> receive(peers[src], slice(rb, o, len)));
      }
    });
  }

  @Override
  public void broadcast(Tensor buf, int root) {
    // elements move exactly, in their own dtype
    Collectives.checkRoot("broadcast", root, size);
    ByteBuffer data = HostBuffers.bytes(buf);
    if (size == 1) {
      return;
    }
    long bytes = buf.bytes();
    if (shm != null) {
      run(OP_BROADCAST, () -> shmBroadcast(data, bytes, root));
      return;
    }
    run(OP_BROADCAST, () -> {
      Peer next = peers[(rank + 1) % size];
      Peer prev = peers[(rank + size - 1) % size];
      boolean forward = (rank + 1) % size != root;
      forEachChunk(0, bytes, (o, len) -> {
        ByteBuffer b = slice(data, o, len);
        if (rank != root) {
          receive(prev, b);
        }
        if (forward) {
          send(next, b);
        }
      });
    });
  }

  @Override
  public long[] allGatherLong(long value) {
    return gatherLongs(OP_GATHER_LONG, value);
  }

  @Override
  public void barrier() {
    gatherLongs(OP_BARRIER, rank);
  }

  private long[] gatherLongs(int op, long value) {
    if (size == 1) {
      return new long[] {value};
    }
    if (shm != null) {
      long[][] out = new long[1][];
      run(op, () -> out[0] = shmGatherLongs(value));
      return out[0];
    }
    ByteBuffer own = ByteBuffer.allocateDirect(8).putLong(0, value);
    ByteBuffer all = ByteBuffer.allocateDirect(8 * size);
    long[] boff = new long[size + 1];
    for (int i = 0; i <= size; i++) {
      boff[i] = 8L * i;
    }
    run(op, () -> ringAllGather(own, all, boff));
    long[] out = new long[size];
    for (int i = 0; i < size; i++) {
      out[i] = all.getLong(8 * i);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // Shared-memory data path (every rank on one host)

  private static final int SHM_MAGIC = 0x5450534D; // "TPSM"
  private static final int SPINS = 2000;
  private static final byte SHM_BYE = 0x42;

  private boolean sameHost(String self) {
    String h = host(self);
    for (Peer p : peers) {
      if (p != null && !host(p.address).equals(h)) {
        return false;
      }
    }
    return true;
  }

  private static String host(String address) {
    int c = address.lastIndexOf(':');
    return c < 0 ? address : address.substring(0, c);
  }

  /**
   * Agrees with the peers, over the authenticated connections, on a segment: rank 0 creates it and sends
   * its name, each peer maps it and answers, rank 0 announces the decision (shared memory only if every
   * rank mapped it) and unlinks the file. Rank 0 always sends its offer (possibly "none", then nothing
   * more is exchanged) and the peers answer even with {@code wanted == false}, so that ranks configured
   * differently still agree (on TCP).
   */
  private void setUpShm(boolean wanted) {
    currentOp = "shared-memory setup";
    int window = chunkBytes;
    try {
      if (rank == 0) {
        byte[] nonce = new byte[ShmSegment.NONCE_BYTES];
        new java.security.SecureRandom().nextBytes(nonce);
        ShmSegment seg = null;
        if (wanted && window / size >= ShmSegment.LINE) {
          try {
            seg = ShmSegment.create(size, window, nonce);
          } catch (IOException e) {
            LOG.warn("Rank 0 cannot create a shared-memory segment in {}; the group uses TCP", ShmSegment.directory(), e);
          }
        }
        boolean all = seg != null;
        try {
          byte[] name = seg == null ? new byte[0] : seg.name().getBytes(java.nio.charset.StandardCharsets.UTF_8);
          for (int q = 1; q < size; q++) {
            ByteBuffer offer = ByteBuffer.allocate(16 + nonce.length + name.length);
            offer.putInt(SHM_MAGIC).putInt(seg != null ? 1 : 0).putInt(window).put(nonce).putInt(name.length).put(name)
                .flip();
            writeFully(peers[q], offer);
          }
          for (int q = 1; seg != null && q < size; q++) {
            ByteBuffer reply = ByteBuffer.allocate(8);
            readFully(peers[q], reply, "agreeing on shared memory with");
            checkShmMagic(peers[q], reply.getInt(0));
            all &= reply.getInt(4) == 1;
          }
          for (int q = 1; seg != null && q < size; q++) {
            writeFully(peers[q], ByteBuffer.allocate(8).putInt(SHM_MAGIC).putInt(all ? 1 : 0).flip());
          }
        } catch (RuntimeException | Error e) {
          if (seg != null) {
            seg.close(); // unmapped now, unlinked below
          }
          throw e;
        } finally {
          if (seg != null) {
            try {
              seg.unlink();
            } catch (IOException e) {
              seg.close();
              throw new CommunicatorException("rank 0 cannot remove its shared-memory segment " + seg.name(), e);
            }
          }
        }
        if (all) {
          shm = seg;
        } else if (seg != null) {
          seg.close();
        }
      } else {
        Peer root = peers[0];
        ByteBuffer head = ByteBuffer.allocate(12 + ShmSegment.NONCE_BYTES + 4);
        readFully(root, head, "agreeing on shared memory with");
        head.flip();
        checkShmMagic(root, head.getInt());
        boolean offered = head.getInt() == 1;
        int theirWindow = head.getInt();
        byte[] nonce = new byte[ShmSegment.NONCE_BYTES];
        head.get(nonce);
        int nameLen = head.getInt();
        if (nameLen < 0 || nameLen > 4096) {
          throw protocolError(root, "a shared-memory offer with a name of " + nameLen + " bytes", "not a spark-tp offer");
        }
        ByteBuffer nameBuf = ByteBuffer.allocate(nameLen);
        readFully(root, nameBuf, "agreeing on shared memory with");
        String name = new String(nameBuf.array(), java.nio.charset.StandardCharsets.UTF_8);
        ShmSegment seg = null;
        if (offered && wanted && theirWindow >= TcpOptions.MIN_CHUNK_BYTES && theirWindow <= TcpOptions.MAX_CHUNK_BYTES
            && theirWindow % 4 == 0 && theirWindow / size >= ShmSegment.LINE) {
          try {
            seg = ShmSegment.open(name, size, theirWindow, nonce);
          } catch (IOException e) {
            LOG.warn("Rank {} cannot map the shared-memory segment of rank 0; the group uses TCP", rank, e);
          }
        }
        boolean decided = false;
        try {
          if (!offered) {
            return; // rank 0 does not offer shared memory: no reply, TCP
          }
          writeFully(root, ByteBuffer.allocate(8).putInt(SHM_MAGIC).putInt(seg != null ? 1 : 0).flip());
          ByteBuffer decision = ByteBuffer.allocate(8);
          readFully(root, decision, "agreeing on shared memory with");
          checkShmMagic(root, decision.getInt(0));
          decided = decision.getInt(4) == 1;
          if (decided && seg == null) {
            throw protocolError(root, "a decision to use shared memory that this rank could not map",
                "not a spark-tp decision");
          }
        } catch (RuntimeException | Error e) {
          if (seg != null) {
            seg.close();
          }
          throw e;
        }
        if (decided) {
          shm = seg;
        } else if (seg != null) {
          seg.close();
        }
      }
    } finally {
      currentOp = "?";
    }
    if (shm != null) {
      for (Peer p : peers) {
        if (p != null) {
          Thread t = new Thread(() -> live(p), "tp-comm-live-r" + rank + "-" + p.rank);
          t.setDaemon(true);
          liveness.add(t);
          t.start();
        }
      }
    }
  }

  private void checkShmMagic(Peer from, int magic) {
    if (magic != SHM_MAGIC) {
      throw protocolError(from, "an unknown message type 0x" + Integer.toHexString(magic) + " while agreeing on "
          + "shared memory", "not a spark-tp message");
    }
  }

  private void writeFully(Peer to, ByteBuffer b) {
    try {
      while (b.hasRemaining()) {
        to.channel.write(b);
      }
    } catch (IOException e) {
      throw ioFailure(currentOp, to, "sending to", e);
    }
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
    if (closed || failure.get() != null) {
      LOG.debug("Rank {}: liveness of {} ends: {}", rank, p, msg, err);
      return;
    }
    String op = currentOp;
    CommunicatorException ce = new CommunicatorException((op.equals("?") ? "rank " + rank : op + " on rank " + rank)
        + ": " + msg, err);
    if (bye) {
      // A normal end: later calls fail (the group is incomplete), the connections stay open so that this
      // rank's own close says goodbye to the others too.
      if (failure.compareAndSet(null, ce)) {
        LOG.debug("Rank {}: {}", rank, msg);
      }
    } else {
      abort(ce);
    }
  }

  /** Publishes the next step of this rank and waits until every peer has published it too. */
  private void shmStep(int buffer, long arg, boolean check) {
    shm.post(rank, ++shmStep);
    awaitPeers(shmStep);
    if (check) {
      checkDescriptors(buffer, arg);
    }
  }

  /** Starts a round: its buffer (alternating), with this rank's descriptor written in it. */
  private int shmBegin(long arg) {
    int b = (int) (shmRound++ & 1);
    shm.writeDescriptor(rank, b, seq, currentOpCode, arg);
    return b;
  }

  private void checkDescriptors(int b, long arg) {
    for (int q = 0; q < size; q++) {
      if (q == rank) {
        continue;
      }
      int s = shm.descriptorSeq(q, b);
      int op = shm.descriptorOp(q, b);
      if (op != currentOpCode || s != seq) {
        throw protocolError(peers[q], "a frame of its collective #" + s + " ("
            + (op > 0 && op < OP_NAMES.length ? OP_NAMES[op] : "unknown op " + op) + ")",
            "this rank is in collective #" + seq + " (" + currentOp
            + "): the ranks did not call the same collectives in the same order");
      }
      long a = shm.descriptorArg(q, b);
      if (a != arg) {
        throw protocolError(peers[q], "a frame of " + a + " bytes where " + arg + " were expected",
            "the ranks disagree on the counts or buffer sizes");
      }
    }
  }

  /**
   * Waits until every peer's step counter reaches {@code target}: spins briefly, then parks for growing
   * intervals (up to 50 us during the first 20 ms, then up to 1 ms). Fails at once on an abort or a dead peer (seen by {@link #live}), and after
   * {@link #timeoutMillis()} naming the first peer still missing.
   */
  private void awaitPeers(long target) {
    long start = System.nanoTime();
    long timeoutNanos = TimeUnit.MILLISECONDS.toNanos(timeoutMillis);
    for (int q = 0; q < size; q++) {
      if (q == rank) {
        continue;
      }
      int spins = 0;
      long park = 5_000;
      while (shm.posted(q) < target) {
        CommunicatorException f = failure.get();
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
          String msg = currentOp + " on rank " + rank + ": timed out after " + timeoutMillis + " ms waiting for "
              + peers[q] + " over shared memory (the peer is stuck, overloaded or gone; " + TpConf.COMM_TIMEOUT
              + " sets this bound)";
          LOG.error(msg);
          CommunicatorException ce = new CommunicatorException(msg);
          abort(ce);
          throw failedNow(failure.get());
        }
        if (Thread.currentThread().isInterrupted()) {
          CommunicatorException ce = new CommunicatorException(currentOp + " on rank " + rank
              + ": interrupted while waiting for " + peers[q]);
          abort(ce);
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
    String prefix = currentOp + " on rank " + rank;
    String m = f.getMessage();
    return m.startsWith(prefix) ? new CommunicatorException(m, f) : new CommunicatorException(prefix + ": " + m, f);
  }

  /**
   * All-reduce in rounds of one window: each rank copies the segments of the window that the others
   * reduce into its buffer, then reduces its own segment from every peer's buffer straight into its tensor,
   * publishes the result, and copies the others' results. Each segment is summed by one rank only, so
   * every rank gets bitwise identical results.
   */
  private void shmAllReduce(ByteBuffer data, long n) {
    long total = 4 * n;
    int w = shm.window;
    long rounds = Math.max(1, (total + w - 1) / w);
    for (long t = 0; t < rounds; t++) {
      long o = t * w;
      int len = (int) Math.min(w, total - o);
      long[] seg = balanced(len / 4, size);
      int b = shmBegin(total);
      ByteBuffer mine = shm.data(rank, b);
      for (int k = 0; k < size; k++) {
        if (k != rank) {
          copy(data, o + 4 * seg[k], mine, 4 * seg[k], 4 * (seg[k + 1] - seg[k]));
          sentBytes += 4 * (seg[k + 1] - seg[k]);
        }
      }
      shmStep(b, total, true);
      int myOff = (int) (4 * seg[rank]);
      int myLen = (int) (4 * (seg[rank + 1] - seg[rank]));
      ByteBuffer dst = slice(data, o + myOff, myLen);
      for (int q = 0; q < size; q++) {
        if (q != rank) {
          add(slice(shm.data(q, b), myOff, myLen), dst);
          receivedBytes += myLen;
        }
      }
      copy(data, o + myOff, mine, myOff, myLen);
      sentBytes += (long) myLen * (size - 1);
      shmStep(b, total, false);
      for (int q = 0; q < size; q++) {
        if (q != rank) {
          long qLen = 4 * (seg[q + 1] - seg[q]);
          copy(shm.data(q, b), 4 * seg[q], data, o + 4 * seg[q], qLen);
          receivedBytes += qLen;
        }
      }
    }
  }

  /** All-gather of byte blocks {@code [boff[r], boff[r+1])}; this rank's block comes from {@code own}. */
  private void shmAllGather(ByteBuffer own, ByteBuffer recv, long[] boff) {
    long mine = boff[rank + 1] - boff[rank];
    copy(own, 0, recv, boff[rank], mine);
    long max = 0;
    for (int q = 0; q < size; q++) {
      max = Math.max(max, boff[q + 1] - boff[q]);
    }
    int w = shm.window;
    long rounds = Math.max(1, (max + w - 1) / w);
    for (long t = 0; t < rounds; t++) {
      long o = t * w;
      int b = shmBegin(boff[size]);
      long len = Math.max(0, Math.min(w, mine - o));
      copy(own, o, shm.data(rank, b), 0, len);
      sentBytes += len * (size - 1);
      shmStep(b, boff[size], true);
      for (int q = 0; q < size; q++) {
        long qLen = Math.max(0, Math.min(w, boff[q + 1] - boff[q] - o));
        if (q != rank && qLen > 0) {
          copy(shm.data(q, b), 0, recv, boff[q] + o, qLen);
          receivedBytes += qLen;
        }
      }
    }
  }

  /** Reduce-scatter: each rank's buffer holds, per destination, a piece of that destination's block. */
  private void shmReduceScatter(ByteBuffer sb, ByteBuffer rb, long[] off, int[] counts) {
    long totalBytes = 4 * off[size];
    long mineBytes = 4L * counts[rank];
    copy(sb, 4 * off[rank], rb, 0, mineBytes); // nothing to do in place
    int sub = (shm.window / size) & ~(ShmSegment.LINE - 1);
    long max = 0;
    for (int c : counts) {
      max = Math.max(max, 4L * c);
    }
    long rounds = Math.max(1, (max + sub - 1) / sub);
    for (long t = 0; t < rounds; t++) {
      long o = t * sub;
      int b = shmBegin(totalBytes);
      ByteBuffer buf = shm.data(rank, b);
      for (int k = 0; k < size; k++) {
        long len = Math.max(0, Math.min(sub, 4L * counts[k] - o));
        if (k != rank && len > 0) {
          copy(sb, 4 * off[k] + o, buf, (long) k * sub, len);
          sentBytes += len;
        }
      }
      shmStep(b, totalBytes, true);
      int len = (int) Math.max(0, Math.min(sub, mineBytes - o));
      if (len > 0) {
        ByteBuffer dst = slice(rb, o, len);
        for (int q = 0; q < size; q++) {
          if (q != rank) {
            add(slice(shm.data(q, b), rank * sub, len), dst);
            receivedBytes += len;
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
  private void shmAllToAll(ByteBuffer sb, long[] soff, int[] sendCounts, ByteBuffer rb, long[] roff, int[] recvCounts,
      int es) {
    int sub = (shm.window / size) & ~(ShmSegment.LINE - 1);
    long myMax = 0;
    for (int d = 0; d < size; d++) {
      if (d != rank) {
        myMax = Math.max(myMax, (long) es * sendCounts[d]);
      }
    }
    int b0 = shmBegin(0);
    ByteBuffer first = shm.data(rank, b0);
    for (int d = 0; d < size; d++) {
      first.putLong(d * sub, d == rank ? myMax : (long) es * sendCounts[d]);
    }
    shmStep(b0, 0, true);
    long max = myMax;
    for (int q = 0; q < size; q++) {
      if (q != rank) {
        ByteBuffer theirs = shm.data(q, b0);
        max = Math.max(max, theirs.getLong(q * sub));
        long toMe = theirs.getLong(rank * sub);
        if (toMe != (long) es * recvCounts[q]) {
          throw protocolError(peers[q], "a frame of " + toMe + " bytes where " + (long) es * recvCounts[q]
              + " were expected",
              "the ranks disagree on the counts or buffer sizes");
        }
      }
    }
    copy(sb, soff[rank] * es, rb, roff[rank] * es, (long) es * sendCounts[rank]);
    long rounds = (max + sub - 1) / sub;
    for (long t = 0; t < rounds; t++) {
      long o = t * sub;
      int b = shmBegin(0);
      ByteBuffer buf = shm.data(rank, b);
      for (int d = 0; d < size; d++) {
        long len = Math.max(0, Math.min(sub, (long) es * sendCounts[d] - o));
        if (d != rank && len > 0) {
          copy(sb, es * soff[d] + o, buf, (long) d * sub, len);
          sentBytes += len;
        }
      }
      shmStep(b, 0, true);
      for (int q = 0; q < size; q++) {
        long len = Math.max(0, Math.min(sub, (long) es * recvCounts[q] - o));
        if (q != rank && len > 0) {
          copy(shm.data(q, b), (long) rank * sub, rb, es * roff[q] + o, len);
          receivedBytes += len;
        }
      }
    }
  }

  private void shmBroadcast(ByteBuffer data, long bytes, int root) {
    int w = shm.window;
    long rounds = Math.max(1, (bytes + w - 1) / w);
    for (long t = 0; t < rounds; t++) {
      long o = t * w;
      long len = Math.min(w, bytes - o);
      int b = shmBegin(bytes);
      if (rank == root) {
        copy(data, o, shm.data(rank, b), 0, len);
        sentBytes += len * (size - 1);
      }
      shmStep(b, bytes, true);
      if (rank != root) {
        copy(shm.data(root, b), 0, data, o, len);
        receivedBytes += len;
      }
    }
  }

  private long[] shmGatherLongs(long value) {
    int b = shmBegin(8);
    shm.data(rank, b).putLong(0, value);
    sentBytes += 8L * (size - 1);
    shmStep(b, 8, true);
    long[] out = new long[size];
    for (int q = 0; q < size; q++) {
      out[q] = q == rank ? value : shm.data(q, b).getLong(0);
    }
    receivedBytes += 8L * (size - 1);
    return out;
  }

  // ---------------------------------------------------------------------------------------------
  // The machinery of one collective

  private void run(int op, Runnable body) {
    String name = OP_NAMES[op];
    opLock.lock();
    try {
      if (closed) {
        throw new CommunicatorException(name + " on rank " + rank + ": the communicator is closed");
      }
      checkFailed(name);
      seq++;
      currentOp = name;
      currentOpCode = op;
      sentBytes = 0;
      receivedBytes = 0;
      long t0 = System.nanoTime();
      try {
        body.run();
        if (shm == null) {
          // Over TCP the sender thread may still fail; over shared memory the body saw every peer's data.
          sender.awaitCompleted(sender.enqueued());
          checkFailed();
        }
      } catch (RuntimeException | Error e) {
        CommunicatorException ce = e instanceof CommunicatorException c ? c
            : new CommunicatorException(name + " on rank " + rank + " failed: " + e, e);
        abort(ce);
        sender.awaitDrained(); // no frame may still read the caller's tensors once we return
        throw e;
      } finally {
        currentOp = "?";
      }
      stats.record(sentBytes, receivedBytes, System.nanoTime() - t0);
    } finally {
      opLock.unlock();
    }
  }

  private void checkFailed(String op) {
    CommunicatorException f = failure.get();
    if (f != null) {
      throw new CommunicatorException(op + " on rank " + rank + ": the communicator has failed earlier and cannot "
          + "be used again: " + f.getMessage(), f);
    }
  }

  private void checkFailed() {
    CommunicatorException f = failure.get();
    if (f != null) {
      throw new CommunicatorException(f.getMessage(), f);
    }
  }

  private long send(Peer to, ByteBuffer payload) {
    sentBytes += payload.remaining();
    return sender.enqueue(new Item(to, seq, currentOpCode, currentOp, payload));
  }

  /** Receives one frame into {@code dst}'s remaining bytes; leaves {@code dst}'s position unchanged. */
  private void receive(Peer from, ByteBuffer dst) {
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
      throw protocolError(from, "a frame of its collective #" + theirSeq + " ("
          + (theirOp > 0 && theirOp < OP_NAMES.length ? OP_NAMES[theirOp] : "unknown op " + theirOp) + ")",
          "this rank is in collective #" + seq + " (" + currentOp
          + "): the ranks did not call the same collectives in the same order");
    }
    if (len != expected) {
      throw protocolError(from, "a frame of " + len + " bytes where " + expected + " were expected",
          "the ranks disagree on the counts or buffer sizes");
    }
    readFully(from, dst.duplicate(), "receiving from");
    receivedBytes += expected;
  }

  private CommunicatorException protocolError(Peer from, String what, String why) {
    String msg = currentOp + " on rank " + rank + ": rejected " + what + " from " + from + "; " + why;
    LOG.error(msg);
    CommunicatorException e = new CommunicatorException(msg);
    abort(e);
    return e;
  }

  private void readFully(Peer from, ByteBuffer b, String what) {
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

  private interface ChunkBody {
    void accept(long offset, int length);
  }

  /** Splits {@code [offset, offset + bytes)} into frames of at most one chunk; an empty block is one empty frame. */
  private void forEachChunk(long offset, long bytes, ChunkBody body) {
    if (bytes == 0) {
      body.accept(offset, 0);
      return;
    }
    for (long o = 0; o < bytes; o += chunkBytes) {
      body.accept(offset + o, (int) Math.min(chunkBytes, bytes - o));
    }
  }

  private static ByteBuffer slice(ByteBuffer b, long offset, int length) {
    return b.slice(Math.toIntExact(offset), length);
  }

  private static void copy(ByteBuffer src, long srcOff, ByteBuffer dst, long dstOff, long bytes) {
    if (bytes == 0) {
      return;
    }
    ByteBuffer s = slice(src, srcOff, Math.toIntExact(bytes));
    ByteBuffer d = slice(dst, dstOff, Math.toIntExact(bytes));
    if (address(s) != address(d)) {
      d.put(s);
    }
  }

  private static long address(ByteBuffer b) {
    return new Pointer(b).address() + b.position();
  }

  private static boolean overlap(ByteBuffer a, long aBytes, ByteBuffer b, long bBytes) {
    long x = address(a);
    long y = address(b);
    return aBytes > 0 && bBytes > 0 && x < y + bBytes && y < x + aBytes;
  }

  /**
   * True when {@code small} is exactly the block at {@code offset} of {@code big} (in-place use); throws
   * when the two overlap in any other way, false when they are apart.
   */
  private static boolean aliasing(String op, ByteBuffer big, long offset, ByteBuffer small, long smallBytes) {
    if (!overlap(big, big.remaining(), small, smallBytes)) {
      return false;
    }
    if (address(small) == address(big) + offset) {
      return true;
    }
    throw new IllegalArgumentException(op + ": the send and receive buffers overlap other than in place (the "
        + "smaller one must be exactly this rank's block of the larger one, or apart from it)");
  }

  /**
   * {@code dst += src}, both float32 in native order, by the reduction kernel of the reduced tensor's backend
   * ({@link org.sparktp.backend.Backend#accumulate}; OpenBLAS {@code saxpy} on the CPU).
   */
  private void add(ByteBuffer src, ByteBuffer dst) {
    int n = src.remaining() / 4;
    if (n == 0) {
      return;
    }
    reducer.accumulate(dst, src, DType.F32, n);
  }

  /** The chunk-sized scratch buffer of all-reduce (off-heap, freed by close). */
  private ByteBuffer scratch() {
    if (scratchMemory == null) {
      scratchMemory = new BytePointer((long) chunkBytes);
      scratch = scratchMemory.capacity(chunkBytes).asByteBuffer().order(ByteOrder.nativeOrder());
    }
    return scratch;
  }

  /**
   * Two work buffers of at least {@code bytes} each for reduce-scatter (off-heap, kept for later calls,
   * grown when a larger one is needed, freed by close). No frame from them is pending between collectives.
   */
  private ByteBuffer[] workBuffers(long bytes) {
    long each = Math.max(8, (bytes + 63) & ~63L);
    if (workMemory == null || workBytes < each) {
      if (workMemory != null) {
        workMemory.deallocate();
        workMemory = null;
      }
      if (2 * each > Integer.MAX_VALUE) {
        throw new IllegalArgumentException("reduceScatter: a block of " + bytes + " bytes is too large");
      }
      workMemory = new BytePointer(2 * each);
      workBytes = each;
      ByteBuffer all = workMemory.capacity(2 * each).asByteBuffer();
      work = new ByteBuffer[] {all.slice(0, (int) each), all.slice((int) each, (int) each)};
    }
    return work;
  }

  /** Balanced element offsets of {@code p} segments of {@code n} elements. */
  private static long[] balanced(long n, int p) {
    long[] off = new long[p + 1];
    long base = n / p;
    long rem = n % p;
    for (int r = 0; r < p; r++) {
      off[r + 1] = off[r] + base + (r < rem ? 1 : 0);
    }
    return off;
  }

  private int mod(int x) {
    return ((x % size) + size) % size;
  }

  // ---------------------------------------------------------------------------------------------
  // Sender thread, watchdog, abort, close

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
          String msg = w.op + " on rank " + rank + ": timed out after " + timeoutMillis + " ms " + w.what + " "
              + w.peer + " (the peer is stuck, overloaded or gone; " + TpConf.COMM_TIMEOUT
              + " sets this bound)";
          LOG.error(msg);
          abort(new CommunicatorException(msg));
          return;
        }
      }
    }
  }

  /**
   * Fails every waiting and later call with {@code cause} and closes every connection, so that the
   * peers' waits on this rank fail at once.
   */
  @Override
  public void abort(Throwable cause) {
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

  /** Closes every connection and stops the threads; frees the scratch memory. Harmless when called again. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    if (shm != null) {
      // Tells the peers that this rank left (they fail their next wait on it, without a warning); after an
      // abort the connections are closed already and the peers saw that instead.
      for (Peer p : peers) {
        if (p != null) {
          try {
            p.channel.write(ByteBuffer.wrap(new byte[] {SHM_BYE}));
          } catch (IOException e) {
            LOG.debug("Rank {} could not say goodbye to {} (it is gone already)", rank, p, e);
          }
        }
      }
    }
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
    for (Thread t : liveness) {
      join(t);
    }
    opLock.lock();
    try {
      if (shm != null) {
        shm.close();
        shm = null;
      }
      if (scratchMemory != null) {
        scratchMemory.deallocate();
        scratchMemory = null;
        scratch = null;
      }
      if (workMemory != null) {
        workMemory.deallocate();
        workMemory = null;
        work = null;
      }
    } finally {
      opLock.unlock();
    }
  }

  private void join(Thread t) {
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
