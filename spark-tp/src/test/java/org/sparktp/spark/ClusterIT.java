package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerStageCompleted;
import org.apache.spark.scheduler.SparkListenerStageSubmitted;
import org.apache.spark.scheduler.SparkListenerTaskStart;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestMethodOrder;
import org.sparktp.nn.ModelSpec;
import org.sparktp.testing.HfFixtures;
import org.sparktp.testing.ScriptCluster;

/**
 * spark-tp on a standalone cluster whose workers are separate hosts: {@code bin/spark-tp-cluster up --netns} starts a
 * master and three workers (1 core each), each worker in its own network namespace with its own address, and this
 * JVM is the driver on the host (bound to the bridge's address). The ranks of a group are then on different hosts:
 * they talk TCP (never shared memory), through whatever fault the script puts between them.
 *
 * <p>Checks against the float64 references the {@code local[N]} tests use, with the same tolerances: an MLP at tp 3
 * (one rank per host), the llama fixture's logits at tp 2, the gpt2 fixture's greedy tokens at tp 2; with
 * {@code delay 1} and {@code delay 5} ms between hosts the job completes with the same result; a worker killed while
 * the generation stage runs: the stage is retried on the two hosts left and every row comes back once with the
 * reference's greedy tokens.
 *
 * <p>Runs in {@code mvn verify} (the {@code cluster-it} execution of surefire, phase integration-test) where it can:
 * as root with network namespaces; elsewhere it is skipped with the reason. {@code -Dsparktp.cluster=skip} skips it.
 * The cluster is stopped and its namespaces removed after the tests, also when they fail.
 */
@TestMethodOrder(MethodOrderer.OrderAnnotation.class)
class ClusterIT {
  private static final int WORKERS = 3;
  private static ScriptCluster cluster;
  private static SparkSession spark;
  private static final Map<Integer, List<String>> TASK_HOSTS = new ConcurrentHashMap<>();
  private static final Set<Integer> BARRIER_STAGES = ConcurrentHashMap.newKeySet();
  private static final Map<Integer, Integer> FAILED_ATTEMPTS = new ConcurrentHashMap<>();
  private static final Map<Integer, String> FAILURES = new ConcurrentHashMap<>();
  private static final int COMM_TIMEOUT_S = 15;
  private static final int PROBE_COPIES = 20;
  private static final int FAULT_WINDOW_S = 20;
  private static int copiesLasting;

  @BeforeAll
  static void start() throws Exception {
    ScriptCluster.assumeNetns();
    SparkTestBase.stopSpark();
    cluster = ScriptCluster.up(WORKERS);
    spark = SparkSession.builder()
        .master(cluster.url())
        .appName("spark-tp-cluster-it")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", cluster.hostAddress())
        .config("spark.driver.bindAddress", cluster.hostAddress())
        .config("spark.executor.extraClassPath", ScriptCluster.classPath())
        .config("spark.executor.memory", "768m")
        .config("spark.executorEnv.OPENBLAS_NUM_THREADS", "1")
        .config("spark.executorEnv.OMP_NUM_THREADS", "1")
        .config("spark.sql.shuffle.partitions", "3")
        .config("spark.task.maxFailures", "4")
        .config("spark.tp.comm.timeout", "30s")
        .getOrCreate();
    spark.sparkContext().addSparkListener(new SparkListener() {
      @Override
      public void onStageSubmitted(SparkListenerStageSubmitted e) {
        if (scala.jdk.javaapi.CollectionConverters.asJava(e.stageInfo().rddInfos()).stream()
            .anyMatch(org.apache.spark.storage.RDDInfo::isBarrier)) {
          BARRIER_STAGES.add(e.stageInfo().stageId());
        }
      }

      @Override
      public void onTaskStart(SparkListenerTaskStart e) {
        TASK_HOSTS.computeIfAbsent(e.stageId(), k -> java.util.Collections.synchronizedList(new ArrayList<>()))
            .add(e.taskInfo().host());
      }

      @Override
      public void onStageCompleted(SparkListenerStageCompleted e) {
        if (e.stageInfo().failureReason().isDefined()) {
          FAILURES.putIfAbsent(e.stageInfo().stageId(), e.stageInfo().failureReason().get());
          FAILED_ATTEMPTS.merge(e.stageInfo().stageId(), 1, Integer::sum);
        }
      }
    });
    long deadline = System.currentTimeMillis() + 120_000;
    while (spark.sparkContext().statusTracker().getExecutorInfos().length < WORKERS + 1) {
      assertThat(System.currentTimeMillis()).as("the %d executors registered within 120 s", WORKERS)
          .isLessThan(deadline);
      Thread.sleep(200);
    }
  }

