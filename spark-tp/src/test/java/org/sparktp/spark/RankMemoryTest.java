package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.junit.jupiter.api.Test;
import org.sparktp.nn.ModelSpec;

/**
 * The memory of the ranks: an {@link OutOfMemoryError} in a rank fails its attempt with a message naming the setting
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
    TensorParallelModel oom = new TensorParallelModel(spec.model()).setTpSize(2).setBatchSize(8)
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
}
