package org.sparktp.spark;

import org.apache.spark.TaskContext;
import org.apache.spark.resource.ResourceInformation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.backend.cuda.DeviceOrdinal;

/**
 * The GPU side of a barrier task: the task's GPU from {@code TaskContext.resources().get("gpu")} (mapped through
 * {@code CUDA_VISIBLE_DEVICES}, {@link DeviceOrdinal}) and the backend {@code spark.tp.backend} resolves to here.
 */
final class GpuTask {
  private static final Logger LOG = LoggerFactory.getLogger(GpuTask.class);

  private GpuTask() {}

  /** The task's GPU addresses, or an empty array when Spark gave it none. */
  static String[] gpuAddresses(TaskContext ctx) {
    ResourceInformation gpu = ctx == null ? null : ctx.resourcesJMap().get("gpu");
    return gpu == null ? new String[0] : gpu.addresses();
  }

  /** The CUDA ordinal of the task's GPU; fails (naming the settings) when the task has none or CUDA cannot run. */
  static int deviceOrdinal(TaskContext ctx) {
    String[] addr = gpuAddresses(ctx);
    CudaProbe.Status st = CudaProbe.status();
    if (addr.length > 0 && !st.available()) {
      throw new IllegalStateException("The task has GPU " + String.join(",", addr) + " but the CUDA backend cannot run"
          + " in this executor: " + st.backendReason());
    }
    if (addr.length > 1) {
      LOG.warn("Task {} got {} GPUs ({}); spark-tp uses the first: set spark.task.resource.gpu.amount=1",
          ctx.partitionId(), addr.length, String.join(",", addr));
    }
    return DeviceOrdinal.resolve(addr, System.getenv("CUDA_VISIBLE_DEVICES"), st.devices());
  }

  /**
   * The backend this task runs: {@code cpu}, {@code cuda}, or for {@code auto} CUDA when the task has a GPU and the
   * CUDA libraries load, else the CPU with the reason logged.
   */
  static String resolveBackend(String name, TaskContext ctx) {
    if (!name.equals("auto")) {
      return name;
    }
    String[] addr = gpuAddresses(ctx);
    if (addr.length == 0) {
      LOG.info("spark.tp.backend=auto: task {} has no GPU resource, using the CPU backend",
          ctx == null ? -1 : ctx.partitionId());
      return "cpu";
    }
    CudaProbe.Status st = CudaProbe.status();
    if (!st.available()) {
      LOG.warn("spark.tp.backend=auto: task {} has GPU {} but the CUDA backend is unavailable ({}); using the CPU"
          + " backend", ctx.partitionId(), String.join(",", addr), st.backendReason());
      return "cpu";
    }
    return "cuda";
  }
}
