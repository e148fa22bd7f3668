package org.sparktp.comm;

import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BrokenBarrierException;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.IntFunction;
import org.sparktp.tensor.Tensor;

/**
 * Collectives among ranks that are threads of one JVM (unit tests, and a tensor-parallel group that
 * lives in one process). Each collective posts a snapshot of this rank's send data, waits for every
 * rank, reads the peers' snapshots, and waits again before returning. Sums are taken in rank order, so
 * every rank gets bitwise identical results.
 */
public final class LocalCommunicator implements Communicator {

  /** The shared state of one group; make one per group and take each rank's communicator from it. */
  public static final class Group {
    private final int size;
    private final long timeoutMillis;
    private final CyclicBarrier barrier;
    private final Object[] slots;
    private volatile Throwable abortCause;

    public Group(int size, long timeoutMillis) {
      if (size <= 0) {
        throw new IllegalArgumentException("Group size must be positive, got " + size);
      }
      if (timeoutMillis <= 0) {
        throw new IllegalArgumentException("Communication timeout must be positive, got " + timeoutMillis + " ms");
      }
      this.size = size;
      this.timeoutMillis = timeoutMillis;
      this.barrier = new CyclicBarrier(size);
      this.slots = new Object[size];
    }

    public LocalCommunicator communicator(int rank) {
      if (rank < 0 || rank >= size) {
        throw new IllegalArgumentException("Rank " + rank + " outside [0, " + size + ")");
      }
      return new LocalCommunicator(this, rank);
    }
  }

  private final Group group;
  private final int rank;
  private final CommStats stats = new CommStats();
  private volatile boolean closed;

  private LocalCommunicator(Group group, int rank) {
    this.group = group;
    this.rank = rank;
  }

  /**
   * Runs {@code body} on {@code size} threads, one per rank, each with its communicator, and returns the
   * results in rank order. The first failure aborts the group and is rethrown.
   */
  public static <T> List<T> run(int size, long timeoutMillis, IntFunction<Body<T>> bodies) {
    Group g = new Group(size, timeoutMillis);
    ExecutorService pool = Executors.newFixedThreadPool(size, r -> {
      Thread t = new Thread(r, "tp-rank");
      t.setDaemon(true);
      return t;
    });
    try {
      List<Future<T>> futures = new ArrayList<>();
      for (int r = 0; r < size; r++) {
        final int rank = r;
        futures.add(pool.submit(() -> {
          try (LocalCommunicator c = g.communicator(rank)) {
            return bodies.apply(rank).run(c);
          } catch (Throwable t) {
            g.abortCause = g.abortCause == null ? t : g.abortCause;
            g.barrier.reset();
            throw t;
          }
        }));
      }
      List<T> out = new ArrayList<>();
      Throwable first = null;
      for (Future<T> f : futures) {
        try {
          out.add(f.get());
        } catch (ExecutionException e) {
          Throwable c = e.getCause();
          if (first == null || (first instanceof CommunicatorException && !(c instanceof CommunicatorException))) {
            first = c;
          }
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          throw new CommunicatorException("Interrupted while waiting for the ranks", e);
        }
      }
      if (first instanceof RuntimeException re) {
        throw re;
      }
      if (first instanceof Error err) {
        throw err;
      }
      if (first != null) {
        throw new CommunicatorException("A rank failed: " + first, first);
      }
      return out;
    } finally {
      pool.shutdownNow();
    }
  }

  /** The work of one rank. */
  @FunctionalInterface
  public interface Body<T> {
    T run(Communicator comm) throws Exception;
  }

  @Override
  public int rank() {
    return rank;
  }

  @Override
  public int size() {
    return group.size;
  }

  @Override
  public long timeoutMillis() {
    return group.timeoutMillis;
  }

