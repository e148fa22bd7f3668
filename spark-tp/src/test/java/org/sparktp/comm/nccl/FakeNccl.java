package org.sparktp.comm.nccl;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.bytedeco.javacpp.Pointer;
import org.sparktp.backend.cpu.CpuTensor;
import org.sparktp.backend.Tensor;

/**
 * A scripted NCCL for the communicator's state machine: init finishes after {@code initPolls} polls (or never),
 * events complete after {@code eventPolls} queries (or never), the async error can turn into an error after a
 * number of polls, and every call is recorded. Buffers are CPU tensors (host addresses); with one rank the data
 * calls do what NCCL does with one rank (copies), so results can be checked.
 */
final class FakeNccl implements NcclApi {
  static final int REMOTE_ERROR = 6;
  static final long COMM = 0xC0FFEEL;

  volatile int initPolls = 2; // -1: never finishes
  volatile int eventPolls = 1; // -1: never completes
  volatile int asyncErrorAfter = -1; // polls after init until the async error turns into REMOTE_ERROR; -1 never
  final AtomicInteger aborts = new AtomicInteger();
  final AtomicInteger finalizes = new AtomicInteger();
  final AtomicInteger destroys = new AtomicInteger();
  final AtomicInteger liveEvents = new AtomicInteger();
  final List<String> calls = Collections.synchronizedList(new ArrayList<>());
  private int polls;
  private boolean initDone;
  /** The unique id the last init was given. */
  volatile byte[] initId;
  private int postInitPolls;
  private long nextEvent = 1;
  private final java.util.Map<Long, int[]> events = new java.util.HashMap<>();

  @Override
  public byte[] uniqueId() {
    byte[] id = new byte[UNIQUE_ID_BYTES];
    new java.util.Random(7).nextBytes(id);
    return id;
  }

  @Override
  public void setDevice(int device) {}

  @Override
  public int initRank(long[] out, int nranks, byte[] id, int rank) {
    calls.add("init " + nranks + " " + rank);
    initId = id.clone();
    out[0] = COMM;
    return IN_PROGRESS;
  }

  @Override
  public synchronized int asyncError(long comm) {
    if (!initDone) {
      polls++;
      if (initPolls >= 0 && polls >= initPolls) {
        initDone = true;
        return SUCCESS;
      }
      return IN_PROGRESS;
    }
    postInitPolls++;
    if (asyncErrorAfter >= 0 && postInitPolls > asyncErrorAfter) {
      return REMOTE_ERROR;
    }
    return SUCCESS;
  }

  private static void copy(long dst, long src, long bytes) {
    if (dst != src && bytes > 0) {
      Pointer.memcpy(new org.sparktp.backend.cuda.Ptr(dst), new org.sparktp.backend.cuda.Ptr(src), bytes);
    }
  }

  @Override
  public int allReduce(long send, long recv, long count, int type, long comm, long stream) {
    calls.add("allReduce " + send + " " + recv + " " + count + " " + type);
    copy(recv, send, count * 4);
    return SUCCESS;
  }

  @Override
  public int allGather(long send, long recv, long count, int type, long comm, long stream) {
    calls.add("allGather " + send + " " + recv + " " + count + " " + type);
    copy(recv, send, count * (type == INT64 ? 8 : 4));
    return SUCCESS;
  }

  @Override
  public int reduceScatter(long send, long recv, long count, int type, long comm, long stream) {
    calls.add("reduceScatter " + send + " " + recv + " " + count + " " + type);
    copy(recv, send, count * 4);
    return SUCCESS;
  }

  @Override
  public int broadcast(long send, long recv, long count, int type, int root, long comm, long stream) {
    calls.add("broadcast " + send + " " + recv + " " + count + " " + type + " root " + root);
    return SUCCESS;
  }

  @Override
  public int reduce(long send, long recv, long count, int type, int root, long comm, long stream) {
    calls.add("reduce " + send + " " + recv + " " + count + " " + type + " root " + root);
    return SUCCESS;
  }

  @Override
  public int send(long buf, long count, int type, int peer, long comm, long stream) {
    calls.add("send " + buf + " " + count + " to " + peer);
    return SUCCESS;
  }

  @Override
  public int recv(long buf, long count, int type, int peer, long comm, long stream) {
    calls.add("recv " + buf + " " + count + " from " + peer);
    return SUCCESS;
  }

  @Override
  public int groupStart() {
    calls.add("groupStart");
    return SUCCESS;
  }

  @Override
  public int groupEnd() {
    calls.add("groupEnd");
    return IN_PROGRESS; // non-blocking groups may report in progress
  }

  @Override
  public int finalizeComm(long comm) {
    finalizes.incrementAndGet();
    return SUCCESS;
  }

  @Override
  public int destroy(long comm) {
    destroys.incrementAndGet();
    return SUCCESS;
  }

  @Override
  public int abort(long comm) {
    aborts.incrementAndGet();
    return SUCCESS;
  }

  @Override
  public String errorString(int result) {
    return result == REMOTE_ERROR ? "remote process exited or there was a network error" : "error " + result;
  }

  @Override
  public String lastError(long comm) {
    return "";
  }

  @Override
  public synchronized long recordEvent(long stream) {
    long e = nextEvent++;
    events.put(e, new int[] {0});
    liveEvents.incrementAndGet();
    return e;
  }

  @Override
  public synchronized int queryEvent(long event) {
    int[] q = events.get(event);
    q[0]++;
    return eventPolls >= 0 && q[0] >= eventPolls ? 0 : EVENT_NOT_READY;
  }

  @Override
  public String cudaErrorString(int error) {
    return "cuda error " + error;
  }

  @Override
  public synchronized void destroyEvent(long event) {
    events.remove(event);
    liveEvents.decrementAndGet();
  }

  /** Buffers over CPU tensors (host addresses stand in for device addresses). */
  static final class HostBuffers implements DeviceBuffers {
    final AtomicInteger closes = new AtomicInteger();
    private org.bytedeco.javacpp.LongPointer scratch;

    @Override
    public long address(Tensor t) {
      return ((CpuTensor) t).address();
    }

    @Override
    public int ncclType(Tensor t) {
      return 7;
    }

    @Override
    public int elementSize(Tensor t) {
      return 4;
    }

    @Override
    public void order(Tensor t) {}

    @Override
    public long stream() {
      return 42;
    }

    @Override
    public long scratch(int longs) {
      if (scratch == null) {
        scratch = new org.bytedeco.javacpp.LongPointer(longs);
      }
      return scratch.address();
    }

    @Override
    public void copyIn(long dst, long[] values) {
      new org.bytedeco.javacpp.LongPointer(new org.sparktp.backend.cuda.Ptr(dst)).capacity(values.length).put(values);
    }

    @Override
    public void copyOut(long src, long[] out) {
      new org.bytedeco.javacpp.LongPointer(new org.sparktp.backend.cuda.Ptr(src)).capacity(out.length).get(out);
    }

    @Override
    public void close() {
      closes.incrementAndGet();
      if (scratch != null) {
        scratch.deallocate();
        scratch = null;
      }
    }
  }
}