  @AfterAll
  static void stop() {
    try {
      if (spark != null) {
        spark.stop();
      }
    } finally {
      if (cluster != null) {
        cluster.close();
      }
    }
  }

  @Test
  @Order(1)
  void mlpAtTp3WithOneRankPerHostMatchesTheReference() {
    Random rng = new Random(System.nanoTime());
    ModelSpec spec = Reference.mlp(rng, 48, 301, 29);
    float[][] x = SparkTestBase.inputs(rng, 90, 48, false);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(3).setGroups(1).setBatchSize(16);
    Dataset<Row> out = model.transform(frame(x, 4));
    SparkTestBase.assertClose(SparkTestBase.outputsById(out, x.length, "prediction"), Reference.forward(spec, x));
    assertThat(model.lastMetrics().commBytesSent(0)).isPositive();
    List<String> hosts = lastBarrierHosts();
    assertThat(new HashSet<>(hosts)).as("the 3 ranks ran on 3 hosts (%s)", hosts).hasSize(3);
  }

  @Test
  @Order(2)
  void llamaLogitsAndGpt2GreedyTokensAtTp2AcrossHostsMatchTheReference() {
    HfFixtures.Fixture llama = HfFixtures.load("llama");
    TensorParallelModel logits = TensorParallelModel.fromDirectory(llama.dir().toString()).setInputCol("ids")
        .setOutputCol("logits").setTpSize(2).setGroups(1);
    double tol = logits.resolveDtype("cpu", spark) == org.sparktp.tensor.DType.BF16 ? 2e-2 : HfSparkTest.TOL;
    assertThat(HfSparkTest.relError(logits.transform(idsFrame(llama.inputs(), 1)).collectAsList(),
        i -> llama.rows().get(i).logitsLast())).isLessThanOrEqualTo(tol);
    assertThat(new HashSet<>(lastBarrierHosts())).as("ranks on 2 hosts").hasSize(2);

    assertGreedyEqualsReference(1, 1);
  }

  @Test
  @Order(3)
  void withDelay1And5MsBetweenHostsTheJobsComplete() {
    for (int ms : new int[] {1, 5}) {
      cluster.run("delay", Integer.toString(ms));
      try {
        assertGreedyEqualsReference(1, 1);
      } finally {
        cluster.run("delay", "0");
      }
    }
  }

