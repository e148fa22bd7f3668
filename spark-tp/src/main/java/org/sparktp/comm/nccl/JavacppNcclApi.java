package org.sparktp.comm.nccl;

import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.Loader;
import org.bytedeco.javacpp.Pointer;
import org.bytedeco.cuda.cudart.CUevent_st;
import org.bytedeco.cuda.cudart.CUstream_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nccl;
import org.bytedeco.cuda.nccl.ncclComm;
import org.bytedeco.cuda.nccl.ncclConfig_t;
import org.bytedeco.cuda.nccl.ncclUniqueId;
import org.sparktp.backend.cuda.CudaException;
import org.sparktp.backend.cuda.Ptr;

/**
 * {@link NcclApi} on JavaCPP's NCCL bindings ({@code libnccl.so.2} from the GPU host). The preset skips
 * {@code NCCL_CONFIG_INITIALIZER}, so {@code ncclConfig_t} is filled here as the macro does: size, magic,
 * version, {@code blocking = 0}, every other int {@code INT_MIN} ("undefined") and every pointer null; NCCL copies
 * {@code min(size, its own sizeof)} bytes, so the 2.29 layout works with older and newer libraries.
 */
public final class JavacppNcclApi implements NcclApi {
  private static final int NCCL_CONFIG_UNDEF_INT = Integer.MIN_VALUE;
  private static final int NCCL_API_MAGIC = 0xcafebeef;

  public JavacppNcclApi() {
    Loader.load(nccl.class);
  }

  private static ncclComm comm(long h) {
    return new ncclComm(new Ptr(h));
  }

  private static CUstream_st stream(long h) {
    return new CUstream_st(Ptr.of(h));
  }

  private static Pointer p(long a) {
    return Ptr.of(a);
  }

  @Override
  public byte[] uniqueId() {
    try (ncclUniqueId id = new ncclUniqueId()) {
      int rc = nccl.ncclGetUniqueId(id);
      if (rc != SUCCESS) {
        throw new CudaException("ncclGetUniqueId", rc, errorString(rc));
      }
      byte[] out = new byte[UNIQUE_ID_BYTES];
      new BytePointer(id).capacity(UNIQUE_ID_BYTES).get(out);
      return out;
    }
  }

  @Override
  public void setDevice(int device) {
    int rc = cudart.cudaSetDevice(device);
    if (rc != 0) {
      throw new CudaException("cudaSetDevice(" + device + ")", rc, cudaErrorString(rc));
    }
  }

  @Override
  public int initRank(long[] out, int nranks, byte[] id, int rank) {
    try (ncclUniqueId uid = new ncclUniqueId(); ncclConfig_t cfg = new ncclConfig_t()) {
      new BytePointer(uid).capacity(UNIQUE_ID_BYTES).put(id);
      cfg.size(Loader.sizeof(ncclConfig_t.class)).magic(NCCL_API_MAGIC).version(nccl.NCCL_VERSION_CODE).blocking(0)
          .cgaClusterSize(NCCL_CONFIG_UNDEF_INT).minCTAs(NCCL_CONFIG_UNDEF_INT).maxCTAs(NCCL_CONFIG_UNDEF_INT)
          .netName(null).splitShare(NCCL_CONFIG_UNDEF_INT).trafficClass(NCCL_CONFIG_UNDEF_INT).commName(null)
          .collnetEnable(NCCL_CONFIG_UNDEF_INT).CTAPolicy(NCCL_CONFIG_UNDEF_INT).shrinkShare(NCCL_CONFIG_UNDEF_INT)
          .nvlsCTAs(NCCL_CONFIG_UNDEF_INT).nChannelsPerNetPeer(NCCL_CONFIG_UNDEF_INT)
          .nvlinkCentricSched(NCCL_CONFIG_UNDEF_INT).graphUsageMode(NCCL_CONFIG_UNDEF_INT)
          .numRmaCtx(NCCL_CONFIG_UNDEF_INT);
      ncclComm c = new ncclComm();
      int rc = nccl.ncclCommInitRankConfig(c, nranks, uid, rank, cfg);
      out[0] = c.address();
      return rc;
    }
  }

  @Override
  public int asyncError(long comm) {
    int[] st = {0};
    int rc = nccl.ncclCommGetAsyncError(comm(comm), st);
    return rc != SUCCESS ? rc : st[0];
  }

  @Override
  public int allReduce(long send, long recv, long count, int type, long comm, long stream) {
    return nccl.ncclAllReduce(p(send), p(recv), count, type, SUM, comm(comm), stream(stream));
  }

  @Override
  public int allGather(long send, long recv, long count, int type, long comm, long stream) {
    return nccl.ncclAllGather(p(send), p(recv), count, type, comm(comm), stream(stream));
  }

  @Override
  public int reduceScatter(long send, long recv, long count, int type, long comm, long stream) {
    return nccl.ncclReduceScatter(p(send), p(recv), count, type, SUM, comm(comm), stream(stream));
  }

  @Override
  public int broadcast(long send, long recv, long count, int type, int root, long comm, long stream) {
    return nccl.ncclBroadcast(p(send), p(recv), count, type, root, comm(comm), stream(stream));
  }

  @Override
  public int reduce(long send, long recv, long count, int type, int root, long comm, long stream) {
    return nccl.ncclReduce(p(send), p(recv), count, type, SUM, root, comm(comm), stream(stream));
  }

  @Override
  public int send(long buf, long count, int type, int peer, long comm, long stream) {
    return nccl.ncclSend(p(buf), count, type, peer, comm(comm), stream(stream));
  }

  @Override
  public int recv(long buf, long count, int type, int peer, long comm, long stream) {
    return nccl.ncclRecv(p(buf), count, type, peer, comm(comm), stream(stream));
  }

  @Override
  public int groupStart() {
    return nccl.ncclGroupStart();
  }

  @Override
  public int groupEnd() {
    return nccl.ncclGroupEnd();
  }

  @Override
  public int finalizeComm(long comm) {
    return nccl.ncclCommFinalize(comm(comm));
  }

  @Override
  public int destroy(long comm) {
    return nccl.ncclCommDestroy(comm(comm));
  }

  @Override
  public int abort(long comm) {
    return nccl.ncclCommAbort(comm(comm));
  }

  @Override
  public String errorString(int result) {
    BytePointer s = nccl.ncclGetErrorString(result);
    return s == null ? "ncclResult " + result : s.getString();
  }

  @Override
  public String lastError(long comm) {
    BytePointer s = nccl.ncclGetLastError(comm(comm));
    return s == null ? "" : s.getString();
  }

  @Override
  public long recordEvent(long stream) {
    CUevent_st e = new CUevent_st();
    int rc = cudart.cudaEventCreateWithFlags(e, cudart.cudaEventDisableTiming);
    if (rc != 0) {
      throw new CudaException("cudaEventCreateWithFlags", rc, cudaErrorString(rc));
    }
    rc = cudart.cudaEventRecord(e, stream(stream));
    if (rc != 0) {
      cudart.cudaEventDestroy(e);
      throw new CudaException("cudaEventRecord", rc, cudaErrorString(rc));
    }
    return e.address();
  }

  @Override
  public int queryEvent(long event) {
    return cudart.cudaEventQuery(new CUevent_st(new Ptr(event)));
  }

  @Override
  public String cudaErrorString(int error) {
    return cudart.cudaGetErrorString(error).getString();
  }

  @Override
  public void destroyEvent(long event) {
    cudart.cudaEventDestroy(new CUevent_st(new Ptr(event)));
  }
}
