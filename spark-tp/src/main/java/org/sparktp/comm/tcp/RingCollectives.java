package org.sparktp.comm.tcp;

import static org.sparktp.comm.tcp.Bytes.add;
import static org.sparktp.comm.tcp.Bytes.copy;
import static org.sparktp.comm.tcp.Bytes.slice;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import org.bytedeco.javacpp.BytePointer;
import org.sparktp.backend.Backend;
import org.sparktp.comm.tcp.TcpTransport.Peer;

/**
 * The collectives over TCP frames, between ranks on different hosts.
 *
 * <ul>
 *   <li>{@code allReduce} of at most {@link TcpOptions#oneShotBytes()}: one shot (every rank sends its buffer to
 *       every peer and sums them in rank order; see {@link #oneShotAllReduce}).</li>
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
 * <p>Every message is pipelined in frames of one chunk: the sender thread writes to the next rank while the calling
 * thread receives from the previous one and reduces chunk {@code k} while chunk {@code k+1} arrives.
 * {@code reduceScatter} with three or more ranks keeps two off-heap work buffers of the largest block it forwards,
 * reused by later calls and freed by {@link #close()}.
 */
final class RingCollectives implements DataPath {
  private final TcpTransport t;
  private final int rank;
  private final int size;
  private final int oneShotBytes;
  // one slot per rank for the one-shot all-reduce (off-heap, grown when needed, freed by close())
  private BytePointer slotMemory;
  private ByteBuffer slots;
  // Off-heap scratch for reductions, allocated on first use and freed by close().
  private BytePointer scratchMemory;
  private ByteBuffer scratch;
  private BytePointer workMemory;
  private long workBytes;
  private ByteBuffer[] work;

  RingCollectives(TcpTransport transport, int oneShotBytes) {
    this.t = transport;
    this.rank = transport.rank;
    this.size = transport.size;
    this.oneShotBytes = oneShotBytes;
  }

  @Override
  public String name() {
    return "tcp";
  }

  private Peer next() {
    return t.peers[(rank + 1) % size];
  }

  private Peer prev() {
    return t.peers[(rank + size - 1) % size];
  }

  private int mod(int x) {
    return ((x % size) + size) % size;
  }

  @Override
  public void allReduce(Backend reducer, ByteBuffer data, long n) {
    if (4 * n <= oneShotBytes) {
      oneShotAllReduce(reducer, data, (int) (4 * n));
      return;
    }
    long[] seg = Bytes.balanced(n, size);
    Peer next = next();
    Peer prev = prev();
    ByteBuffer scratch = scratch();
    // Reduce-scatter: p-1 steps; the segment received and reduced at step s is sent on at step s+1,
    // and the segment completed at the last step is the first one sent by the all-gather.
    t.forEachChunk(seg[rank] * 4, (seg[rank + 1] - seg[rank]) * 4, (off, len) -> t.send(next, slice(data, off, len)));
    for (int s = 0; s < size - 1; s++) {
      int k = mod(rank - s - 1);
      t.forEachChunk(seg[k] * 4, (seg[k + 1] - seg[k]) * 4, (off, len) -> {
        ByteBuffer in = scratch.duplicate().clear().limit(len);
        t.receive(prev, in);
        ByteBuffer dst = slice(data, off, len);
        add(reducer, in, dst);
        t.send(next, dst);
      });
    }
    // All-gather: every received segment is final; forward it unless the next rank already has it.
    for (int s = 0; s < size - 1; s++) {
      int k = mod(rank - s);
      boolean forward = s < size - 2;
      t.forEachChunk(seg[k] * 4, (seg[k + 1] - seg[k]) * 4, (off, len) -> {
        ByteBuffer dst = slice(data, off, len);
        t.receive(prev, dst);
        if (forward) {
          t.send(next, dst);
        }
      });
    }
  }

  /**
   * A small all-reduce in one exchange: every rank sends its whole buffer to every peer (step {@code s} to
   * {@code rank + s}, received from {@code rank - s}, as the all-to-all, so no step waits on a later one), keeps the
   * peers' buffers in its slots, and sums {@code x_0 + x_1 + ... + x_{p-1}} in rank order: every rank gets bitwise
   * identical results after one latency instead of {@code 2(p-1)}.
   */
  private void oneShotAllReduce(Backend reducer, ByteBuffer data, int bytes) {
    ByteBuffer slot = slots(bytes);
    for (int s = 1; s < size; s++) {
      Peer to = t.peers[(rank + s) % size];
      t.forEachChunk(0, bytes, (o, len) -> t.send(to, slice(data, o, len)));
    }
    for (int s = 1; s < size; s++) {
      int src = mod(rank - s);
      long base = (long) src * bytes;
      t.forEachChunk(0, bytes, (o, len) -> t.receive(t.peers[src], slice(slot, base + o, len)));
    }
    if (rank != 0) {
      copy(data, 0, slot, (long) rank * bytes, bytes);
    }
    t.awaitAllSent(); // the sender thread no longer reads data
    if (rank != 0) {
      copy(slot, 0, data, 0, bytes);
    }
    ByteBuffer sum = slice(data, 0, bytes);
    for (int q = 1; q < size; q++) {
      add(reducer, slice(slot, (long) q * bytes, bytes), sum);
    }
  }

