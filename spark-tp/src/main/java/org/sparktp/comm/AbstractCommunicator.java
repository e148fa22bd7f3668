package org.sparktp.comm;

import org.sparktp.backend.Tensor;

/**
 * What every communicator does the same way, whatever moves its bytes (threads of one JVM, TCP, shared memory,
 * NCCL): the argument checks, with the same errors everywhere (counts, buffer sizes, dtypes, roots); the one-rank
 * shortcut (nothing is communicated, an out-of-place collective copies this rank's block); bf16/f16 reductions
 * widened to f32 ({@link HalfPrecision}) on communicators that reduce on the host; and the {@link CommStats} of each
 * collective (one call, its bytes, its time).
 *
 * <p>A transport implements the {@code do*} methods, which are called with checked arguments, the offsets of each
 * rank's block, and {@code size() > 1} (unless {@link #skipsOneRank()} says otherwise); it reports the bytes it
 * moves with {@link #traffic}. A collective that throws records nothing.
 */
public abstract class AbstractCommunicator implements Communicator {
  /** The setting that bounds every wait, named in the timeout errors of every communicator. */
  public static final String TIMEOUT_SETTING = "spark.tp.comm.timeout";

  private final int rank;
  private final int size;
  private final long timeoutMillis;
  private final CommStats stats = new CommStats();
  // bytes of the running collective (collectives run on one thread at a time)
  private long sent;
  private long received;

  protected AbstractCommunicator(int rank, int size, long timeoutMillis) {
    if (size <= 0 || rank < 0 || rank >= size) {
      throw new IllegalArgumentException("Rank " + rank + " outside a group of " + size);
    }
    if (timeoutMillis <= 0) {
      throw new IllegalArgumentException("Communication timeout must be positive, got " + timeoutMillis + " ms ("
          + TIMEOUT_SETTING + ")");
    }
    this.rank = rank;
    this.size = size;
    this.timeoutMillis = timeoutMillis;
  }

  @Override
  public final int rank() {
    return rank;
  }

  @Override
  public final int size() {
    return size;
  }

  @Override
  public final long timeoutMillis() {
    return timeoutMillis;
  }

  @Override
  public final CommStats stats() {
    return stats;
  }

  // ---------------------------------------------------------------------------------------------
  // What a transport implements

  /** Sums {@code buf} over the ranks, in place (f32, or any dtype where {@link #widensHalfReductions()} is false). */
  protected abstract void doAllReduce(Tensor buf);

  /** Gathers block {@code r} ({@code counts[r]} elements at {@code offsets[r]} of {@code recv}) from each rank. */
  protected abstract void doAllGather(Tensor send, Tensor recv, int[] counts, long[] offsets);

  /** Sums block {@code rank()} of {@code send} (at {@code offsets[rank()]}) over the ranks into {@code recv}. */
  protected abstract void doReduceScatter(Tensor send, int[] counts, long[] offsets, Tensor recv);

  /** Sends block {@code r} of {@code send} to rank {@code r}, receives block {@code r} of {@code recv} from it. */
  protected abstract void doAllToAll(Tensor send, int[] sendCounts, long[] sendOffsets, Tensor recv,
      int[] recvCounts, long[] recvOffsets);

  protected abstract void doBroadcast(Tensor buf, int root);

  protected abstract long[] doAllGatherLong(long value);

  protected abstract void doBarrier();

  /**
   * True (the default) when a one-rank group communicates nothing; false for a transport that runs a one-rank group
   * itself (NCCL: its local copy is ordered on the device stream with the tensors' other work).
   */
  protected boolean skipsOneRank() {
    return true;
  }

  /**
   * True (the default) when bf16/f16 reductions are widened to f32 on the tensor's backend, reduced, and rounded
   * once ({@link HalfPrecision}); false for a transport that reduces 16-bit tensors itself.
   */
  protected boolean widensHalfReductions() {
    return true;
  }

  /**
   * The one-rank case of the out-of-place collectives: copies the first {@code count} elements of {@code send} into
   * {@code recv} (different tensors). The default moves host memory; a device transport that skips one rank
   * overrides it.
   */
  protected void copyOwnBlock(Tensor send, Tensor recv, long count) {
    int bytes = Math.toIntExact(count * send.dtype().size());
    if (bytes > 0) {
      HostBuffers.bytes(recv).put(HostBuffers.bytes(send).slice(0, bytes));
    }
  }

