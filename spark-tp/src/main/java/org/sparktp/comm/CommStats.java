package org.sparktp.comm;

import java.util.concurrent.atomic.AtomicLong;

/** Counters kept by a communicator: collective calls, bytes sent and received, time spent waiting. */
public final class CommStats {
  private final AtomicLong calls = new AtomicLong();
  private final AtomicLong bytesSent = new AtomicLong();
  private final AtomicLong bytesReceived = new AtomicLong();
  private final AtomicLong nanos = new AtomicLong();

  /** Records one collective call. */
  public void record(long sent, long received, long elapsedNanos) {
    calls.incrementAndGet();
    bytesSent.addAndGet(sent);
    bytesReceived.addAndGet(received);
    nanos.addAndGet(elapsedNanos);
  }

  public long calls() {
    return calls.get();
  }

  public long bytesSent() {
    return bytesSent.get();
  }

  public long bytesReceived() {
    return bytesReceived.get();
  }

  public long nanos() {
    return nanos.get();
  }

  public void reset() {
    calls.set(0);
    bytesSent.set(0);
    bytesReceived.set(0);
    nanos.set(0);
  }

  @Override
  public String toString() {
    return "CommStats{calls=" + calls() + ", sent=" + bytesSent() + " B, received=" + bytesReceived()
        + " B, time=" + nanos() / 1_000_000 + " ms}";
  }
}
