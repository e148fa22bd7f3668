package org.sparktp.comm;

import java.nio.ByteBuffer;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;
import java.util.function.IntFunction;
import org.sparktp.backend.Tensor;

/**
 * Collectives among ranks that are threads of one JVM (unit tests, and a tensor-parallel group that
 * lives in one process). Each collective posts a snapshot of this rank's send data in the slot of its parity
 * (collectives alternate between two sets of slots), waits once for every rank, and reads the peers' snapshots:
 * a slot is rewritten two collectives later, after every rank has passed the wait of the collective in between,
 * so one wait per collective is enough. The wait spins briefly, then parks until the last rank to arrive wakes it.
 * Sums are taken in rank order, so every rank gets bitwise identical results. An all-reduce reuses its snapshot
 * arrays (no allocation per call once they are large enough).
 */
public final class LocalCommunicator extends AbstractCommunicator {

  /** The shared state of one group; make one per group and take each rank's communicator from it. */
  public static final class Group {
    private final int size;
    private final long timeoutMillis;
    private final AtomicLong arrived = new AtomicLong();
    private final Thread[] waiting;
    private final Object[][] slots;
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
      this.waiting = new Thread[size];
      this.slots = new Object[2][size];
    }

    /** Fails every waiting and later collective of the group with {@code cause} (the first one wins). */
    void abort(Throwable cause) {
      if (abortCause == null) {
        abortCause = cause == null ? new CommunicatorException("aborted") : cause;
      }
      wakeAll();
    }

