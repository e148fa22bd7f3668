package org.sparktp.cli;

import java.io.PrintStream;
import java.util.Locale;
import org.apache.spark.sql.SparkSession;
import org.sparktp.TpConf;
import org.sparktp.backend.BackendProvider;
import org.sparktp.backend.Backends;
import org.sparktp.backend.Precision;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.cuda.CudaProbe;

/** {@code spark-tp doctor}: what this machine and session offer spark-tp, and what does not load and why. */
final class Doctor {
  private Doctor() {}

  static void run(Args a, PrintStream out) {
    out.printf(Locale.ROOT, "%-16s %s %s (%s), %s%n", "java", System.getProperty("java.vendor"),
        System.getProperty("java.version"), System.getProperty("java.home"), System.getProperty("os.arch"));
    out.printf(Locale.ROOT, "%-16s %s (Scala %s)%n", "spark", org.apache.spark.package$.MODULE$.SPARK_VERSION(),
        scala.util.Properties.versionNumberString());
    out.printf(Locale.ROOT, "%-16s %d cores, %s max heap%n", "machine", Runtime.getRuntime().availableProcessors(),
        SparkTpCli.fmtBytes(Runtime.getRuntime().maxMemory()));
    out.printf(Locale.ROOT, "%-16s %s (JavaCPP's org.bytedeco.javacpp.maxBytes: the ranks of a local master share it;"
        + " bin/spark-tp sizes it from the machine's memory less the heap unless SPARK_TP_JAVA_OPTS sets it)%n",
        "off-heap budget", SparkTpCli.fmtBytes(org.bytedeco.javacpp.Pointer.maxBytes()));
    try {
      out.printf(Locale.ROOT, "%-16s loads: %s%n", "backend cpu", CpuBackend.describe());
      String core = System.getenv("OPENBLAS_CORETYPE");
      if (core != null) {
        out.printf(Locale.ROOT, "%-16s OPENBLAS_CORETYPE=%s is set and forces that kernel%n", "", core);
      }
    } catch (Throwable t) {
      out.printf(Locale.ROOT, "%-16s does not load: %s%n", "backend cpu", t);
    }
    out.printf(Locale.ROOT, "%-16s isa %s; %s; kernels: f32 %s, bf16 %s, f16 %s, int8 %s, int8-wo %s%n",
        "onednn",
        CpuBackend.onednnIsa(), CpuBackend.onednnThreads(), Explain.kernel(DType.F32), Explain.kernel(DType.BF16),
        Explain.kernel(DType.F16), Explain.kernel(DType.I8), Explain.kernel(DType.I8_WO));
    out.printf(Locale.ROOT, "%-16s spark.tp.dtype %s; f32 weights: %s%n", "precision",
        Precision.autoReason(DType.BF16, CpuBackend.hasNativeBf16(), CpuBackend.onednnIsa()),
        Precision.resolve("auto", DType.F32, CpuBackend.hasNativeBf16(), TpConf.DTYPE).id());
    out.printf(Locale.ROOT, "%-16s %s=%s stores the activations between ops in the weights' dtype (f32 weights: f32;"
        + " bf16: bf16); ops compute in f32, partial sums are reduced in f32%n", "", TpConf.ACTIVATION_DTYPE,
        TpConf.ACTIVATION_DTYPE_DEFAULT);
    for (BackendProvider p : Backends.providers()) {
      String why = p.unavailableReason();
      out.printf(Locale.ROOT, "%-16s %s (priority %d)%n", "provider " + p.name(), why == null ? "available" : why,
          p.priority());
    }
    CudaProbe.Status cuda = CudaProbe.status();
    if (cuda.available()) {
      out.printf(Locale.ROOT, "%-16s loads: %s%n", "backend cuda", cuda.versions());
    } else {
      out.printf(Locale.ROOT, "%-16s unavailable: %s%n", "backend cuda", cuda.backendReason());
    }
    out.printf(Locale.ROOT, "%-16s %s%n", "nccl", cuda.ncclAvailable() ? "loads (spark.tp.comm.transport=nccl)"
        : "unavailable: " + (cuda.available() ? cuda.ncclReason() : "needs the CUDA backend"));
    SparkSession spark = Sessions.open("doctor", a.get("master", null), a.confs());
    try {
      int executors = spark.sparkContext().statusTracker().getExecutorInfos().length;
      out.printf(Locale.ROOT, "%-16s %s, default parallelism %d (task slots), %d executor(s)%s%n", "session",
          spark.sparkContext().master(), spark.sparkContext().defaultParallelism(),
          Math.max(1, executors - 1), spark.sparkContext().isLocal() ? " (local mode: the driver runs the tasks)" : "");
      out.printf(Locale.ROOT, "%-16s %s%n", "dynamic alloc.",
          spark.conf().get("spark.dynamicAllocation.enabled", "false").equals("true")
              ? "ON: barrier stages need fixed slots; set spark.dynamicAllocation.enabled=false" : "off (good)");
    } finally {
      spark.stop();
    }
  }
}