  @Test
  @Order(4)
  void aPartitionedWorkerFailsItsPeersWithinTheCommTimeoutAndTheJobFinishesOnTheOtherHosts() throws Exception {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    int copies = copiesLasting(f);
    int[][] prompts = prompts(f, copies);
    TensorParallelModel m = generator(f).setConf("spark.tp.comm.timeout", COMM_TIMEOUT_S + "s");
    int before = BARRIER_STAGES.size();
    CompletableFuture<List<Row>> job = CompletableFuture.supplyAsync(
        () -> m.transform(idsFrame(prompts, 2)).collectAsList());
    String victim = awaitRunningRank(job, before);
    int worker = cluster.workerOf(victim);
    long cut = System.nanoTime();
    cluster.run("partition", Integer.toString(worker));
    int stage = BARRIER_STAGES.stream().max(Integer::compare).orElseThrow();
    long failedAfterMs;
    try {
      long deadline = System.currentTimeMillis() + 3L * COMM_TIMEOUT_S * 1000;
      while (FAILED_ATTEMPTS.getOrDefault(stage, 0) == 0 && System.currentTimeMillis() < deadline) {
        Thread.sleep(100);
      }
      failedAfterMs = (System.nanoTime() - cut) / 1_000_000;
    } finally {
      // healed once the healthy rank gave up: the cut-off executor's slot stays taken until its task is killed, so
      // the retry runs on the other hosts; healing now keeps the worker from being declared lost (60 s)
      cluster.run("heal", Integer.toString(worker));
    }
    assertThat(FAILED_ATTEMPTS.getOrDefault(stage, 0)).as("the stage failed after the partition").isPositive();
    assertThat(FAILURES.get(stage)).as("the first failure names the unreachable host").contains(victim)
        .contains("timed out");
    // the healthy rank waits at most the timeout (plus the scheduler's report on a loaded machine)
    assertThat(failedAfterMs).as("ms from the partition to the stage's failure").isLessThan(
        COMM_TIMEOUT_S * 1000L + 15_000);
    assertGreedy(f, job.get(300, TimeUnit.SECONDS), prompts.length, copies);
  }

  @Test
  @Order(5)
  void aWorkerKilledMidGenerationRetriesTheStageAndLosesNoRow() throws Exception {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    int copies = copiesLasting(f);
    int[][] prompts = prompts(f, copies);
    TensorParallelModel m = generator(f);
    int before = BARRIER_STAGES.size();
    CompletableFuture<List<Row>> job = CompletableFuture.supplyAsync(
        () -> m.transform(idsFrame(prompts, 2)).collectAsList());
    String victim = awaitRunningRank(job, before);
    cluster.run("kill-worker", Integer.toString(cluster.workerOf(victim)));
    List<Row> rows = job.get(300, TimeUnit.SECONDS);
    int stage = BARRIER_STAGES.stream().max(Integer::compare).orElseThrow();
    assertThat(FAILED_ATTEMPTS.getOrDefault(stage, 0)).as("the generation stage failed once and was retried")
        .isGreaterThanOrEqualTo(1);
    List<String> hosts = TASK_HOSTS.get(stage);
    assertThat(hosts.subList(hosts.size() - 2, hosts.size())).as("the retry's ranks").doesNotContain(victim);
    assertGreedy(f, rows, prompts.length, copies);
  }

  // ---------------------------------------------------------------------------------------------------------

  /** Waits until both ranks of the job's generation stage run (1.5 s in); the host of rank 1. */
  private static String awaitRunningRank(CompletableFuture<List<Row>> job, int barrierStagesBefore)
      throws InterruptedException {
    String victim = null;
    long deadline = System.currentTimeMillis() + 120_000;
    while (victim == null && !job.isDone() && System.currentTimeMillis() < deadline) {
      Thread.sleep(100);
      Integer stage = BARRIER_STAGES.stream().max(Integer::compare).orElse(null);
      if (BARRIER_STAGES.size() > barrierStagesBefore && stage != null
          && TASK_HOSTS.getOrDefault(stage, List.of()).size() >= 2) {
        Thread.sleep(1500);
        victim = TASK_HOSTS.get(stage).get(1);
      }
    }
    assertThat(victim).as("the generation stage started on two hosts").isNotNull();
    assertThat(job.isDone()).as("the job was still running when the fault came (make it longer)").isFalse();
    return victim;
  }

