package org.sparktp.comm;

import java.nio.ByteBuffer;
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
import org.sparktp.backend.Tensor;

/**
 * Collectives among ranks that are threads of one JVM (unit tests, and a tensor-parallel group that
 * lives in one process). Each collective posts a snapshot of this rank's send data, waits for every
 * rank, reads the peers' snapshots, and waits again before returning. Sums are taken in rank order, so
 * every rank gets bitwise identical results.
 */
public final class LocalCommunicator extends AbstractCommunicator {

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
  private volatile boolean closed;

  private LocalCommunicator(Group group, int rank) {
    super(rank, group.size, group.timeoutMillis);
    this.group = group;
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

  private void await(String op) {
    Throwable cause = group.abortCause;
    if (closed) {
      throw new CommunicatorException(op + " on rank " + rank() + ": the communicator is closed");
    }
    if (cause != null) {
      throw new CommunicatorException(op + " on rank " + rank() + " failed: the group was aborted (" + cause + ")", cause);
    }
    try {
      group.barrier.await(group.timeoutMillis, TimeUnit.MILLISECONDS);
    } catch (TimeoutException e) {
      throw new CommunicatorException(op + " on rank " + rank() + " timed out after " + group.timeoutMillis
          + " ms waiting for the other in-process ranks", e);
    } catch (BrokenBarrierException e) {
      Throwable c = group.abortCause;
      throw new CommunicatorException(op + " on rank " + rank() + " failed: another rank "
          + (c != null ? "aborted (" + c + ")" : "timed out or failed"), c != null ? c : e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new CommunicatorException(op + " on rank " + rank() + " was interrupted", e);
    }
  }

  private static float[] snapshot(Tensor t, long count) {
    float[] a = new float[Math.toIntExact(count)];
    FloatBuffer b = HostBuffers.floats(t);
    b.get(a, 0, a.length);
    return a;
  }

  @Override
  protected void doAllReduce(Tensor buf) {
    int n = Math.toIntExact(buf.numel());
    group.slots[rank()] = snapshot(buf, n);
    await("allReduce");
    float[] sum = new float[n];
    for (int r = 0; r < size(); r++) {
      float[] s = (float[]) group.slots[r];
      if (s.length != n) {
        group.barrier.reset();
        throw new CommunicatorException("allReduce: rank " + r + " sent " + s.length + " elements, rank " + rank()
            + " expected " + n);
      }
      for (int i = 0; i < n; i++) {
        sum[i] += s[i];
      }
    }
    await("allReduce");
    HostBuffers.floats(buf).put(sum);
    traffic(4L * n, 4L * n * (size() - 1));
  }

  /** This rank's first {@code count} elements as bytes (any dtype). */
  private static byte[] snapshotBytes(Tensor t, long count) {
    byte[] a = new byte[Math.toIntExact(count * t.dtype().size())];
    HostBuffers.bytes(t).get(a);
    return a;
  }

  @Override
  protected void doAllGather(Tensor send, Tensor recv, int[] counts, long[] off) {
    int es = send.dtype().size();
    group.slots[rank()] = snapshotBytes(send, counts[rank()]);
    await("allGather");
    ByteBuffer out = HostBuffers.bytes(recv);
    for (int r = 0; r < size(); r++) {
      byte[] b = (byte[]) group.slots[r];
      out.position(Math.toIntExact(off[r] * es));
      out.put(b, 0, counts[r] * es);
    }
    await("allGather");
    traffic((long) es * counts[rank()], (long) es * (off[size()] - counts[rank()]));
  }

  @Override
  protected void doReduceScatter(Tensor send, int[] counts, long[] off, Tensor recv) {
    long total = off[size()];
    group.slots[rank()] = snapshot(send, total);
    await("reduceScatter");
    float[] sum = new float[counts[rank()]];
    for (int r = 0; r < size(); r++) {
      float[] s = (float[]) group.slots[r];
      for (int i = 0; i < sum.length; i++) {
        sum[i] += s[(int) off[rank()] + i];
      }
    }
    await("reduceScatter");
    HostBuffers.floats(recv).put(sum);
    traffic(4L * (total - counts[rank()]), 4L * counts[rank()] * (size() - 1));
  }

  @Override
  protected void doAllToAll(Tensor send, int[] sendCounts, long[] soff, Tensor recv, int[] recvCounts,
      long[] roff) {
    int es = send.dtype().size();
    long sendTotal = soff[size()];
    group.slots[rank()] = new Object[] {snapshotBytes(send, sendTotal), sendCounts.clone()};
    await("allToAll");
    ByteBuffer out = HostBuffers.bytes(recv);
    for (int r = 0; r < size(); r++) {
      Object[] s = (Object[]) group.slots[r];
      byte[] data = (byte[]) s[0];
      int[] theirCounts = (int[]) s[1];
      if (theirCounts[rank()] != recvCounts[r]) {
        group.barrier.reset();
        throw new CommunicatorException("allToAll: rank " + r + " sends " + theirCounts[rank()] + " elements to rank "
            + rank() + ", which expects " + recvCounts[r]);
      }
      long[] theirOffsets = Collectives.offsets(theirCounts);
      out.position(Math.toIntExact(roff[r] * es));
      out.put(data, Math.toIntExact(theirOffsets[rank()] * es), recvCounts[r] * es);
    }
    await("allToAll");
    traffic((long) es * (sendTotal - sendCounts[rank()]), (long) es * (roff[size()] - recvCounts[rank()]));
  }

  @Override
  protected void doBroadcast(Tensor buf, int root) {
    int es = buf.dtype().size();
    long n = buf.numel();
    group.slots[rank()] = rank() == root ? snapshotBytes(buf, n) : null;
    await("broadcast");
    byte[] b = (byte[]) group.slots[root];
    await("broadcast");
    if (rank() != root) {
      HostBuffers.bytes(buf).put(b, 0, (int) Math.min(n * es, b.length));
    }
    traffic(rank() == root ? es * n * (size() - 1) : 0, rank() == root ? 0 : es * n);
  }

  @Override
  protected long[] doAllGatherLong(long value) {
    group.slots[rank()] = value;
    await("allGatherLong");
    long[] out = new long[size()];
    for (int r = 0; r < size(); r++) {
      out[r] = (Long) group.slots[r];
    }
    await("allGatherLong");
    traffic(8, 8L * (size() - 1));
    return out;
  }

  @Override
  protected void doBarrier() {
    await("barrier");
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
