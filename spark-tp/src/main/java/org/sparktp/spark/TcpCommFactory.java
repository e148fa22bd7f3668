package org.sparktp.spark;

import java.util.Map;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.SparkContext;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.tcp.TcpCommunicator;

/**
 * Communicators over TCP for ranks in any executors ({@link SparkRendezvous}: addresses exchanged with
 * {@code BarrierTaskContext.allGather}, peers authenticated with the job's {@link CommSecret}).
 */
public final class TcpCommFactory implements CommFactory {
  private static final long serialVersionUID = 1L;

  private final CommSecret secret;
  private final TpSettings settings;

  /** {@code settings}: every {@code spark.tp.*} value as the driver resolved it; the tasks use its comm keys. */
  public TcpCommFactory(CommSecret secret, TpSettings settings) {
    this.secret = secret;
    this.settings = settings;
  }

  /** {@code options}: {@code spark.tp.comm.*} settings over the defaults ({@link TpSettings#of}). */
  public TcpCommFactory(CommSecret secret, Map<String, String> options) {
    this(secret, TpSettings.of(options));
  }

  /** A factory with a fresh per-job secret (or Spark's, with {@code spark.authenticate}). */
  public static TcpCommFactory forJob(SparkContext sc, TpSettings settings) {
    return new TcpCommFactory(CommSecret.forJob(sc), settings);
  }

  /** The {@code spark.tp.comm.*} settings the tasks use (resolved on the driver). */
  Map<String, String> options() {
    return settings.withPrefix("spark.tp.comm.");
  }

  @Override
  public Communicator create(BarrierTaskContext ctx, String jobKey, int group, int tpSize, int rank,
      long timeoutMillis) {
    TcpCommunicator c = SparkRendezvous.connect(ctx, tpSize, secret,
        settings.with(TpConf.COMM_TIMEOUT, timeoutMillis + "ms"));
    if (c.rank() != rank || c.size() != tpSize) {
      c.close();
      throw new IllegalStateException("The rendezvous made rank " + c.rank() + " of " + c.size() + " for rank " + rank
          + " of " + tpSize);
    }
    return c;
  }
}