  private void await(String op) {
    Throwable cause = group.abortCause;
    if (closed) {
      throw new CommunicatorException(op + " on rank " + rank + ": the communicator is closed");
    }
    if (cause != null) {
      throw new CommunicatorException(op + " on rank " + rank + " failed: the group was aborted (" + cause + ")", cause);
    }
    try {
      group.barrier.await(group.timeoutMillis, TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      throw new CommunicatorException(op + " on rank " + rank + " timed out after " + group.timeoutMillis
          + " ms waiting for the other in-process ranks", e);
    } catch (BrokenBarrierException e) {
      Throwable c = group.abortCause;
      throw new CommunicatorException(op + " on rank " + rank + " failed: another rank "
          + (c != null ? "aborted (" + c + ")" : "timed out or failed"), c != null ? c : e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new CommunicatorException(op + " on rank " + rank + " was interrupted", e);
    }
  }

  private static float[] snapshot(Tensor t, long count) {
    float[] a = new float[Math.toIntExact(count)];
    FloatBuffer b = HostBuffers.floats(t);
    b.get(a, 0, a.length);
    return a;
  }

  @Override
  public void allReduce(Tensor buf) {
    if (HalfPrecision.needed(buf)) {
      HalfPrecision.allReduce(this, buf);
      return;
    }

    if (size() == 1) {
      return;
    }
    long t0 = System.nanoTime();
    int n = Math.toIntExact(buf.numel());
    group.slots[rank] = snapshot(buf, n);
    await("allReduce");
    float[] sum = new float[n];
    for (int r = 0; r < size(); r++) {
      float[] s = (float[]) group.slots[r];
      if (s.length != n) {
        group.barrier.reset();
        throw new CommunicatorException("allReduce: rank " + r + " sent " + s.length + " elements, rank " + rank
            + " expected " + n);
      }
      for (int i = 0; i < n; i++) {
        sum[i] += s[i];
      }
    }
    await("allReduce");
    HostBuffers.floats(buf).put(sum);
    stats.record(4L * n, 4L * n * (size() - 1), System.nanoTime() - t0);
  }

  /** This rank's first {@code count} elements as bytes (any dtype). */
  private static byte[] snapshotBytes(Tensor t, long count) {
    byte[] a = new byte[Math.toIntExact(count * t.dtype().size())];
    HostBuffers.bytes(t).get(a);
    return a;
  }

  /** An all-gather moves elements exactly: bf16/f16 tensors move in their own dtype (2 bytes an element). */
  @Override
  public void allGather(Tensor send, Tensor recv, int[] counts) {
    HalfPrecision.checkSame("allGather", send, recv);
    Collectives.checkCounts("allGather", counts, size());
    long total = Collectives.sum(counts);
    Collectives.checkFits("allGather", "send", send, counts[rank]);
    Collectives.checkFits("allGather", "receive", recv, total);
    long[] off = Collectives.offsets(counts);
    int es = send.dtype().size();
    if (size() == 1) {
      if (send != recv) {
        HostBuffers.bytes(recv).put(snapshotBytes(send, counts[0]));
      }
      return;
    }
    long t0 = System.nanoTime();
    group.slots[rank] = snapshotBytes(send, counts[rank]);
    await("allGather");
    java.nio.ByteBuffer out = HostBuffers.bytes(recv);
    for (int r = 0; r < size(); r++) {
      byte[] b = (byte[]) group.slots[r];
      out.position(Math.toIntExact(off[r] * es));
      out.put(b, 0, counts[r] * es);
    }
    await("allGather");
    stats.record((long) es * counts[rank], (long) es * (total - counts[rank]), System.nanoTime() - t0);
  }

  @Override
  public void reduceScatter(Tensor send, int[] counts, Tensor recv) {
    HalfPrecision.checkSame("reduceScatter", send, recv);
    if (HalfPrecision.needed(send)) {
      HalfPrecision.reduceScatter(this, send, counts, recv);
      return;
    }

    Collectives.checkCounts("reduceScatter", counts, size());
    long total = Collectives.sum(counts);
    Collectives.checkFits("reduceScatter", "send", send, total);
    Collectives.checkFits("reduceScatter", "receive", recv, counts[rank]);
    long[] off = Collectives.offsets(counts);
    if (size() == 1) {
      if (send != recv) {
        HostBuffers.floats(recv).put(snapshot(send, counts[0]));
      }
      return;
    }
    long t0 = System.nanoTime();
    group.slots[rank] = snapshot(send, total);
    await("reduceScatter");
    float[] sum = new float[counts[rank]];
    for (int r = 0; r < size(); r++) {
      float[] s = (float[]) group.slots[r];
      for (int i = 0; i < sum.length; i++) {
        sum[i] += s[(int) off[rank] + i];
      }
    }
    await("reduceScatter");
    HostBuffers.floats(recv).put(sum);
    stats.record(4L * (total - counts[rank]), 4L * counts[rank] * (size() - 1), System.nanoTime() - t0);
  }

  /** Moves elements exactly: bf16/f16 tensors move in their own dtype. */
  @Override
  public void allToAll(Tensor send, int[] sendCounts, Tensor recv, int[] recvCounts) {
    HalfPrecision.checkSame("allToAll", send, recv);
    Collectives.checkCounts("allToAll", sendCounts, size());
    Collectives.checkCounts("allToAll", recvCounts, size());
    long sendTotal = Collectives.sum(sendCounts);
    long recvTotal = Collectives.sum(recvCounts);
    Collectives.checkFits("allToAll", "send", send, sendTotal);
    Collectives.checkFits("allToAll", "receive", recv, recvTotal);
    int es = send.dtype().size();
    if (size() == 1) {
      if (send != recv) {
        HostBuffers.bytes(recv).put(snapshotBytes(send, sendCounts[0]));
      }
      return;
    }
    long t0 = System.nanoTime();
    group.slots[rank] = new Object[] {snapshotBytes(send, sendTotal), sendCounts.clone()};
    await("allToAll");
    java.nio.ByteBuffer out = HostBuffers.bytes(recv);
    long[] roff = Collectives.offsets(recvCounts);
    for (int r = 0; r < size(); r++) {
      Object[] s = (Object[]) group.slots[r];
      byte[] data = (byte[]) s[0];
      int[] theirCounts = (int[]) s[1];
      if (theirCounts[rank] != recvCounts[r]) {
        group.barrier.reset();
        throw new CommunicatorException("allToAll: rank " + r + " sends " + theirCounts[rank] + " elements to rank "
            + rank + ", which expects " + recvCounts[r]);
      }
      long[] soff = Collectives.offsets(theirCounts);
      out.position(Math.toIntExact(roff[r] * es));
      out.put(data, Math.toIntExact(soff[rank] * es), recvCounts[r] * es);
    }
    await("allToAll");
    stats.record((long) es * (sendTotal - sendCounts[rank]), (long) es * (recvTotal - recvCounts[rank]),
        System.nanoTime() - t0);
  }

  /** Moves elements exactly: bf16/f16 tensors move in their own dtype. */
  @Override
  public void broadcast(Tensor buf, int root) {
    Collectives.checkRoot("broadcast", root, size());
    if (size() == 1) {
      return;
    }
    long t0 = System.nanoTime();
    int es = buf.dtype().size();
    long n = buf.numel();
    group.slots[rank] = rank == root ? snapshotBytes(buf, n) : null;
    await("broadcast");
    byte[] b = (byte[]) group.slots[root];
    await("broadcast");
    if (rank != root) {
      HostBuffers.bytes(buf).put(b, 0, (int) Math.min(n * es, b.length));
    }
    stats.record(rank == root ? es * n * (size() - 1) : 0, rank == root ? 0 : es * n, System.nanoTime() - t0);
  }

  @Override
  public long[] allGatherLong(long value) {
    if (size() == 1) {
      return new long[] {value};
    }
    long t0 = System.nanoTime();
    group.slots[rank] = value;
    await("allGatherLong");
    long[] out = new long[size()];
    for (int r = 0; r < size(); r++) {
      out[r] = (Long) group.slots[r];
    }
    await("allGatherLong");
    stats.record(8, 8L * (size() - 1), System.nanoTime() - t0);
    return out;
  }

  @Override
  public void barrier() {
    if (size() == 1) {
      return;
    }
    long t0 = System.nanoTime();
    await("barrier");
    stats.record(0, 0, System.nanoTime() - t0);
  }

  @Override
  public CommStats stats() {
    return stats;
  }

  @Override
  public void abort(Throwable cause) {
    if (group.abortCause == null) {
      group.abortCause = cause == null ? new CommunicatorException("aborted") : cause;
    }
    group.barrier.reset();
  }

  @Override
  public void close() {
    closed = true;
  }
}