    private void wakeAll() {
      for (Thread t : waiting) {
        if (t != null) {
          LockSupport.unpark(t);
        }
      }
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
  private long waits; // collectives waited for: every rank's k-th wait waits for k * size arrivals
  private final float[][] own = {new float[0], new float[0]};
  private float[] sum = new float[0];

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
            g.abort(t);
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

  /** The slots of the running collective (its parity). */
  private Object[] slots() {
    return group.slots[(int) (waits & 1)];
  }

  /**
   * Waits until every rank has arrived at this collective (the {@code waits}-th of every rank): spins about 20 us,
   * then parks until the last rank to arrive wakes it (or 1 ms passes, to check the abort and the timeout).
   */
  private void await(String op) {
    if (closed) {
      throw new CommunicatorException(op + " on rank " + rank() + ": the communicator is closed");
    }
    checkAborted(op);
    long target = (++waits) * size();
    if (group.arrived.incrementAndGet() >= target) {
      group.wakeAll();
      return;
    }
    long start = System.nanoTime();
    long timeout = TimeUnit.MILLISECONDS.toNanos(group.timeoutMillis);
    group.waiting[rank()] = Thread.currentThread();
    try {
      while (group.arrived.get() < target) {
        checkAborted(op);
        long waited = System.nanoTime() - start;
        if (waited < 20_000) {
          Thread.onSpinWait();
          continue;
        }
        if (waited > timeout) {
          CommunicatorException e = new CommunicatorException(op + " on rank " + rank() + " timed out after "
              + group.timeoutMillis + " ms waiting for the other in-process ranks");
          group.abort(e);
          throw e;
        }
        if (Thread.interrupted()) {
          Thread.currentThread().interrupt();
          CommunicatorException e = new CommunicatorException(op + " on rank " + rank() + " was interrupted");
          group.abort(e);
          throw e;
        }
        LockSupport.parkNanos(this, 1_000_000);
      }
    } finally {
      group.waiting[rank()] = null;
    }
  }

  private void checkAborted(String op) {
    Throwable cause = group.abortCause;
    if (cause != null) {
      throw new CommunicatorException(op + " on rank " + rank() + " failed: the group was aborted (" + cause + ")",
          cause);
    }
  }

  private static float[] snapshot(Tensor t, long count) {
    float[] a = new float[Math.toIntExact(count)];
    FloatBuffer b = HostBuffers.floats(t);
    b.get(a, 0, a.length);
    return a;
  }

  /** One-shot: each rank posts its buffer, waits once, and sums every rank's in rank order. */
  @Override
  protected void doAllReduce(Tensor buf) {
    int n = Math.toIntExact(buf.numel());
    int parity = (int) ((waits + 1) & 1);
    float[] mine = own[parity].length >= n ? own[parity] : (own[parity] = new float[n]);
    HostBuffers.floats(buf).get(mine, 0, n);
    group.slots[parity][rank()] = new Snapshot(mine, n);
    await("allReduce");
    if (sum.length < n) {
      sum = new float[n];
    }
    java.util.Arrays.fill(sum, 0, n, 0f);
    for (int r = 0; r < size(); r++) {
      Snapshot s = (Snapshot) slots()[r];
      if (s.n != n) {
        CommunicatorException e = new CommunicatorException("allReduce: rank " + r + " sent " + s.n
            + " elements, rank " + rank() + " expected " + n);
        group.abort(e);
        throw e;
      }
      for (int i = 0; i < n; i++) {
        sum[i] += s.data[i];
      }
    }
    HostBuffers.floats(buf).put(sum, 0, n);
    traffic(4L * n, 4L * n * (size() - 1));
  }

  /** The first {@code n} elements of a reused array. */
  private record Snapshot(float[] data, int n) {}

  /** This rank's first {@code count} elements as bytes (any dtype). */
  private static byte[] snapshotBytes(Tensor t, long count) {
    byte[] a = new byte[Math.toIntExact(count * t.dtype().size())];
    HostBuffers.bytes(t).get(a);
    return a;
  }

  @Override
  protected void doAllGather(Tensor send, Tensor recv, int[] counts, long[] off) {
    int es = send.dtype().size();
    post(snapshotBytes(send, counts[rank()]));
    await("allGather");
    ByteBuffer out = HostBuffers.bytes(recv);
    for (int r = 0; r < size(); r++) {
      byte[] b = (byte[]) slots()[r];
      out.position(Math.toIntExact(off[r] * es));
      out.put(b, 0, counts[r] * es);
    }
    traffic((long) es * counts[rank()], (long) es * (off[size()] - counts[rank()]));
  }

  @Override
  protected void doReduceScatter(Tensor send, int[] counts, long[] off, Tensor recv) {
    long total = off[size()];
    post(snapshot(send, total));
    await("reduceScatter");
    float[] sum = new float[counts[rank()]];
    for (int r = 0; r < size(); r++) {
      float[] s = (float[]) slots()[r];
      for (int i = 0; i < sum.length; i++) {
        sum[i] += s[(int) off[rank()] + i];
      }
    }
    HostBuffers.floats(recv).put(sum);
    traffic(4L * (total - counts[rank()]), 4L * counts[rank()] * (size() - 1));
  }

  @Override
  protected void doAllToAll(Tensor send, int[] sendCounts, long[] soff, Tensor recv, int[] recvCounts,
      long[] roff) {
    int es = send.dtype().size();
    long sendTotal = soff[size()];
    post(new Object[] {snapshotBytes(send, sendTotal), sendCounts.clone()});
    await("allToAll");
    ByteBuffer out = HostBuffers.bytes(recv);
    for (int r = 0; r < size(); r++) {
      Object[] s = (Object[]) slots()[r];
      byte[] data = (byte[]) s[0];
      int[] theirCounts = (int[]) s[1];
      if (theirCounts[rank()] != recvCounts[r]) {
        CommunicatorException e = new CommunicatorException("allToAll: rank " + r + " sends " + theirCounts[rank()]
            + " elements to rank " + rank() + ", which expects " + recvCounts[r]);
        group.abort(e);
        throw e;
      }
      long[] theirOffsets = Collectives.offsets(theirCounts);
      out.position(Math.toIntExact(roff[r] * es));
      out.put(data, Math.toIntExact(theirOffsets[rank()] * es), recvCounts[r] * es);
    }
    traffic((long) es * (sendTotal - sendCounts[rank()]), (long) es * (roff[size()] - recvCounts[rank()]));
  }

  @Override
  protected void doBroadcast(Tensor buf, int root) {
    int es = buf.dtype().size();
    long n = buf.numel();
    post(rank() == root ? snapshotBytes(buf, n) : null);
    await("broadcast");
    byte[] b = (byte[]) slots()[root];
    if (rank() != root) {
      HostBuffers.bytes(buf).put(b, 0, (int) Math.min(n * es, b.length));
    }
    traffic(rank() == root ? es * n * (size() - 1) : 0, rank() == root ? 0 : es * n);
  }

  @Override
  protected long[] doAllGatherLong(long value) {
    post(value);
    await("allGatherLong");
    long[] out = new long[size()];
    for (int r = 0; r < size(); r++) {
      out[r] = (Long) slots()[r];
    }
    traffic(8, 8L * (size() - 1));
    return out;
  }

  @Override
  protected void doBarrier() {
    await("barrier");
  }

  /** Posts this rank's part of the next collective in the slots of its parity. */
  private void post(Object part) {
    group.slots[(int) ((waits + 1) & 1)][rank()] = part;
  }

  @Override
  public void abort(Throwable cause) {
    group.abort(cause);
  }

  @Override
  public void close() {
    closed = true;
  }
}
