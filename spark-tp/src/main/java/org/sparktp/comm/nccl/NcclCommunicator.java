package org.sparktp.comm.nccl;

import java.util.Base64;
import java.util.concurrent.locks.LockSupport;
import org.sparktp.comm.AbstractCommunicator;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.backend.Tensor;

/**
 * Collectives over NCCL between the ranks of a group, one GPU per rank, on device tensors.
 *
 * <p>The communicator is non-blocking ({@code ncclCommInitRankConfig} with {@code blocking = 0}), so no NCCL call
 * ever waits for a peer: init, each collective and finalize are enqueued and then watched by the calling thread,
 * which polls {@code ncclCommGetAsyncError} and a CUDA event recorded after the collective (the NCCL user guide's
 * {@code ncclStreamSynchronize}) until it is done, NCCL reports an error, {@link #timeoutMillis()} passes or
 * {@link #abort(Throwable)} is called from another thread. Any failure aborts the NCCL communicator
 * ({@code ncclCommAbort}, which makes the peers' collectives fail too); a clean {@link #close()} finalizes and
 * destroys it. Every NCCL call is made under one lock, so an abort never runs while another thread is inside NCCL.
 *
 * <p>Mapping: allReduce = {@code ncclAllReduce(sum)}; allGather = {@code ncclAllGather} for equal counts, else a
 * group of {@code ncclBroadcast} (one per root) into the rank's slice; reduceScatter = {@code ncclReduceScatter} for
 * equal counts, else a group of {@code ncclReduce}; allToAll = a group of {@code ncclSend}/{@code ncclRecv};
 * allGatherLong = a one-element int64 all-gather in device scratch. Sums run in the buffer's type (F32 buffers sum
 * in fp32). A one-rank group still goes through NCCL (a local copy).
 */
public final class NcclCommunicator extends AbstractCommunicator {
  private final NcclApi api;
  private final DeviceBuffers buffers;
  private final int device;
  private final Object lock = new Object();

  private long comm;
  private boolean commAborted; // guarded by lock
  private volatile Throwable failure; // the first cause: an abort or a failed call
  private volatile boolean closed;
  private final long initDeadline;
  private int initResult;
  private volatile boolean ready;

  /** An enqueue of NCCL calls (under the lock); returns an {@code ncclResult_t}. */
  @FunctionalInterface
  private interface Enqueue {
    int run(long comm, long stream);
  }

  /**
   * Starts joining the group (enqueues the non-blocking init and returns): {@code id} is the group's
   * {@code ncclUniqueId} (made by rank 0, {@link NcclApi#uniqueId()}), {@code device} the CUDA ordinal of this
   * rank's GPU. {@link #awaitInit()} waits for the other ranks; {@link #connect} does both.
   */
  public NcclCommunicator(NcclApi api, DeviceBuffers buffers, byte[] id, int rank, int size, int device,
      long timeoutMillis) {
    super(rank, size, timeoutMillis);
    if (id == null || id.length != NcclApi.UNIQUE_ID_BYTES) {
      throw new IllegalArgumentException("An ncclUniqueId has " + NcclApi.UNIQUE_ID_BYTES + " bytes, got "
          + (id == null ? "null" : id.length));
    }
    this.api = api;
    this.buffers = buffers;
    this.device = device;
    this.initDeadline = System.nanoTime() + timeoutMillis * 1_000_000L;
    api.setDevice(device);
    long[] out = {0};
    synchronized (lock) {
      initResult = api.initRank(out, size, id, rank);
      comm = out[0];
    }
  }

  /**
   * Joins the group: starts the init and waits until every rank has joined; fails with a
   * {@link CommunicatorException} (after aborting, with nothing left open) when that does not happen within
   * {@code timeoutMillis}.
   */
  public static NcclCommunicator connect(NcclApi api, DeviceBuffers buffers, byte[] id, int rank, int size,
      int device, long timeoutMillis) {
    NcclCommunicator c;
    try {
      c = new NcclCommunicator(api, buffers, id, rank, size, device, timeoutMillis);
    } catch (RuntimeException | Error e) {
      buffers.close();
      throw e;
    }
    try {
      c.awaitInit();
    } catch (RuntimeException | Error e) {
      c.close();
      throw e;
    }
    return c;
  }

