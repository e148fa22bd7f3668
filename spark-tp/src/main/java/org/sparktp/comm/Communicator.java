package org.sparktp.comm;

import org.sparktp.backend.Tensor;

/**
 * Collectives among the {@link #size()} ranks of one tensor-parallel group. Every rank calls the same
 * collectives in the same order. Buffers are {@link Tensor}s seen as flat arrays of
 * {@link Tensor#numel()} floats; counts are in elements and may differ between ranks (uneven shards).
 *
 * <p>Every blocking call is bounded by {@link #timeoutMillis()} and fails with a
 * {@link CommunicatorException} that names the operation and the peer. After {@link #abort(Throwable)}
 * every waiting and later call fails at once. With one rank, nothing is communicated.
 */
public interface Communicator extends AutoCloseable {

  /** This rank, in {@code [0, size())}. */
  int rank();

  /** Number of ranks in the group. */
  int size();

  /** Bound on every wait, in milliseconds. */
  long timeoutMillis();

  /** Element-wise sum over ranks, in place, of the first {@code buf.numel()} elements. */
  void allReduce(Tensor buf);

  /**
   * Gathers {@code counts[r]} elements from each rank {@code r} into {@code recv}, concatenated in rank
   * order. {@code send} holds at least {@code counts[rank()]} elements; {@code recv} at least
   * {@code sum(counts)}.
   */
  void allGather(Tensor send, Tensor recv, int[] counts);

  /**
   * {@code send} holds {@code sum(counts)} elements laid out in rank order; rank {@code r} receives into
   * {@code recv} the sum over ranks of block {@code r} ({@code counts[r]} elements).
   */
  void reduceScatter(Tensor send, int[] counts, Tensor recv);

  /**
   * {@code send} holds {@code sendCounts[r]} elements for each destination {@code r}, in rank order;
   * {@code recv} receives {@code recvCounts[r]} elements from each source {@code r}, in rank order.
   * {@code sendCounts[r]} on this rank must equal {@code recvCounts[rank()]} on rank {@code r}.
   */
  void allToAll(Tensor send, int[] sendCounts, Tensor recv, int[] recvCounts);

  /** Copies {@code buf} from {@code root} to every other rank. */
  void broadcast(Tensor buf, int root);

  /** Gathers one long from every rank (row counts, flags); the result is indexed by rank. */
  long[] allGatherLong(long value);

  /** Returns once every rank has called it. */
  void barrier();

  /** Counters of what this rank has communicated. */
  CommStats stats();

  /**
   * Fails every waiting and later call of this rank with {@code cause}, and tells the peers where the
   * transport can. Safe to call from any thread, more than once.
   */
  void abort(Throwable cause);

  /** Releases sockets and buffers; harmless when called again. */
  @Override
  void close();
}
