package org.sparktp.spark;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;
import org.sparktp.backend.Backend;
import org.sparktp.nn.run.RowModel;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The executor-side cache of loaded rank models, one per JVM: a {@link RankModel} with its weights on
 * its own backend, keyed by (model id, plan fingerprint, tp size, rank, backend), reused by later jobs.
 *
 * <p>A rank model is used by one task at a time: a task {@linkplain #checkOut checks one out} (an idle
 * one with its key, else a freshly loaded one) and {@linkplain Lease#close checks it in} when done, so
 * two tasks of one JVM (ranks of different groups in local mode) never share one. The cache holds at
 * most {@code spark.tp.cache.max-bytes} of weights, idle and in use together: idle entries are evicted
 * least recently used first, before a load and after a check-in; an entry in use is never evicted, so a
 * model larger than the bound still runs, and is closed when checked in. The bound is the one of the
 * latest job that checked a model out. Eviction closes the rank model
 * and its backend, which frees their native memory. A task that fails closes its entry instead of
 * returning it.
 */
public final class ShardCache {
  private static final Logger LOG = LoggerFactory.getLogger(ShardCache.class);
  private static final ShardCache INSTANCE = new ShardCache();

  /** What identifies a loaded rank model. */
  public record Key(String modelId, String fingerprint, int tpSize, int rank, String backend) {}

  /** A loaded rank model and the backend it owns. */
  static final class Entry {
    final Key key;
    final RowModel model;
    final Backend backend;
    final long bytes; // the plan's count in the stored dtype (Plan#weightBytes), as checkOut made room for

    Entry(Key key, RowModel model, Backend backend, long bytes) {
      this.key = key;
      this.model = model;
      this.backend = backend;
      this.bytes = bytes;
    }

    void close() {
      try {
        model.close();
      } finally {
        backend.close();
      }
    }
  }

  /** A checked-out rank model; {@link #close()} returns it, {@link #discard()} closes it. */
  public final class Lease implements AutoCloseable {
    private final Entry entry;
    private final boolean loaded;
    private boolean done;

    private Lease(Entry entry, boolean loaded) {
      this.entry = entry;
      this.loaded = loaded;
    }

    /** The rank model. */
    public RowModel model() {
      return entry.model;
    }

    /** True when this lease loaded the model (a cache miss). */
    public boolean loaded() {
      return loaded;
    }

    /** Returns the model to the cache. */
    @Override
    public void close() {
      if (!done) {
        done = true;
        checkIn(entry, true);
      }
    }

    /** Closes the model instead of returning it (after a failure). */
    public void discard() {
      if (!done) {
        done = true;
        checkIn(entry, false);
      }
    }
  }

  private final ArrayDeque<Entry> idle = new ArrayDeque<>(); // least recently used first
  private final AtomicLong loads = new AtomicLong();
  private long bytes;
  private long maxBytes = 4L << 30;

  private ShardCache() {}

  /** The cache of this JVM. */
  public static ShardCache get() {
    return INSTANCE;
  }

  /**
   * An idle model with {@code key}, else one made by {@code loader} (called outside the cache's lock,
   * after evicting idle entries to make room for {@code expectedBytes}).
   */
  public Lease checkOut(Key key, long expectedBytes, long maxBytes, Supplier<Entry> loader) {
    List<Entry> evicted = new ArrayList<>();
    synchronized (this) {
      this.maxBytes = maxBytes;
      for (Iterator<Entry> it = idle.descendingIterator(); it.hasNext(); ) {
        Entry e = it.next();
        if (e.key.equals(key)) {
          it.remove();
          return new Lease(e, false);
        }
      }
      evictIdle(expectedBytes, evicted);
    }
    closeAll(evicted);
    Entry e = loader.get();
    loads.incrementAndGet();
    synchronized (this) {
      bytes += e.bytes;
    }
    return new Lease(e, true);
  }

  private void checkIn(Entry e, boolean keep) {
    List<Entry> evicted = new ArrayList<>();
    synchronized (this) {
      if (keep) {
        idle.addLast(e);
      } else {
        bytes -= e.bytes;
        evicted.add(e);
      }
      evictIdle(0, evicted);
    }
    closeAll(evicted);
  }

  private void evictIdle(long room, List<Entry> out) {
    while (!idle.isEmpty() && bytes + room > maxBytes) {
      Entry old = idle.pollFirst();
      bytes -= old.bytes;
      out.add(old);
      LOG.info("spark-tp cache: evicting {} ({} bytes; cache bound {} bytes)", old.key, old.bytes, maxBytes);
    }
  }

  private static void closeAll(List<Entry> entries) {
    RuntimeException first = null;
    for (Entry e : entries) {
      try {
        e.close();
      } catch (RuntimeException ex) {
        if (first == null) {
          first = ex;
        } else {
          first.addSuppressed(ex);
        }
      }
    }
    if (first != null) {
      throw first;
    }
  }

  /** Closes every idle entry (entries in use are closed when checked in). */
  public void clear() {
    List<Entry> evicted;
    synchronized (this) {
      evicted = new ArrayList<>(idle);
      idle.clear();
      for (Entry e : evicted) {
        bytes -= e.bytes;
      }
    }
    closeAll(evicted);
  }

  /** Closes the idle entries of model {@code modelId} (entries in use are kept); returns how many. */
  public int invalidate(String modelId) {
    List<Entry> evicted = new ArrayList<>();
    synchronized (this) {
      for (Iterator<Entry> it = idle.iterator(); it.hasNext(); ) {
        Entry e = it.next();
        if (e.key.modelId().equals(modelId)) {
          it.remove();
          bytes -= e.bytes;
          evicted.add(e);
        }
      }
    }
    closeAll(evicted);
    return evicted.size();
  }

  /** Models loaded by this JVM since it started (cache misses). */
  public long loads() {
    return loads.get();
  }

  /** Bytes of weights held, idle and in use. */
  public synchronized long bytes() {
    return bytes;
  }

  /** Idle entries. */
  public synchronized int idleCount() {
    return idle.size();
  }
}