  /** Waits (bounded by the timeout, stopped by {@link #abort}) until every rank has joined. */
  public void awaitInit() {
    if (ready) {
      return;
    }
    if (initResult != NcclApi.SUCCESS && initResult != NcclApi.IN_PROGRESS) {
      throw fail("init", "ncclCommInitRankConfig failed: " + describe(initResult));
    }
    waitComm("init", initDeadline, "not every rank joined (a peer is missing, dead or uses another id)");
    ready = true;
  }

  /** Base64 of an ncclUniqueId (how rank 0 sends it through {@code BarrierTaskContext.allGather}). */
  public static String encodeId(byte[] id) {
    return Base64.getEncoder().encodeToString(id);
  }

  /** The id back from {@link #encodeId}; fails clearly on anything else. */
  public static byte[] decodeId(String s) {
    byte[] id;
    try {
      id = Base64.getDecoder().decode(s == null ? "" : s.trim());
    } catch (IllegalArgumentException e) {
      throw new IllegalStateException("Rank 0 sent an NCCL unique id that is not Base64: '" + s + "'", e);
    }
    if (id.length != NcclApi.UNIQUE_ID_BYTES) {
      throw new IllegalStateException("Rank 0 sent an NCCL unique id of " + id.length + " bytes, expected "
          + NcclApi.UNIQUE_ID_BYTES);
    }
    return id;
  }

  /** A one-rank group goes through NCCL too: its local copy is ordered on the stream with the tensors' work. */
  @Override
  protected boolean skipsOneRank() {
    return false;
  }

  /** NCCL sums bf16/f16 buffers itself, in their own type. */
  @Override
  protected boolean widensHalfReductions() {
    return false;
  }

  private String describe(int rc) {
    String last = comm == 0 ? "" : api.lastError(comm);
    return api.errorString(rc) + " (ncclResult " + rc + ")" + (last == null || last.isEmpty() ? "" : ": " + last);
  }

  private String where(String op) {
    return "NCCL " + op + " on rank " + rank() + " of " + size() + " (device " + device + ")";
  }

  /** Records the failure, aborts the NCCL communicator (once) and returns the exception to throw. */
  private CommunicatorException fail(String op, String why) {
    CommunicatorException e = new CommunicatorException(where(op) + " failed: " + why);
    Throwable first = failure;
    if (first == null) {
      failure = e;
    }
    abortComm();
    return first == null ? e : new CommunicatorException(where(op) + " failed: " + why + "; first cause: " + first,
        first);
  }

  private void abortComm() {
    synchronized (lock) {
      if (!commAborted && comm != 0) {
        commAborted = true;
        api.abort(comm);
      }
    }
  }

  private void checkUsable(String op) {
    if (closed) {
      throw new CommunicatorException(where(op) + ": the communicator is closed");
    }
    Throwable f = failure;
    if (f != null) {
      throw new CommunicatorException(where(op) + ": the communicator was aborted: " + f.getMessage(), f);
    }
    if (!ready) {
      throw new IllegalStateException(where(op) + ": init has not finished (call awaitInit or use connect)");
    }
  }

  /** Polls {@code ncclCommGetAsyncError} until the communicator is idle; fails on error, deadline or abort. */
  private void waitComm(String op, long deadline, String timeoutHint) {
    for (int spins = 0; ; spins++) {
      Throwable f = failure;
      if (f != null) {
        throw new CommunicatorException(where(op) + " was aborted: " + f.getMessage(), f);
      }
      int st;
      synchronized (lock) {
        if (commAborted) {
          throw new CommunicatorException(where(op) + ": the communicator was aborted");
        }
        st = api.asyncError(comm);
      }
      if (st == NcclApi.SUCCESS) {
        return;
      }
      if (st != NcclApi.IN_PROGRESS) {
        throw fail(op, "NCCL reports " + describe(st));
      }
      if (System.nanoTime() - deadline > 0) {
        throw fail(op, "did not finish within " + timeoutMillis() + " ms (" + TIMEOUT_SETTING + "): " + timeoutHint);
      }
      pause(spins);
    }
  }

  private static void pause(int spins) {
    if (spins < 100) {
      Thread.onSpinWait();
    } else {
      LockSupport.parkNanos(Math.min(1_000_000L, 10_000L * (spins - 99)));
    }
  }