  /**
   * How many copies of the gpt2 fixture's prompts keep the faulted jobs' generation busy for about
   * {@value #FAULT_WINDOW_S} s on these hosts (never fewer than 60): measured once, from the ranks' compute and
   * communication time in a fault-free job of {@value #PROBE_COPIES} copies. A fixed count lets a fast host finish the
   * stage before the fault lands, and the test then sees no failed attempt at all.
   */
  private static int copiesLasting(HfFixtures.Fixture f) {
    if (copiesLasting == 0) {
      int[][] prompts = prompts(f, PROBE_COPIES);
      TensorParallelModel probe = generator(f);
      assertGreedy(f, probe.transform(idsFrame(prompts, 2)).collectAsList(), prompts.length, PROBE_COPIES);
      TpMetrics metrics = probe.lastMetrics();
      long busyNanos = 1;
      for (int rank = 0; rank < metrics.tpSize(); rank++) {
        busyNanos = Math.max(busyNanos, metrics.computeNanos(rank) + metrics.commNanos(rank));
      }
      double copies = PROBE_COPIES * FAULT_WINDOW_S * 1e9 / busyNanos;
      copiesLasting = (int) Math.min(4000, Math.max(60, Math.ceil(copies)));
      System.out.printf("ClusterIT: %d copies generated in %.2f s of rank time; the faulted jobs use %d copies%n",
          PROBE_COPIES, busyNanos / 1e9, copiesLasting);
    }
    return copiesLasting;
  }

  private static TensorParallelModel generator(HfFixtures.Fixture f) {
    return TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids").setTpSize(2).setGroups(1)
        .setTask("generate").setMaxNewTokens(6).setBatchSize(2);
  }

  private static int[][] prompts(HfFixtures.Fixture f, int copies) {
    int n = f.greedy().size();
    int[][] prompts = new int[n * copies][];
    for (int i = 0; i < prompts.length; i++) {
      prompts[i] = f.greedy().get(i % n).prompt();
    }
    return prompts;
  }

  private static void assertGreedyEqualsReference(int copies, int seedPartitions) {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    int[][] prompts = prompts(f, copies);
    List<Row> rows = generator(f).transform(idsFrame(prompts, 2 + seedPartitions)).collectAsList();
    assertGreedy(f, rows, prompts.length, copies);
    assertThat(new HashSet<>(lastBarrierHosts())).as("ranks on 2 hosts").hasSize(2);
  }

  /** Every row once, with the reference's greedy tokens for its prompt. */
  private static void assertGreedy(HfFixtures.Fixture f, List<Row> rows, int n, int copies) {
    assertThat(rows).as("rows out").hasSize(n);
    Set<Integer> seen = new HashSet<>();
    int prompts = f.greedy().size();
    for (Row r : rows) {
      int id = r.getInt(0);
      assertThat(seen.add(id)).as("row %d appears once", id).isTrue();
      List<Integer> got = r.getList(2);
      assertThat(got.stream().mapToInt(Integer::intValue).toArray()).as("row %d", id)
          .containsExactly(f.greedy().get(id % prompts).tokens());
    }
    assertThat(seen).hasSize(n);
  }

  private static List<String> lastBarrierHosts() {
    int stage = BARRIER_STAGES.stream().max(Integer::compare).orElseThrow();
    return TASK_HOSTS.get(stage);
  }

  private static Dataset<Row> frame(float[][] x, int partitions) {
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < x.length; i++) {
      rows.add(RowFactory.create((long) i, SparkTestBase.value(SparkTestBase.Input.FLOATS, x[i]), "row-" + i));
    }
    StructType schema = new StructType().add("id", DataTypes.LongType, false)
        .add("features", SparkTestBase.type(SparkTestBase.Input.FLOATS), false)
        .add("tag", DataTypes.StringType, false);
    return spark.createDataFrame(rows, schema).repartition(partitions);
  }

  private static Dataset<Row> idsFrame(int[][] ids, int partitions) {
    StructType schema = new StructType().add("id", DataTypes.IntegerType)
        .add("ids", DataTypes.createArrayType(DataTypes.IntegerType, false));
    List<Row> data = new ArrayList<>();
    for (int i = 0; i < ids.length; i++) {
      Object[] v = new Object[ids[i].length];
      for (int j = 0; j < v.length; j++) {
        v[j] = ids[i][j];
      }
      data.add(RowFactory.create(i, v));
    }
    return spark.createDataFrame(data, schema).repartition(partitions);
  }
}
