package org.sparktp.spark;

import java.net.InetAddress;
import java.net.UnknownHostException;
import org.apache.spark.BarrierTaskContext;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.cuda.cudart.cudaDeviceProp;
import org.bytedeco.cuda.global.cudart;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.nccl.CudaDeviceBuffers;
import org.sparktp.comm.nccl.JavacppNcclApi;
import org.sparktp.comm.nccl.NcclApi;
import org.sparktp.comm.nccl.NcclCommunicator;
import org.sparktp.comm.nccl.NcclRendezvous;

/**
 * NCCL communicators for ranks that each own a GPU ({@code spark.tp.comm.transport=nccl}). Rank 0 of each group
 * makes the group's {@code ncclUniqueId}; every task of the stage sends one message through
 * {@code BarrierTaskContext.allGather} (rank 0: the id in Base64; every rank: its host and GPU UUID), so each
 * group takes its id from its rank 0 and refuses two ranks on one GPU. The id holds rank 0's bootstrap address and
 * is not authenticated (NCCL's own design): run on a trusted network.
 */
public final class NcclCommFactory implements CommFactory {
  private static final long serialVersionUID = 1L;

  @Override
  public Communicator create(BarrierTaskContext ctx, String jobKey, int group, int tpSize, int rank,
      long timeoutMillis) {
    int device = GpuTask.deviceOrdinal(ctx);
    CudaProbe.Status st = CudaProbe.status();
    if (!st.ncclAvailable()) {
      throw new IllegalStateException("spark.tp.comm.transport=nccl but NCCL cannot run in this executor: "
          + (st.available() ? st.ncclReason() : st.backendReason()) + "; set spark.tp.comm.transport=tcp");
    }
    NcclApi api = new JavacppNcclApi();
    api.setDevice(device);
    String[] all = ctx.allGather(NcclRendezvous.message(rank == 0 ? api.uniqueId() : null, host(),
        gpuUuid(device)));
    byte[] uid = NcclRendezvous.groupId(all, group, tpSize);
    return NcclCommunicator.connect(api, new CudaDeviceBuffers(device), uid, rank, tpSize, device, timeoutMillis);
  }

  private static String host() {
    try {
      return InetAddress.getLocalHost().getHostName();
    } catch (UnknownHostException e) {
      return "unknown-host";
    }
  }

  /** The device's UUID in hex (unique across the host, whatever CUDA_VISIBLE_DEVICES each executor has). */
  static String gpuUuid(int device) {
    try (cudaDeviceProp p = new cudaDeviceProp()) {
      int rc = cudart.cudaGetDeviceProperties(p, device);
      if (rc != 0) {
        return "device-" + device;
      }
      byte[] b = new byte[16];
      new BytePointer(p.uuid()).capacity(16).get(b);
      return "GPU-" + java.util.HexFormat.of().formatHex(b);
    }
  }
}
