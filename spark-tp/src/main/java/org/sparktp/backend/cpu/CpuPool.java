package org.sparktp.backend.cpu;

import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;
import java.util.concurrent.locks.ReentrantLock;
import org.bytedeco.javacpp.Loader;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The threads of one {@link CpuBackend} (one rank), sized by {@code spark.tp.cpu.threads}: the calling thread and
 * {@code threads - 1} workers run every kernel that is not a oneDNN matmul (attention, norms, RoPE, activations,
 * bias, conversions, OpenBLAS GEMMs split by columns), so that one count governs a rank. OpenBLAS itself runs one
 * thread (its own pool spins for up to 2^28 cycles after each call and fought oneDNN's threads for the cores);
 * oneDNN's OpenMP team gets the same count, per calling thread ({@link #bindOpenmp}). The two never run at once:
 * a rank runs one op at a time, and the workers spin only briefly (about 50 us) before they park, so they do not
 * hold a core while oneDNN runs.
 *
 * <p>{@link #parallelFor} splits {@code [0, n)} into chunks that the threads claim one by one (a thread delayed by
 * another process on the machine takes fewer); it returns when every chunk ran, rethrowing the first failure. A call
 * from inside a running body, from a worker, or while another thread holds the pool runs on the calling thread
 * alone. Results never depend on the thread count: a chunk computes the same values whichever thread runs it.
 */
public final class CpuPool implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(CpuPool.class);
  private static final long SPIN_NANOS = 50_000;
  private static final AtomicInteger IDS = new AtomicInteger();

  /** The body of a parallel loop: runs indices {@code [from, to)}. */
  @FunctionalInterface
  public interface Range {
    void run(int from, int to);
  }

  /** One parallel loop: its chunks and their counters (a new one per call, so a late worker never mixes two). */
  private static final class Job {
    final Range body;
    final int n;
    final int chunk;
    final int chunks;
    final AtomicInteger next = new AtomicInteger();
    final AtomicInteger done = new AtomicInteger();
    final AtomicReference<RuntimeException> failure = new AtomicReference<>();
    final AtomicReference<Error> error = new AtomicReference<>();

    Job(Range body, int n, int chunk) {
      this.body = body;
      this.n = n;
      this.chunk = chunk;
      this.chunks = (n + chunk - 1) / chunk;
    }

    /** Runs chunks until none is left. */
    void work() {
      int c;
      while ((c = next.getAndIncrement()) < chunks) {
        try {
          if (failure.get() == null && error.get() == null) {
            int from = c * chunk;
            body.run(from, Math.min(n, from + chunk));
          }
        } catch (RuntimeException e) {
          failure.compareAndSet(null, e);
        } catch (Error e) {
          error.compareAndSet(null, e);
        } finally {
          done.incrementAndGet();
        }
      }
    }
  }

  private final int threads;
  private final Thread[] workers;
  private final ReentrantLock lock = new ReentrantLock();
  private final ThreadLocal<Integer> ompBound = new ThreadLocal<>();
  private volatile Job job;
  private volatile long generation;
  private volatile boolean closed;
  private final boolean[] parked;

  /** A pool of {@code threads} threads in all (the caller and {@code threads - 1} workers). */
  public CpuPool(int threads) {
    if (threads <= 0) {
      throw new IllegalArgumentException("CPU thread count must be positive, got " + threads + " (spark.tp.cpu.threads)");
    }
    this.threads = threads;
    this.workers = new Thread[threads - 1];
    this.parked = new boolean[threads - 1];
    int id = IDS.incrementAndGet();
    for (int i = 0; i < workers.length; i++) {
      int w = i;
      workers[i] = new Thread(() -> loop(w), "tp-cpu-" + id + "-" + (i + 1));
      workers[i].setDaemon(true);
      workers[i].start();
    }
  }

  /** Threads in all, the caller included. */
  public int threads() {
    return threads;
  }

  /**
   * Runs {@code body} over {@code [0, n)} in chunks of at least {@code grain} indices on every thread of the pool
   * (about four chunks per thread, so that a thread slowed by another process takes fewer).
   */
  public void parallelFor(int n, int grain, Range body) {
    if (n <= 0) {
      return;
    }
    int g = Math.max(1, grain);
    if (threads == 1 || n <= g || closed || lock.isHeldByCurrentThread() || isWorker() || !lock.tryLock()) {
      body.run(0, n);
      return;
    }
    try {
      int chunk = Math.max(g, (n + 4 * threads - 1) / (4 * threads));
      Job j = new Job(body, n, chunk);
      job = j;
      generation++;
      for (int i = 0; i < workers.length; i++) {
        if (parked[i]) {
          LockSupport.unpark(workers[i]);
        }
      }
      j.work();
      awaitDone(j);
      job = null;
      if (j.error.get() != null) {
        throw j.error.get();
      }
      if (j.failure.get() != null) {
        throw j.failure.get();
      }
    } finally {
      lock.unlock();
    }
  }

  private static void awaitDone(Job j) {
    long start = 0;
    while (j.done.get() < j.chunks) {
      if (start == 0) {
        start = System.nanoTime();
      }
      if (System.nanoTime() - start < SPIN_NANOS) {
        Thread.onSpinWait();
      } else {
        LockSupport.parkNanos(2_000);
      }
    }
  }

  private boolean isWorker() {
    Thread t = Thread.currentThread();
    for (Thread w : workers) {
      if (w == t) {
        return true;
      }
    }
    return false;
  }

  private void loop(int w) {
    long seen = 0;
    while (!closed) {
      long g = generation;
      if (g != seen) {
        seen = g;
        Job j = job;
        if (j != null) {
          j.work();
        }
        continue;
      }
      long start = System.nanoTime();
      while (generation == seen && !closed && System.nanoTime() - start < SPIN_NANOS) {
        Thread.onSpinWait();
      }
      if (generation == seen && !closed) {
        parked[w] = true;
        if (generation == seen && !closed) { // a job posted before the flag was seen unparks nobody: check again
          LockSupport.parkNanos(this, 1_000_000);
        }
        parked[w] = false;
      }
    }
  }

  /**
   * Gives oneDNN's OpenMP team on the calling thread this pool's size ({@code omp_set_num_threads}, which applies to
   * the calling thread's later parallel regions), once per thread. OpenMP otherwise takes {@code OMP_NUM_THREADS}
   * from the process start (every core when unset), whatever {@code spark.tp.cpu.threads} says; the call goes through
   * JNA to the {@code libgomp} that oneDNN loaded. Does nothing when that library is not loaded or JNA is missing.
   */
  public void bindOpenmp() {
    Integer b = ompBound.get();
    if (b != null && b == threads) {
      return;
    }
    ompBound.set(threads);
    Openmp.setNumThreads(threads);
  }

  /** Stops the workers; harmless when called again. */
  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    for (Thread w : workers) {
      LockSupport.unpark(w);
    }
    for (Thread w : workers) {
      try {
        w.join(1000);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
        return;
      }
      if (w.isAlive()) {
        LOG.warn("CPU pool thread {} did not stop", w.getName());
      }
    }
  }

  /** {@code omp_set_num_threads} of the {@code libgomp} that oneDNN loaded, called through JNA by its address. */
  private static final class Openmp {
    private static volatile com.sun.jna.Function fn;
    private static volatile boolean looked;

    private static com.sun.jna.Function lookup() {
      try {
        org.bytedeco.javacpp.Pointer p = Loader.addressof("omp_set_num_threads");
        long address = p == null ? 0 : p.address();
        if (address == 0) {
          LOG.debug("omp_set_num_threads is not loaded: oneDNN's threads follow OMP_NUM_THREADS");
          return null;
        }
        return com.sun.jna.Function.getFunction(new com.sun.jna.Pointer(address));
      } catch (Throwable t) {
        LOG.warn("Cannot reach omp_set_num_threads ({}): oneDNN's threads follow OMP_NUM_THREADS", t.toString());
        return null;
      }
    }

    static void setNumThreads(int n) {
      if (!looked) {
        synchronized (Openmp.class) {
          if (!looked) {
            fn = lookup();
            looked = true;
          }
        }
      }
      if (fn != null) {
        fn.invoke(Void.class, new Object[] {n});
      }
    }
  }
}
