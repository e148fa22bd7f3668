package org.sparktp.spark;

import java.util.Map;
import org.apache.spark.TaskContext;
import org.apache.spark.resource.ResourceInformation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.backend.Backend;
import org.sparktp.backend.Backends;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.backend.cuda.DeviceOrdinal;

/**
 * The GPU side of a barrier task: the task's GPU from {@code TaskContext.resources().get("gpu")} (mapped through
 * {@code CUDA_VISIBLE_DEVICES}, {@link DeviceOrdinal}) and the backend {@code spark.tp.backend} gives it
 * ({@link Backends}).
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
   * The task's GPU as a CUDA ordinal, or -1 when Spark gave it none, or when CUDA cannot run in this executor (the
   * reason is logged; {@code spark.tp.backend=cuda} then fails with it).
   */
  static int device(TaskContext ctx) {
    String[] addr = gpuAddresses(ctx);
    if (addr.length == 0) {
      return -1;
    }
    CudaProbe.Status st = CudaProbe.status();
    if (!st.available()) {
      LOG.warn("Task {} has GPU {} but the CUDA backend cannot run in this executor: {}", ctx.partitionId(),
          String.join(",", addr), st.backendReason());
      return -1;
    }
    return deviceOrdinal(ctx);
  }

  /** The backend {@code name} ({@code spark.tp.backend}) resolves to for this task ({@link Backends#pick}). */
  static String resolveBackend(String name, TaskContext ctx) {
    return Backends.pick(name, device(ctx)).name();
  }

  /**
   * The backend named by {@code spark.tp.backend} for this task, from its provider ({@link Backends#create}) on the
   * task's GPU when it has one: {@code auto} is CUDA when the task has a GPU and the CUDA libraries load, else the
   * CPU. {@code settings}: the job's settings as the driver resolved them ({@link TpJob#backendSettings}); the
   * executor's own conf is not read.
   */
  static Backend backend(String name, Map<String, String> settings, TaskContext ctx) {
    return Backends.create(name, settings, device(ctx));
  }
}