  /** Adds to the bytes the running collective sends and receives ({@link #stats()} records them when it returns). */
  protected final void traffic(long sentBytes, long receivedBytes) {
    sent += sentBytes;
    received += receivedBytes;
  }

  // ---------------------------------------------------------------------------------------------
  // The collectives

  private boolean alone() {
    return size == 1 && skipsOneRank();
  }

  private long begin() {
    sent = 0;
    received = 0;
    return System.nanoTime();
  }

  private void end(long t0) {
    stats.record(sent, received, System.nanoTime() - t0);
  }

  @Override
  public final void allReduce(Tensor buf) {
    if (alone()) {
      return;
    }
    if (widensHalfReductions() && HalfPrecision.needed(buf)) {
      HalfPrecision.allReduce(this, buf);
      return;
    }
    long t0 = begin();
    doAllReduce(buf);
    end(t0);
  }

  /** Moves elements exactly: bf16/f16 tensors move in their own dtype (2 bytes an element). */
  @Override
  public final void allGather(Tensor send, Tensor recv, int[] counts) {
    HalfPrecision.checkSame("allGather", send, recv);
    Collectives.checkCounts("allGather", counts, size);
    long[] offsets = Collectives.offsets(counts);
    Collectives.checkFits("allGather", "send", send, counts[rank]);
    Collectives.checkFits("allGather", "receive", recv, Collectives.sum(counts));
    if (alone()) {
      if (send != recv) {
        copyOwnBlock(send, recv, counts[0]);
      }
      return;
    }
    long t0 = begin();
    doAllGather(send, recv, counts, offsets);
    end(t0);
  }

  @Override
  public final void reduceScatter(Tensor send, int[] counts, Tensor recv) {
    HalfPrecision.checkSame("reduceScatter", send, recv);
    Collectives.checkCounts("reduceScatter", counts, size);
    long[] offsets = Collectives.offsets(counts);
    Collectives.checkFits("reduceScatter", "send", send, Collectives.sum(counts));
    Collectives.checkFits("reduceScatter", "receive", recv, counts[rank]);
    if (alone()) {
      if (send != recv) {
        copyOwnBlock(send, recv, counts[0]);
      }
      return;
    }
    if (widensHalfReductions() && HalfPrecision.needed(send)) {
      HalfPrecision.reduceScatter(this, send, counts, recv);
      return;
    }
    long t0 = begin();
    doReduceScatter(send, counts, offsets, recv);
    end(t0);
  }

  /** Moves elements exactly: bf16/f16 tensors move in their own dtype. */
  @Override
  public final void allToAll(Tensor send, int[] sendCounts, Tensor recv, int[] recvCounts) {
    HalfPrecision.checkSame("allToAll", send, recv);
    Collectives.checkCounts("allToAll", sendCounts, size);
    Collectives.checkCounts("allToAll", recvCounts, size);
    long[] sendOffsets = Collectives.offsets(sendCounts);
    long[] recvOffsets = Collectives.offsets(recvCounts);
    Collectives.checkFits("allToAll", "send", send, Collectives.sum(sendCounts));
    Collectives.checkFits("allToAll", "receive", recv, Collectives.sum(recvCounts));
    if (sendCounts[rank] != recvCounts[rank]) {
      throw new IllegalArgumentException("allToAll: rank " + rank + " sends " + sendCounts[rank]
          + " elements to itself but expects " + recvCounts[rank]);
    }
    if (alone()) {
      if (send != recv) {
        copyOwnBlock(send, recv, sendCounts[0]);
      }
      return;
    }
    long t0 = begin();
    doAllToAll(send, sendCounts, sendOffsets, recv, recvCounts, recvOffsets);
    end(t0);
  }

  /** Moves elements exactly: bf16/f16 tensors move in their own dtype. */
  @Override
  public final void broadcast(Tensor buf, int root) {
    Collectives.checkRoot("broadcast", root, size);
    if (alone()) {
      return;
    }
    long t0 = begin();
    doBroadcast(buf, root);
    end(t0);
  }

  @Override
  public final long[] allGatherLong(long value) {
    if (alone()) {
      return new long[] {value};
    }
    long t0 = begin();
    long[] out = doAllGatherLong(value);
    end(t0);
    return out;
  }

  @Override
  public final void barrier() {
    if (alone()) {
      return;
    }
    long t0 = begin();
    doBarrier();
    end(t0);
  }
}
