package org.sparktp.comm.nccl;

import org.sparktp.backend.cuda.DeviceOrdinal;

/**
 * The NCCL rendezvous of a barrier stage, without Spark: every task sends one message through the stage's
 * all-gather ({@code BarrierTaskContext.allGather}); rank 0 of each group puts its group's {@code ncclUniqueId} in
 * Base64 in it, every rank its host and GPU UUID. Group {@code g} of {@code p} ranks is tasks {@code g*p ..
 * g*p + p - 1}; each rank takes its id from its group's rank 0 and refuses a group with two ranks on one GPU (as
 * spark-rapids-ml and XGBoost do). The id holds rank 0's bootstrap address and is not authenticated (NCCL's design).
 */
public final class NcclRendezvous {
  private NcclRendezvous() {}

  /** What a rank sends: {@code id} (Base64 of the unique id on rank 0, else empty), {@code ;}, host, {@code /}, GPU. */
  public static String message(byte[] id, String host, String gpu) {
    return (id == null ? "" : NcclCommunicator.encodeId(id)) + ";" + host + "/" + gpu;
  }

  /**
   * The unique id of group {@code group} from the stage's gathered messages ({@code all}, one per task in task
   * order); fails, naming the setting to change, when two ranks of the group share a GPU or a message is malformed.
   */
  public static byte[] groupId(String[] all, int group, int tpSize) {
    int base = group * tpSize;
    if (base < 0 || tpSize <= 0 || base + tpSize > all.length) {
      throw new IllegalStateException("The barrier stage gathered " + all.length + " messages: group " + group
          + " of " + tpSize + " ranks is not among them (are the stage's tasks group x tp size?)");
    }
    String[] gpus = new String[tpSize];
    for (int r = 0; r < tpSize; r++) {
      String m = all[base + r];
      int semi = m == null ? -1 : m.indexOf(';');
      if (semi < 0) {
        throw new IllegalStateException("Rank " + r + " of group " + group + " sent '" + m + "', not an NCCL"
            + " rendezvous message (id;host/gpu)");
      }
      gpus[r] = m.substring(semi + 1);
    }
    DeviceOrdinal.checkDistinct(gpus);
    String root = all[base];
    return NcclCommunicator.decodeId(root.substring(0, root.indexOf(';')));
  }
}