  /** The one-shot slots: {@code size} blocks of {@code bytes} (off-heap, kept for later calls). */
  private ByteBuffer slots(int bytes) {
    long need = (long) size * Math.max(bytes, 64);
    if (slotMemory == null || slots.capacity() < need) {
      if (slotMemory != null) {
        slotMemory.deallocate();
      }
      long cap = (long) size * Math.max(oneShotBytes, 64);
      slotMemory = new BytePointer(cap);
      slots = slotMemory.capacity(cap).asByteBuffer().order(ByteOrder.nativeOrder());
    }
    return slots;
  }

  @Override
  public void allGather(ByteBuffer own, ByteBuffer recv, long[] boff) {
    Peer next = next();
    Peer prev = prev();
    long mine = boff[rank + 1] - boff[rank];
    t.forEachChunk(0, mine, (o, len) -> t.send(next, slice(own, o, len)));
    // This rank's own block is copied into place one chunk after each chunk received, so that the
    // copy never keeps the socket unread for long.
    long[] copied = {0};
    for (int s = 0; s < size - 1; s++) {
      int k = mod(rank - s - 1);
      boolean forward = s < size - 2;
      t.forEachChunk(boff[k], boff[k + 1] - boff[k], (o, len) -> {
        ByteBuffer dst = slice(recv, o, len);
        t.receive(prev, dst);
        if (forward) {
          t.send(next, dst);
        }
        if (copied[0] < mine) {
          long c = Math.min(t.chunkBytes, mine - copied[0]);
          copy(own, copied[0], recv, boff[rank] + copied[0], c);
          copied[0] += c;
        }
      });
    }
    copy(own, copied[0], recv, boff[rank] + copied[0], mine - copied[0]);
  }

  @Override
  public void reduceScatter(Backend reducer, ByteBuffer sb, ByteBuffer rb, long[] off, int[] counts,
      boolean inPlace) {
    Peer next = next();
    Peer prev = prev();
    // Block k starts at rank k+1 (its own values) and gathers one summand per hop, ending at rank k.
    // Partial sums in flight live in two work buffers used alternately by the steps: buffer s % 2 is
    // reused at step s + 2, once the frames forwarded from it (at step s) are written. That wait only
    // depends on the next rank having read its step s + 1, never on a later step, so the ring cannot
    // stall however small the socket buffers are.
    int first = mod(rank - 1);
    t.forEachChunk(off[first] * 4, 4L * counts[first], (o, len) -> t.send(next, slice(sb, o, len)));
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
        t.awaitSent(lastSend[s % 2]);
        t.checkFailed();
      }
      t.forEachChunk(base, 4L * counts[k], (o, len) -> {
        ByteBuffer acc = slice(w, o - base, len);
        if (last && inPlace) {
          // recv is this rank's own block of send: receive aside, then add into it.
          ByteBuffer in = scratch().duplicate().clear().limit(len);
          t.receive(prev, in);
          add(reducer, in, acc);
          return;
        }
        t.receive(prev, acc);
        add(reducer, slice(sb, o, len), acc);
        if (!last) {
          t.send(next, acc);
        }
      });
      if (!last) {
        lastSend[s % 2] = t.enqueued();
      }
    }
  }

  @Override
  public void allToAll(ByteBuffer sb, long[] soff, int[] sendCounts, ByteBuffer rb, long[] roff, int[] recvCounts,
      int es) {
    // The sender works through the destinations in step order while this thread receives in step
    // order; step s of every rank only waits on step s of its source, so there is no cycle.
    for (int s = 1; s < size; s++) {
      int dst = (rank + s) % size;
      t.forEachChunk(soff[dst] * es, (long) es * sendCounts[dst], (o, len) -> t.send(t.peers[dst], slice(sb, o, len)));
    }
    copy(sb, soff[rank] * es, rb, roff[rank] * es, (long) es * sendCounts[rank]);
    for (int s = 1; s < size; s++) {
      int src = mod(rank - s);
      t.forEachChunk(roff[src] * es, (long) es * recvCounts[src],
          (o, len) -> t.receive(t.peers[src], slice(rb, o, len)));
    }
  }

  @Override
  public void broadcast(ByteBuffer data, long bytes, int root) {
    Peer next = next();
    Peer prev = prev();
    boolean forward = (rank + 1) % size != root;
    t.forEachChunk(0, bytes, (o, len) -> {
      ByteBuffer b = slice(data, o, len);
      if (rank != root) {
        t.receive(prev, b);
      }
      if (forward) {
        t.send(next, b);
      }
    });
  }

  @Override
  public long[] gatherLongs(long value) {
    ByteBuffer own = ByteBuffer.allocateDirect(8).putLong(0, value);
    ByteBuffer all = ByteBuffer.allocateDirect(8 * size);
    long[] boff = new long[size + 1];
    for (int i = 0; i <= size; i++) {
      boff[i] = 8L * i;
    }
    allGather(own, all, boff);
    long[] out = new long[size];
    for (int i = 0; i < size; i++) {
      out[i] = all.getLong(8 * i);
    }
    return out;
  }

  /** Over TCP the sender thread may still fail after the body returned. */
  @Override
  public void finish() {
    t.awaitAllSent();
  }

  /** The chunk-sized scratch buffer of the reductions (off-heap, freed by close). */
  private ByteBuffer scratch() {
    if (scratchMemory == null) {
      scratchMemory = new BytePointer((long) t.chunkBytes);
      scratch = scratchMemory.capacity(t.chunkBytes).asByteBuffer().order(ByteOrder.nativeOrder());
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

  @Override
  public void close() {
    if (slotMemory != null) {
      slotMemory.deallocate();
      slotMemory = null;
      slots = null;
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
  }
}
