package org.sparktp.backend.cuda;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The CUDA device ordinal of a Spark task, from the addresses Spark gave it ({@code TaskContext.resources()
 * .get("gpu").addresses()}), never guessed. Spark's addresses are what the discovery script reported:
 * {@code conf/getGpusResources.sh} reports the entries of {@code CUDA_VISIBLE_DEVICES} when it is set, else
 * {@code nvidia-smi} indices. Inside the executor, CUDA renumbers the visible devices 0, 1, ... in the order of
 * {@code CUDA_VISIBLE_DEVICES}, so an address is mapped to its position in that list; without the variable the
 * address is the ordinal. (Set {@code CUDA_DEVICE_ORDER=PCI_BUS_ID} on executors so that CUDA's order is
 * {@code nvidia-smi}'s.)
 */
public final class DeviceOrdinal {
  /** Why a task without a {@code gpu} resource cannot run the CUDA backend, and what to set. */
  public static final String NO_GPU = "This task has no GPU: Spark gave it no \"gpu\" resource. Set"
      + " spark.task.resource.gpu.amount=1 and spark.executor.resource.gpu.amount (with a discovery script such as"
      + " conf/getGpusResources.sh), or use spark.tp.backend=cpu";

  private DeviceOrdinal() {}

  /**
   * The ordinal for {@code addresses} (the task's GPU addresses; the first is used), given the executor's
   * {@code cudaVisibleDevices} (null or empty when unset) and the number of devices CUDA sees.
   */
  public static int resolve(String[] addresses, String cudaVisibleDevices, int deviceCount) {
    if (addresses == null || addresses.length == 0) {
      throw new IllegalStateException(NO_GPU);
    }
    String addr = addresses[0].trim();
    int ordinal;
    if (cudaVisibleDevices != null && !cudaVisibleDevices.isBlank()) {
      List<String> visible = new ArrayList<>();
      for (String v : cudaVisibleDevices.split(",")) {
        visible.add(v.trim());
      }
      ordinal = visible.indexOf(addr);
      if (ordinal < 0) {
        throw new IllegalStateException("The task's GPU address '" + addr + "' is not in the executor's"
            + " CUDA_VISIBLE_DEVICES=" + cudaVisibleDevices + ": the discovery script"
            + " (spark.executor.resource.gpu.discoveryScript) must report the entries of CUDA_VISIBLE_DEVICES,"
            + " as conf/getGpusResources.sh does");
      }
    } else {
      try {
        ordinal = Integer.parseInt(addr);
      } catch (NumberFormatException e) {
        throw new IllegalStateException("The task's GPU address '" + addr + "' is not a device index and"
            + " CUDA_VISIBLE_DEVICES is unset: make the discovery script report indices (conf/getGpusResources.sh)"
            + " or set CUDA_VISIBLE_DEVICES on the executors (spark.executorEnv.CUDA_VISIBLE_DEVICES)", e);
      }
    }
    if (ordinal < 0 || ordinal >= deviceCount) {
      throw new IllegalStateException("The task's GPU address '" + addr + "' maps to device " + ordinal
          + " but CUDA sees " + deviceCount + " device(s)" + (cudaVisibleDevices == null || cudaVisibleDevices.isBlank()
              ? "" : " (CUDA_VISIBLE_DEVICES=" + cudaVisibleDevices + ")"));
    }
    return ordinal;
  }

  /**
   * Refuses a group in which two ranks got the same GPU ({@code gpuIds[r]}: a host-unique id of rank r's
   * device, e.g. host + UUID): NCCL does not support one device as two ranks and may hang.
   */
  public static void checkDistinct(String[] gpuIds) {
    Map<String, Integer> seen = new HashMap<>();
    for (int r = 0; r < gpuIds.length; r++) {
      Integer prev = seen.putIfAbsent(gpuIds[r], r);
      if (prev != null) {
        throw new IllegalStateException("Ranks " + prev + " and " + r + " of a tensor-parallel group got the same GPU ("
            + gpuIds[r] + "); NCCL cannot run two ranks on one device. Give each task its own GPU"
            + " (spark.task.resource.gpu.amount=1 with spark.executor.resource.gpu.amount equal to the executor's task"
            + " slots), or set spark.tp.comm.transport=tcp. All ranks: " + Arrays.toString(gpuIds));
      }
    }
  }
}