  /** Enqueues {@code e}, then watches it to the end (event + async error), bounded by the timeout. */
  private void collective(String op, long sent, long received, Enqueue e, Tensor... tensors) {
    checkUsable(op);
    long deadline = System.nanoTime() + timeoutMillis() * 1_000_000L;
    api.setDevice(device);
    for (Tensor t : tensors) {
      buffers.order(t);
    }
    int rc;
    long event;
    synchronized (lock) {
      checkUsable(op);
      rc = e.run(comm, buffers.stream());
    }
    if (rc != NcclApi.SUCCESS && rc != NcclApi.IN_PROGRESS) {
      throw fail(op, "enqueue failed: " + describe(rc));
    }
    if (rc == NcclApi.IN_PROGRESS) {
      waitComm(op, deadline, "the enqueue did not complete");
    }
    synchronized (lock) {
      event = api.recordEvent(buffers.stream());
    }
    try {
      waitEvent(op, event, deadline);
    } finally {
      api.destroyEvent(event);
    }
    traffic(sent, received);
  }

  private void waitEvent(String op, long event, long deadline) {
    for (int spins = 0; ; spins++) {
      Throwable f = failure;
      if (f != null) {
        throw new CommunicatorException(where(op) + " was aborted: " + f.getMessage(), f);
      }
      int q = api.queryEvent(event);
      if (q == 0) {
        return;
      }
      if (q != NcclApi.EVENT_NOT_READY) {
        throw fail(op, "cudaEventQuery: " + api.cudaErrorString(q) + " (" + q + ")");
      }
      int st;
      synchronized (lock) {
        if (commAborted) {
          throw new CommunicatorException(where(op) + ": the communicator was aborted");
        }
        st = api.asyncError(comm);
      }
      if (st != NcclApi.SUCCESS && st != NcclApi.IN_PROGRESS) {
        throw fail(op, "NCCL reports " + describe(st));
      }
      if (System.nanoTime() - deadline > 0) {
        throw fail(op, "did not finish within " + timeoutMillis() + " ms (" + TIMEOUT_SETTING + "): a peer did not take"
            + " part (dead, hung, or in another collective)");
      }
      pause(spins);
    }
  }

  /** Runs {@code calls} inside ncclGroupStart/End; the first error wins, groupEnd's result otherwise. */
  private int group(Enqueue calls, long c, long stream) {
    int rc = api.groupStart();
    if (rc != NcclApi.SUCCESS) {
      return rc;
    }
    int inner = calls.run(c, stream);
    int end = api.groupEnd();
    return inner != NcclApi.SUCCESS && inner != NcclApi.IN_PROGRESS ? inner : end;
  }

  @Override
  protected void doAllReduce(Tensor buf) {
    long n = buf.numel();
    int type = buffers.ncclType(buf);
    long addr = buffers.address(buf);
    long bytes = n * buffers.elementSize(buf);
    collective("allReduce", bytes, bytes, (c, s) -> api.allReduce(addr, addr, n, type, c, s), buf);
  }

  @Override
  protected void doAllGather(Tensor send, Tensor recv, int[] counts, long[] off) {
    long total = off[size()];
    int type = buffers.ncclType(send);
    int es = buffers.elementSize(send);
    long sa = buffers.address(send);
    long ra = buffers.address(recv);
    boolean even = true;
    for (int c : counts) {
      even &= c == counts[0];
    }
    long sent = (long) counts[rank()] * es * (size() - 1);
    long got = (total - counts[rank()]) * es;
    if (even) {
      collective("allGather", sent, got, (c, s) -> api.allGather(sa, ra, counts[0], type, c, s), send, recv);
      return;
    }
    collective("allGather", sent, got, (c, s) -> group((cc, ss) -> {
      for (int r = 0; r < size(); r++) {
        if (counts[r] == 0) {
          continue;
        }
        int rc = api.broadcast(sa, ra + off[r] * es, counts[r], type, r, cc, ss);
        if (rc != NcclApi.SUCCESS && rc != NcclApi.IN_PROGRESS) {
          return rc;
        }
      }
      return NcclApi.SUCCESS;
    }, c, s), send, recv);
  }

