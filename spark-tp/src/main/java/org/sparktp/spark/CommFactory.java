package org.sparktp.spark;

import java.io.Serializable;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.SparkContext;
import org.apache.spark.sql.SparkSession;
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
   * The factory for jobs of {@code spark}. This is the one place to switch the transport: today the
   * in-JVM {@link LocalCommFactory} (all ranks in one JVM: {@code local[N]}); the TCP communicator
   * (ranks in different JVMs) plugs in here.
   */
  static CommFactory forSession(SparkSession spark) {
    return new LocalCommFactory();
  }
}
