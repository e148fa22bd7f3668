package org.sparktp.comm.nccl;

/**
 * The NCCL (and CUDA event) calls {@link NcclCommunicator} makes, as plain longs (handles and device addresses),
 * so that its state machine (non-blocking init polled with a deadline, watched collectives, abort) runs on a CPU
 * with a fake. {@link JavacppNcclApi} is the real one. Every int is an {@code ncclResult_t} unless noted.
 */
public interface NcclApi {
  int SUCCESS = 0;
  /** {@code ncclInProgress}: a non-blocking call is still running. */
  int IN_PROGRESS = 7;
  /** {@code cudaErrorNotReady} from an event query. */
  int EVENT_NOT_READY = 600;
  int SUM = 0;
  int INT64 = 4;

  /** Size of an {@code ncclUniqueId}. */
  int UNIQUE_ID_BYTES = 128;

  /** {@code ncclGetUniqueId} (starts NCCL's bootstrap root in this process). */
  byte[] uniqueId();

  /** {@code cudaSetDevice} in the calling thread. */
  void setDevice(int device);

  /**
   * {@code ncclCommInitRankConfig} with {@code blocking = 0}; {@code out[0]} receives the communicator handle
   * (valid even while the result is {@link #IN_PROGRESS}).
   */
  int initRank(long[] out, int nranks, byte[] id, int rank);

  /** {@code ncclCommGetAsyncError}: the communicator's state ({@link #IN_PROGRESS} while an operation runs). */
  int asyncError(long comm);

  int allReduce(long send, long recv, long count, int type, long comm, long stream);

  int allGather(long send, long recv, long count, int type, long comm, long stream);

  int reduceScatter(long send, long recv, long count, int type, long comm, long stream);

  int broadcast(long send, long recv, long count, int type, int root, long comm, long stream);

  int reduce(long send, long recv, long count, int type, int root, long comm, long stream);

  int send(long buf, long count, int type, int peer, long comm, long stream);

  int recv(long buf, long count, int type, int peer, long comm, long stream);

  int groupStart();

  int groupEnd();

  int finalizeComm(long comm);

  int destroy(long comm);

  int abort(long comm);

  /** {@code ncclGetErrorString}. */
  String errorString(int result);

  /** {@code ncclGetLastError}: NCCL's last message, may be empty. */
  String lastError(long comm);

  /** A new CUDA event recorded on {@code stream}. */
  long recordEvent(long stream);

  /** {@code cudaEventQuery} (a {@code cudaError_t}: 0 done, {@link #EVENT_NOT_READY}, else an error). */
  int queryEvent(long event);

  /** {@code cudaGetErrorString}. */
  String cudaErrorString(int error);

  void destroyEvent(long event);
}
