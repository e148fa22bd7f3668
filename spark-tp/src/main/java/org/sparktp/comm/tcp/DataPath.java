package org.sparktp.comm.tcp;

import java.nio.ByteBuffer;
import org.sparktp.backend.Backend;

/**
 * How the collectives of a {@link TcpCommunicator} move bytes once their arguments are checked: ring algorithms over
 * the TCP connections ({@link RingCollectives}), or rounds through a segment of shared memory when every rank is on
 * one host ({@link ShmCollectives}). Buffers are the tensors' host memory; blocks are given as byte offsets (element
 * offsets for the float32 reductions), {@code size() > 1}, and each call runs inside one numbered collective of the
 * {@link TcpTransport}.
 */
interface DataPath {
  /** {@code "tcp"} or {@code "shm"}. */
  String name();

  /** Sums {@code n} float32 elements of {@code data} over the ranks, in place, with {@code reducer}'s kernel. */
  void allReduce(Backend reducer, ByteBuffer data, long n);

  /** Gathers byte blocks {@code [boff[r], boff[r+1])} of {@code recv}; this rank's block comes from {@code own}. */
  void allGather(ByteBuffer own, ByteBuffer recv, long[] boff);

  /**
   * Sums block {@code rank} (float32 elements {@code [off[rank], off[rank+1])}) of {@code send} over the ranks into
   * {@code recv}; {@code inPlace}: {@code recv} is exactly that block of {@code send}.
   */
  void reduceScatter(Backend reducer, ByteBuffer send, ByteBuffer recv, long[] off, int[] counts, boolean inPlace);

  /** Pairwise exchange of blocks of {@code es}-byte elements (element offsets {@code soff}, {@code roff}). */
  void allToAll(ByteBuffer send, long[] soff, int[] sendCounts, ByteBuffer recv, long[] roff, int[] recvCounts,
      int es);

  void broadcast(ByteBuffer data, long bytes, int root);

  long[] gatherLongs(long value);

  /** Called at the end of each collective that did not throw: returns once its last byte has left this rank. */
  void finish();

  /** Called once as the communicator closes, before the connections close (to tell the peers). */
  default void leave() {}

  /** Frees what the path holds (after the connections closed). */
  void close();
}