  @Override
  protected void doReduceScatter(Tensor send, int[] counts, long[] off, Tensor recv) {
    long total = off[size()];
    int type = buffers.ncclType(send);
    int es = buffers.elementSize(send);
    long sa = buffers.address(send);
    long ra = buffers.address(recv);
    boolean even = true;
    for (int c : counts) {
      even &= c == counts[0];
    }
    long sent = (total - counts[rank()]) * es;
    long got = (long) counts[rank()] * es * (size() - 1);
    if (even) {
      collective("reduceScatter", sent, got, (c, s) -> api.reduceScatter(sa, ra, counts[0], type, c, s), send, recv);
      return;
    }
    collective("reduceScatter", sent, got, (c, s) -> group((cc, ss) -> {
      for (int r = 0; r < size(); r++) {
        if (counts[r] == 0) {
          continue;
        }
        long block = sa + off[r] * es;
        int rc = api.reduce(block, r == rank() ? ra : block, counts[r], type, r, cc, ss);
        if (rc != NcclApi.SUCCESS && rc != NcclApi.IN_PROGRESS) {
          return rc;
        }
      }
      return NcclApi.SUCCESS;
    }, c, s), send, recv);
  }

  @Override
  protected void doAllToAll(Tensor send, int[] sendCounts, long[] so, Tensor recv, int[] recvCounts, long[] ro) {
    int type = buffers.ncclType(send);
    int es = buffers.elementSize(send);
    long sa = buffers.address(send);
    long ra = buffers.address(recv);
    long sent = (so[size()] - sendCounts[rank()]) * es;
    long got = (ro[size()] - recvCounts[rank()]) * es;
    collective("allToAll", sent, got, (c, s) -> group((cc, ss) -> {
      for (int r = 0; r < size(); r++) {
        if (sendCounts[r] > 0) {
          int rc = api.send(sa + so[r] * es, sendCounts[r], type, r, cc, ss);
          if (rc != NcclApi.SUCCESS && rc != NcclApi.IN_PROGRESS) {
            return rc;
          }
        }
        if (recvCounts[r] > 0) {
          int rc = api.recv(ra + ro[r] * es, recvCounts[r], type, r, cc, ss);
          if (rc != NcclApi.SUCCESS && rc != NcclApi.IN_PROGRESS) {
            return rc;
          }
        }
      }
      return NcclApi.SUCCESS;
    }, c, s), send, recv);
  }

  @Override
  protected void doBroadcast(Tensor buf, int root) {
    long n = buf.numel();
    int type = buffers.ncclType(buf);
    long addr = buffers.address(buf);
    long bytes = n * buffers.elementSize(buf);
    collective("broadcast", rank() == root ? bytes * (size() - 1) : 0, rank() == root ? 0 : bytes,
        (c, s) -> api.broadcast(addr, addr, n, type, root, c, s), buf);
  }

  @Override
  protected long[] doAllGatherLong(long value) {
    checkUsable("allGatherLong");
    api.setDevice(device);
    long scratch = buffers.scratch(size());
    long mine = scratch + 8L * rank();
    buffers.copyIn(mine, new long[] {value});
    // in place: rank r's value already sits at slot r
    collective("allGatherLong", 8L * (size() - 1), 8L * (size() - 1),
        (c, s) -> api.allGather(mine, scratch, 1, NcclApi.INT64, c, s));
    long[] out = new long[size()];
    buffers.copyOut(scratch, out);
    return out;
  }

  @Override
  protected void doBarrier() {
    doAllGatherLong(0);
  }

  @Override
  public void abort(Throwable cause) {
    if (failure == null) {
      failure = cause == null ? new CommunicatorException(where("abort") + ": aborted") : cause;
    }
    abortComm();
  }

  /** True once the communicator was aborted (by {@link #abort} or a failure). */
  public boolean aborted() {
    synchronized (lock) {
      return commAborted;
    }
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    RuntimeException err = null;
    try {
      if (failure != null || !ready) {
        abortComm(); // a communicator that never finished init (or failed) is aborted, not finalized
        return;
      }
      long deadline = System.nanoTime() + timeoutMillis() * 1_000_000L;
      api.setDevice(device);
      int rc;
      synchronized (lock) {
        rc = api.finalizeComm(comm);
      }
      if (rc != NcclApi.SUCCESS && rc != NcclApi.IN_PROGRESS) {
        err = fail("finalize", "ncclCommFinalize failed: " + describe(rc));
        return;
      }
      try {
        waitComm("finalize", deadline, "a peer did not finalize");
      } catch (CommunicatorException e) {
        err = e;
        return;
      }
      synchronized (lock) {
        rc = api.destroy(comm);
        commAborted = true; // the handle is gone: nothing to abort any more
      }
      if (rc != NcclApi.SUCCESS) {
        err = new CommunicatorException(where("destroy") + " failed: " + api.errorString(rc) + " (ncclResult " + rc
            + ")");
      }
    } finally {
      buffers.close();
      if (err != null) {
        throw err;
      }
    }
  }
}
