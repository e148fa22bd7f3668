package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import java.util.Random;
import org.apache.spark.SparkEnv;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;

/**
 * One settings path: a model's job resolves every {@code spark.tp.*} setting once on the driver (a param or an option
 * on the call, then a local property of the calling thread, then the session conf, then the default) and the ranks
 * run with what it resolved. The batch size is read by the ranks from the job's settings; the steps each rank makes
 * show which value they used (10 rows per rank: ceil(10 / batch) steps).
 */
class SettingsPathTest extends SparkTestBase {
  private static final int ROWS = 30; // 3 ranks, 1 group: 10 rows per rank

  @AfterEach
  void clear() {
    spark.conf().unset(TpConf.BATCH_SIZE);
    spark.sparkContext().setLocalProperty(TpConf.BATCH_SIZE, null);
    spark.conf().unset("spark.tp.comm.chunk-bytes");
  }

  /** Runs a 3-rank model on fresh rows, checks its outputs against the float64 reference; the steps of rank 0. */
  private static long stepsOfRank0(TensorParallelModel m, long seed) {
    float[][] x = inputs(new Random(seed), ROWS, 20, false);
    Dataset<Row> out = m.setTpSize(3).setGroups(1).transform(frame(Input.FLOATS, x, 2));
    assertClose(outputsById(out, x.length, "prediction"), Reference.forward(Reference.mlp(new Random(seed), 20, 33, 7), x));
    assertThat(m.lastMetrics().totalRows()).isEqualTo(ROWS);
    return m.lastMetrics().steps(0);
  }

  private static TensorParallelModel model(long seed) {
    return new TensorParallelModel(Reference.mlp(new Random(seed), 20, 33, 7).model());
  }

  @Test
  void theDefaultAppliesWhenNothingIsSet() {
    TensorParallelModel m = model(801);
    assertThat(m.settings(spark).get(TpConf.BATCH_SIZE)).isEqualTo(TpConf.BATCH_SIZE_DEFAULT);
    assertThat(m.settings(spark).get(TpConf.DTYPE)).isEqualTo("auto");
    // 1024 rows a step: one step takes a rank's 10 rows
    assertThat(stepsOfRank0(m, 801)).isEqualTo(1);
  }

  @Test
  void aLocalPropertyWinsOverTheSessionConf() {
    spark.conf().set(TpConf.BATCH_SIZE, "4");
    TensorParallelModel m = model(802);
    assertThat(m.settings(spark).get(TpConf.BATCH_SIZE)).isEqualTo("4");
    assertThat(stepsOfRank0(m, 802)).as("session conf: 4 rows a step").isEqualTo(3);

    spark.sparkContext().setLocalProperty(TpConf.BATCH_SIZE, "2");
    TensorParallelModel l = model(803);
    assertThat(l.settings(spark).get(TpConf.BATCH_SIZE)).isEqualTo("2");
    assertThat(stepsOfRank0(l, 803)).as("the local property: 2 rows a step").isEqualTo(5);
  }

  @Test
  void anOptionOnTheCallWinsOverTheLocalPropertyAndTheSessionConf() {
    spark.conf().set(TpConf.BATCH_SIZE, "4");
    spark.sparkContext().setLocalProperty(TpConf.BATCH_SIZE, "2");
    TensorParallelModel m = model(804).setConf(TpConf.BATCH_SIZE, "3");
    assertThat(m.settings(spark).get(TpConf.BATCH_SIZE)).isEqualTo("3");
    assertThat(stepsOfRank0(m, 804)).as("setConf: 3 rows a step").isEqualTo(4);

    // the param is an option on the call too, and wins over setConf's key
    TensorParallelModel p = model(805).setConf(TpConf.BATCH_SIZE, "3").setBatchSize(10);
    assertThat(p.settings(spark).get(TpConf.BATCH_SIZE)).isEqualTo("10");
    assertThat(stepsOfRank0(p, 805)).as("the batchSize param: 10 rows a step").isEqualTo(1);
  }

  @Test
  void executorsSeeWhatTheDriverResolvedNotTheirOwnConf() {
    // set at run time: in the session conf only, never in the executors' SparkConf
    spark.conf().set("spark.tp.comm.chunk-bytes", "64k");
    spark.sparkContext().setLocalProperty(TpConf.BATCH_SIZE, "6");
    TpSettings driver = TpSettings.resolve(spark, java.util.Map.of(TpConf.COMM_TIMEOUT, "7s"));
    List<String> seen = jsc.parallelize(List.of(0, 1, 2, 3), 4).map(i -> driver.get("spark.tp.comm.chunk-bytes")
        + " " + driver.get(TpConf.BATCH_SIZE) + " " + driver.get(TpConf.COMM_TIMEOUT) + " "
        + TpSettings.inTask(org.apache.spark.TaskContext.get(), java.util.Map.of()).get(TpConf.BATCH_SIZE) + " "
        + SparkEnv.get().conf().get("spark.tp.comm.chunk-bytes", "unset")).collect();
    // the settings carried by the closure hold the driver's session conf, local property and option; a task given
    // none sees the local property its job carried; the executor's own conf never had the session's value
    assertThat(seen).hasSize(4).containsOnly("64k 6 7s 6 unset");
  }
}
