package org.sparktp.spark;

import java.net.InetAddress;
import java.net.UnknownHostException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.spark.BarrierTaskContext;
import org.apache.spark.BarrierTaskInfo;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.comm.tcp.TcpCommunicator;
import org.sparktp.comm.tcp.TcpOptions;
import org.sparktp.comm.tcp.TcpRendezvous;

/**
 * Builds the {@link TcpCommunicator} of a tensor-parallel group inside a Spark barrier task
 * ({@code rdd.barrier().mapPartitions(...)}). Each task listens on the address of its own executor (as
 * Spark reports it in {@link BarrierTaskContext#getTaskInfos()}), the {@code host:port} strings are
 * exchanged with {@link BarrierTaskContext#allGather(String)}, and the ranks connect and authenticate.
 *
 * <p>A stage of {@code g * p} tasks holds {@code g} groups of {@code p} ranks: task (partition)
 * {@code i} is rank {@code i % p} of group {@code i / p}.
 *
 * <pre>{@code
 * CommSecret secret = CommSecret.forJob(spark.sparkContext());     // driver, once per job
 * rdd.barrier().mapPartitions(rows -> {
 *   try (TcpCommunicator comm = SparkRendezvous.connect(BarrierTaskContext.get(), tpSize, secret)) {
 *     ...
 *   }
 * });
 * }</pre>
 *
 * The communicator is aborted if the task fails and closed when the task completes (closing it earlier
 * is fine: {@code close()} is idempotent).
 *
 * <p>Settings: {@value TpConf#COMM_TIMEOUT}, {@value TpConf#COMM_CHUNK_BYTES}, {@value TpConf#COMM_PORT_RANGE} and
 * {@value TpConf#COMM_SHM}, from the {@link TpSettings} the driver resolved and shipped with the task
 * ({@link #connect(BarrierTaskContext, int, CommSecret, TpSettings)}); the forms without them use
 * {@link TpSettings#inTask}: an explicit option wins over a local property of the job ({@code sc.setLocalProperty}),
 * which wins over the default. The executor's own conf is not read.
 */
public final class SparkRendezvous {
  private static final Logger LOG = LoggerFactory.getLogger(SparkRendezvous.class);

  private SparkRendezvous() {}

  /** Connects this task's rank; the group size is the number of tasks in the stage ({@code p = g * p}, g = 1). */
  public static TcpCommunicator connect(BarrierTaskContext ctx, CommSecret secret) {
    return connect(ctx, ctx.getTaskInfos().length, secret, Map.of());
  }

  /** Connects this task's rank of its group of {@code groupSize} ranks. */
  public static TcpCommunicator connect(BarrierTaskContext ctx, int groupSize, CommSecret secret) {
    return connect(ctx, groupSize, secret, Map.of());
  }

  /**
   * Connects this task's rank of its group of {@code groupSize} ranks; {@code options} ({@code spark.tp.comm.*}
   * keys) win over the job's local properties and the defaults ({@link TpSettings#inTask}).
   */
  public static TcpCommunicator connect(BarrierTaskContext ctx, int groupSize, CommSecret secret,
      Map<String, String> options) {
    return connect(ctx, groupSize, secret, TpSettings.inTask(ctx, options));
  }

  /**
   * Connects this task's rank of its group of {@code groupSize} ranks with {@code settings} as the driver resolved
   * them ({@link TpSettings#resolve(org.apache.spark.sql.SparkSession, Map)}, shipped in the task's closure).
   */
  public static TcpCommunicator connect(BarrierTaskContext ctx, int groupSize, CommSecret secret,
      TpSettings settings) {
    BarrierTaskInfo[] infos = ctx.getTaskInfos();
    int tasks = infos.length;
    if (groupSize <= 0 || tasks % groupSize != 0) {
      throw new IllegalArgumentException("A barrier stage of " + tasks + " tasks cannot hold groups of " + groupSize
          + " ranks: the number of tasks must be a multiple of the tensor-parallel size");
    }
    int task = ctx.partitionId();
    int group = task / groupSize;
    int rank = task % groupSize;
    String host = hostOf(infos[task].address());
    TcpOptions opts = TpConf.tcpOptions(secret.resolve(), settings.withPrefix("spark.tp.comm."))
        .withTag("stage " + ctx.stageId() + "." + ctx.stageAttemptNumber() + " group " + group);
    InetAddress bindAddress;
    try {
      bindAddress = InetAddress.getByName(host);
    } catch (UnknownHostException e) {
      throw new CommunicatorException("rendezvous of task " + task + ": cannot resolve the executor address '" + host
          + "' that Spark reports for this task", e);
    }
    int[] ports = TpConf.parsePortRange(TpConf.COMM_PORT_RANGE, settings.get(TpConf.COMM_PORT_RANGE));
    try (TcpRendezvous rv = TcpRendezvous.bind(bindAddress, ports[0], ports[1])) {
      LOG.info("Task {} (rank {} of group {}, {} ranks) listens on {}", task, rank, group, groupSize, rv.address());
      String[] all = ctx.allGather(rv.address());
      List<String> mine = new ArrayList<>(groupSize);
      for (int r = 0; r < groupSize; r++) {
        mine.add(all[group * groupSize + r]);
      }
      TcpCommunicator comm = rv.connect(rank, mine, opts);
      // A failed or killed task aborts its communicator (the peers fail at once instead of at the
      // timeout); every task closes it when it ends, even if the caller forgot.
      ctx.addTaskFailureListener((org.apache.spark.util.TaskFailureListener) (c, error) -> comm.abort(error));
      ctx.addTaskCompletionListener((org.apache.spark.util.TaskCompletionListener) c -> comm.close());
      return comm;
    }
  }

  /** The host of an executor address as Spark reports it ({@code host:port}, or a bare host). */
  static String hostOf(String address) {
    String a = address.trim();
    if (a.startsWith("[")) {
      int end = a.indexOf(']');
      return a.substring(1, end);
    }
    int colon = a.lastIndexOf(':');
    if (colon > 0 && a.indexOf(':') == colon && a.substring(colon + 1).chars().allMatch(Character::isDigit)) {
      return a.substring(0, colon);
    }
    return a;
  }
}
