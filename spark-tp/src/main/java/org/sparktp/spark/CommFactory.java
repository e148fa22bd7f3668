package org.sparktp.spark;

import java.io.Serializable;
import java.util.Locale;
import java.util.Map;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.SparkContext;
import org.apache.spark.sql.SparkSession;
import org.sparktp.TpConf;
import org.sparktp.comm.Communicator;

/**
 * Makes the communicator of one rank inside a barrier task. Built on the driver once per job and
 * shipped with the task closure (so it may carry a per-job secret). {@link #create} is called by every
 * task of the barrier stage, in every group, exactly once; an implementation may use
 * {@code BarrierTaskContext.allGather} (a collective over the whole stage) to exchange addresses.
 */
public interface CommFactory extends Serializable {

  /** Checks on the driver, before any task starts, that this factory can serve the cluster; throws if not. */
  default void checkCluster(SparkContext sc, int tpSize) {}

  /**
   * The communicator of {@code rank} in group {@code group} (of {@code tpSize} ranks) of the job
   * {@code jobKey}; the caller closes it.
   */
  Communicator create(BarrierTaskContext ctx, String jobKey, int group, int tpSize, int rank, long timeoutMillis);

  /**
   * The factory for a job of {@code spark}, by {@code spark.tp.comm.transport}: {@code local} (the
   * in-JVM {@link LocalCommFactory}; every rank in one JVM, {@code local[N]}), {@code tcp} (the
   * {@link TcpCommFactory}; ranks in any executors), {@code nccl} (the {@link NcclCommFactory}; one GPU per rank)
   * or {@code auto} (NCCL when the job runs on GPUs, see {@link #onGpus}; else local on a {@code local[N]} master,
   * else TCP). {@code options} (the model's settings) win over the session conf.
   */
  static CommFactory forSession(SparkSession spark, Map<String, String> options) {
    return forSettings(spark, org.sparktp.TpSettings.resolve(spark, options));
  }

  /**
   * The factory for resolved {@code settings}: the TCP factory carries every {@code spark.tp.comm.*}
   * value the driver resolved, so the executors use those (not their own conf).
   */
  static CommFactory forSettings(SparkSession spark, org.sparktp.TpSettings settings) {
    String t = settings.get(TpConf.COMM_TRANSPORT).trim().toLowerCase(Locale.ROOT);
    if (t.equals("nccl") || (t.equals("auto") && onGpus(spark, settings))) {
      return new NcclCommFactory();
    }
    boolean local = switch (t) {
      case "local" -> true;
      case "tcp" -> false;
      case "auto" -> spark.sparkContext().isLocal();
      default -> throw new IllegalArgumentException("Invalid value for " + TpConf.COMM_TRANSPORT + ": '" + t
          + "' (use auto, local, tcp or nccl)");
    };
    if (local) {
      return new LocalCommFactory();
    }
    return TcpCommFactory.forJob(spark.sparkContext(), settings);
  }

  /**
   * True when the job runs on GPUs: {@code spark.tp.backend=cuda}, or {@code auto} with GPUs given to tasks
   * ({@code spark.task.resource.gpu.amount} > 0). Then {@code auto} transport is NCCL.
   */
  static boolean onGpus(SparkSession spark, org.sparktp.TpSettings settings) {
    String be = settings.get(TpConf.BACKEND).trim().toLowerCase(Locale.ROOT);
    if (be.equals("cuda")) {
      return true;
    }
    if (!be.equals("auto")) {
      return false;
    }
    String gpus = spark.sparkContext().getConf().get("spark.task.resource.gpu.amount", "0").trim();
    try {
      return Double.parseDouble(gpus) > 0;
    } catch (NumberFormatException e) {
      return false;
    }
  }
}
