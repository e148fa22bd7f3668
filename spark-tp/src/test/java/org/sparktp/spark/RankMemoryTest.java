package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.junit.jupiter.api.Test;
import org.sparktp.nn.ModelSpec;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.MemoryEstimate;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.tensor.DType;
import org.sparktp.testing.HfFixtures;

/**
 * The memory of the ranks: the estimate of what a rank needs equals the same sum done by hand from a fixture's
 * config; a job whose ranks cannot fit the budget fails before it starts, in one line naming the setting and the
 * amount; an {@link OutOfMemoryError} in a rank fails its attempt with a message naming the setting
 * to raise, and the SparkContext (local mode: the driver's JVM, where Spark would treat the Error as fatal) stays
 * usable for the next job.
 */
class RankMemoryTest extends SparkTestBase {

  @Test
  void anOutOfMemoryErrorInARankFailsTheJobNotTheSparkContext() {
    Random rng = new Random(2108);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 30, 50, false);
    Dataset<Row> in = frame(Input.FLOATS, x, 2);
    // one group: with two, the other group could finish while rank 1 fails, Spark would rerun only the failed
    // group's tasks, and that partial attempt fails with its own message (seen under load in a full run)
    TensorParallelModel oom = new TensorParallelModel(spec.model()).setTpSize(2).setGroups(1).setBatchSize(8)
        .setConf("spark.tp.test.oom-rank", "1");
    assertThatThrownBy(() -> oom.transform(in).collect())
        .hasMessageContaining("Rank 1 of group 0 ran out of off-heap memory (Cannot allocate new BytePointer(33554432)"
            + " (injected: spark.tp.test.oom-rank); this JVM's budget org.bytedeco.javacpp.maxBytes=")
        .hasMessageContaining("raise -Dorg.bytedeco.javacpp.maxBytes in spark.executor.extraJavaOptions");
    assertThat(spark.sparkContext().isStopped()).isFalse();
    assertThat(LocalCommFactory.pending()).isZero();
    // the next job runs on the same context and gives the model's outputs
    float[][] y = outputsById(new TensorParallelModel(spec.model()).setTpSize(2).setBatchSize(8).transform(in),
        x.length, "prediction");
    assertClose(y, Reference.forward(spec, x)); // float64 reference
  }

  /**
   * The llama fixture (hidden 64, 2 layers, 8 heads, 2 KV heads of 8, intermediate 100, vocabulary 96, untied head) at
   * tp 2 in bf16, rank 0, generating 4 tokens after 10-token prompts with explain's default batch settings: every term
   * computed here by hand from the config.
   */
  @Test
  void theEstimateOfARankIsTheSumWorkedOutByHandFromTheConfig() throws Exception {
    Plan plan;
    try (HfModel m = HfModel.open(HfFixtures.dir("llama").toString())) {
      plan = TransformerGraph.plan(m.model(), 2, Task.GENERATE, null, false, false);
    }
    MemoryEstimate.Workload w = new MemoryEstimate.Workload(1024, 8192, 2048, 10, 4, 1L << 30);
    MemoryEstimate e = MemoryEstimate.of(plan, 0, DType.BF16, DType.BF16, w);
    int h = 64;
    int layers = 2;
    // rank 0: heads 0-3 (4 x 8 rows of q), KV head 0 (8 rows of k and of v), intermediate 50, vocabulary rows 48
    long perLayer = 2 * 4L * h /* two norms, f32 */ + 2L * (32 * h + 8 * h + 8 * h + h * 32) /* q k v o, bf16 */
        + 2L * (50 * h + 50 * h + h * 50) /* gate up down */;
    long weights = 2L * 48 * h /* embedding rows */ + layers * perLayer + 4L * h /* final norm */ + 2L * 48 * h;
    assertThat(e.weights()).isEqualTo(weights).isEqualTo(72448);
    assertThat(e.load()).as("the largest slice: gate, up or down, 50 x 64 bf16").isEqualTo(2L * 50 * h);
    // rows a rank brings: min(batch-size 1024, batch-tokens 8192 / prompt 10) = 819; a step: min(2 x 819 x 10, 2048)
    long rows = 819;
    long step = 2048;
    assertThat(e.stepTokens()).isEqualTo(step);
    long kvPerToken = layers * 2L /* k and v */ * 1 /* kv heads on the rank */ * 8 /* head_dim */ * 2 /* bf16 */;
    assertThat(e.kvPerToken()).isEqualTo(kvPerToken);
    assertThat(e.kvCache()).isEqualTo(kvPerToken * 2 /* ranks' rows */ * rows * (10 + 4));
    assertThat(e.activations()).isEqualTo(step * 4 * (4L * h + 3L * h)); // widest GEMM output: o and down, 64
    assertThat(e.logits()).isEqualTo(Math.min(step, 2 * rows) * 48 * 4);
    assertThat(e.offHeap()).isEqualTo(weights + e.kvCache() + e.activations() + e.logits());
    assertThat(e.explain()).startsWith("memory per rank (rank 0, estimate): weights 70.75 KiB (bf16) + the larger of"
        + " loading (6.25 KiB: ").contains("KV cache: 64 bytes per token (layers x 2 x kv heads on the rank x head_dim"
        + " x dtype bytes) x 22932 tokens in flight");
  }

  @Test
  void aJobWhoseRanksCannotFitTheBudgetFailsBeforeItStartsNamingTheSetting() throws Exception {
    int[][] ids = {{1, 2, 3}, {4, 5, 6, 7}};
    TensorParallelModel m = TensorParallelModel.fromDirectory(HfFixtures.dir("llama").toString()).setInputCol("ids")
        .setTpSize(2).setGroups(1).setTask("score").setConf("spark.tp.batch-tokens", "1000000000");
    java.util.concurrent.atomic.AtomicInteger jobs = new java.util.concurrent.atomic.AtomicInteger();
    org.apache.spark.scheduler.SparkListener count = new org.apache.spark.scheduler.SparkListener() {
      @Override
      public void onJobStart(org.apache.spark.scheduler.SparkListenerJobStart start) {
        jobs.incrementAndGet();
      }
    };
    Dataset<Row> in = HfSparkTest.idsFrame(ids, false);
    spark.sparkContext().addSparkListener(count);
    try {
      assertThatThrownBy(() -> m.transform(in))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessageStartingWith("Not enough off-heap memory for the ranks: each needs about ")
          .hasMessageContaining(" and one JVM runs 2 of them: ")
          .hasMessageContaining("(the driver's org.bytedeco.javacpp.maxBytes, where a local master runs the ranks);"
              + " raise -Dorg.bytedeco.javacpp.maxBytes (a JVM option of the driver")
          .hasMessageContaining(" by at least ")
          .hasMessageNotContaining("\n");
      spark.sparkContext().listenerBus().waitUntilEmpty();
      assertThat(jobs.get()).as("jobs started").isZero();
    } finally {
      spark.sparkContext().removeSparkListener(count);
    }
    // the check can be turned off: the two short rows fit in practice
    assertThat(m.setConf("spark.tp.memory.check", "false").transform(in).count()).isEqualTo(2);
  }

  @Test
  void theOneLineErrorNamesTheAmountToAdd() {
    MemoryEstimate e = new MemoryEstimate(0, DType.BF16, 3L << 30, 1L << 28, 0, 0, 0, 1L << 30, 1L << 30, 16384,
        64L << 20, 0);
    RankMemory.Budget b = new RankMemory.Budget(4L << 30, 2, "the driver's org.bytedeco.javacpp.maxBytes", "-Dx");
    // 2 ranks x (3 GiB + 1 GiB + 64 MiB) = 8320 MiB against 4096 MiB: 4224 MiB more
    assertThat(RankMemory.problem(e, b)).isEqualTo("Not enough off-heap memory for the ranks: each needs about 4.06"
        + " GiB (weights 3.00 GiB in bf16, KV cache 0 B, activations 1.00 GiB, logits 64.00 MiB; 'spark-tp explain'"
        + " itemizes it) and one JVM runs 2 of them: 8.13 GiB, more than 4.00 GiB (the driver's"
        + " org.bytedeco.javacpp.maxBytes); raise -Dx by at least 4224m (to 8320m or more), or lower"
        + " spark.tp.batch-tokens / spark.tp.kv-cache.max-bytes, or raise tp (spark.tp.memory.check=false skips this"
        + " check)");
    assertThat(RankMemory.problem(e, new RankMemory.Budget(9L << 30, 2, "x", "-Dx"))).isNull();
  }

  @Test
  void theLaunchersBudgetIsTheMachinesShareLessTheHeapsAndExecutorsTakeTheirOverhead() {
    long g = 1L << 30;
    assertThat(RankMemory.machineShare(24 * g, 0, 4 * g, 1)).isEqualTo((long) (0.85 * 24 * g) - 4 * g);
    // local-cluster[2, 1, 2048] next to a 4g driver: (0.85 x 24g - 4g - 2 x 2g) / 2
    assertThat(RankMemory.machineShare(24 * g, 4 * g, 2 * g, 2)).isEqualTo(((long) (0.85 * 24 * g) - 8 * g) / 2);
    assertThat(RankMemory.machineShare(4 * g, 0, 4 * g, 1)).as("never below 1 GiB").isEqualTo(g);
    assertThat(RankMemory.executorOption(java.util.Map.of("spark.executor.memoryOverhead", "6g"), 0, 0))
        .isEqualTo("-Dorg.bytedeco.javacpp.maxBytes=" + 6 * g);
    assertThat(RankMemory.executorOption(java.util.Map.of("spark.executor.memoryOverhead", "2048",
        "spark.memory.offHeap.enabled", "true", "spark.memory.offHeap.size", "1g"), 0, 0))
        .as("a bare overhead is MiB, as Spark reads it; plus the off-heap size").isEqualTo(
            "-Dorg.bytedeco.javacpp.maxBytes=" + 3 * g);
    assertThat(RankMemory.executorOption(java.util.Map.of("spark.memory.offHeap.size", "1g"), 0, 0))
        .as("off-heap size without offHeap.enabled, on a cluster").isNull();
  }
}
