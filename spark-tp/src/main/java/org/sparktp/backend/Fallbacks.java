package org.sparktp.backend;

import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.tensor.DType;

/**
 * The explicit fallbacks of {@link Backend}'s generic methods: an op a backend does not run natively
 * ({@link Backend#supports(BackendOp, DType)} false) goes through the host once per call, and this says so, once per
 * backend, op and dtype, as a warning in the log; every use is counted (the contract test checks that an op a
 * backend says it runs natively never lands here).
 */
public final class Fallbacks {
  private static final Logger LOG = LoggerFactory.getLogger(Fallbacks.class);
  private static final Map<String, AtomicLong> COUNTS = new ConcurrentHashMap<>();

  private Fallbacks() {}

  /** Records (and the first time logs) that {@code backend} runs {@code op} on {@code dtype} through the host. */
  public static void note(Backend backend, BackendOp op, DType dtype) {
    String key = backend.name() + "/" + op.id() + "/" + dtype.id();
    AtomicLong n = COUNTS.computeIfAbsent(key, k -> new AtomicLong());
    if (n.getAndIncrement() == 0) {
      LOG.warn("The {} backend has no native {} for {} tensors: it runs through the host (download, Java, upload)"
          + " on every call", backend.name(), op.id(), dtype.id());
    }
  }

  /** How many calls of {@code op} the backend named {@code backend} has run through the host, over every dtype. */
  public static long count(String backend, BackendOp op) {
    long sum = 0;
    String prefix = backend + "/" + op.id() + "/";
    for (Map.Entry<String, AtomicLong> e : COUNTS.entrySet()) {
      if (e.getKey().startsWith(prefix)) {
        sum += e.getValue().get();
      }
    }
    return sum;
  }
}
