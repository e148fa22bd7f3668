package org.sparktp.spark;

import java.util.HashMap;
import java.util.Map;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.SparkContext;
import org.sparktp.TpConf;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.tcp.TcpCommunicator;

/**
 * Communicators over TCP for ranks in any executors ({@link SparkRendezvous}: addresses exchanged with
 * {@code BarrierTaskContext.allGather}, peers authenticated with the job's {@link CommSecret}).
 */
public final class TcpCommFactory implements CommFactory {
  private static final long serialVersionUID = 1L;

  private final CommSecret secret;
  private final Map<String, String> options;

  /** {@code options}: {@code spark.tp.comm.*} settings that win over the executors' conf. */
  public TcpCommFactory(CommSecret secret, Map<String, String> options) {
    this.secret = secret;
    this.options = new HashMap<>(options);
  }

  /** A factory with a fresh per-job secret (or Spark's, with {@code spark.authenticate}). */
  public static TcpCommFactory forJob(SparkContext sc, Map<String, String> options) {
    return new TcpCommFactory(CommSecret.forJob(sc), options);
  }

  /** The {@code spark.tp.comm.*} settings the tasks use (resolved on the driver). */
  Map<String, String> options() {
    return java.util.Collections.unmodifiableMap(options);
  }

  @Override
  public Communicator create(BarrierTaskContext ctx, String jobKey, int group, int tpSize, int rank,
      long timeoutMillis) {
    Map<String, String> opts = new HashMap<>(options);
    opts.put(TpConf.COMM_TIMEOUT, timeoutMillis + "ms");
    TcpCommunicator c = SparkRendezvous.connect(ctx, tpSize, secret, opts);
    if (c.rank() != rank || c.size() != tpSize) {
      c.close();
      throw new IllegalStateException("The rendezvous made rank " + c.rank() + " of " + c.size() + " for rank " + rank
          + " of " + tpSize);
    }
    return c;
  }
}
