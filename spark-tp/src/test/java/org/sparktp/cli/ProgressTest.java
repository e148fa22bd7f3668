package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import org.apache.spark.Success$;
import org.apache.spark.TaskResultLost$;
import org.apache.spark.executor.TaskMetrics;
import org.apache.spark.scheduler.AccumulableInfo;
import org.apache.spark.scheduler.SparkListenerExecutorMetricsUpdate;
import org.apache.spark.scheduler.SparkListenerTaskEnd;
import org.apache.spark.scheduler.SparkListenerTaskStart;
import org.apache.spark.scheduler.TaskInfo;
import org.apache.spark.scheduler.TaskLocality;
import org.junit.jupiter.api.Test;
import scala.Option;
import scala.Tuple4;
import scala.jdk.javaapi.CollectionConverters;

/**
 * Progress and counts from Spark's listener events, fed by hand: rows of running tasks arrive with
 * heartbeats, a failed attempt's rows are dropped and its retry replaces them, the total is the rows the
 * tag stage shipped, and the written count takes each partition's committed records once.
 */
class ProgressTest {
  private static final String JOB = "spark-tp tpModel_1-ab12cd34 ";

  static AccumulableInfo acc(long id, String name, long value) {
    return new AccumulableInfo(id, Option.apply(name), Option.apply((Object) value), Option.apply((Object) value),
        false, false, Option.empty());
  }

  static TaskInfo task(long id, int partition, AccumulableInfo... accs) {
    TaskInfo t = new TaskInfo(id, partition, 0, partition, 0L, "driver", "localhost", TaskLocality.PROCESS_LOCAL(),
        false);
    t.setAccumulables(CollectionConverters.asScala(List.of(accs)).toList());
    return t;
  }

  static SparkListenerTaskEnd end(int stage, TaskInfo t, boolean ok, long written) {
    TaskMetrics m = TaskMetrics.empty();
    m.outputMetrics().setRecordsWritten(written);
    return new SparkListenerTaskEnd(stage, 0, "ResultTask", ok ? Success$.MODULE$ : TaskResultLost$.MODULE$, t, null,
        m);
  }

  static SparkListenerExecutorMetricsUpdate heartbeat(long taskId, int stage, AccumulableInfo acc) {
    Tuple4<Object, Object, Object, scala.collection.immutable.Seq<AccumulableInfo>> u =
        new Tuple4<>(taskId, stage, 0, CollectionConverters.asScala(List.of(acc)).toList());
    return new SparkListenerExecutorMetricsUpdate("driver", CollectionConverters.asScala(List.of(u)).toList(),
        scala.collection.immutable.Map$.MODULE$.empty());
  }

  @Test
  void rowsArriveWithHeartbeatsAndARetriedAttemptIsCountedOnce() {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    Progress p = new Progress(null, new PrintStream(bytes, true, StandardCharsets.UTF_8), "infer");
    // tag stage: 30 + 20 rows shipped to the ranks
    p.onTaskEnd(end(0, task(1, 0, acc(7, JOB + "input rows", 30)), true, 0));
    p.onTaskEnd(end(0, task(2, 1, acc(7, JOB + "input rows", 20)), true, 0));
    // barrier stage, first attempt: rank 0 reports 8 rows while running, then the attempt fails
    p.onTaskStart(new SparkListenerTaskStart(1, 0, task(10, 0)));
    p.onTaskStart(new SparkListenerTaskStart(1, 0, task(11, 1)));
    p.onExecutorMetricsUpdate(heartbeat(10, 1, acc(8, JOB + "rows emitted", 8)));
    assertThat(p.rows()).as("rows of a running task").isEqualTo(8);
    p.onTaskEnd(end(1, task(10, 0, acc(8, JOB + "rows emitted", 8)), false, 0));
    p.onTaskEnd(end(1, task(11, 1, acc(8, JOB + "rows emitted", 5)), false, 0));
    assertThat(p.rows()).as("a failed attempt's rows are redone").isZero();
    // the retry
    p.onTaskStart(new SparkListenerTaskStart(1, 1, task(12, 0)));
    p.onExecutorMetricsUpdate(heartbeat(12, 1, acc(8, JOB + "rows emitted", 11)));
    assertThat(p.rows()).isEqualTo(11);
    p.onTaskEnd(end(1, task(12, 0, acc(8, JOB + "rows emitted", 25)), true, 0));
    p.onTaskEnd(end(1, task(13, 1, acc(8, JOB + "rows emitted", 25)), true, 0));
    // a late rerun of a partition (its shuffle output lost) replaces the earlier value
    p.onTaskEnd(end(1, task(14, 1, acc(8, JOB + "rows emitted", 25)), true, 0));
    assertThat(p.rows()).isEqualTo(50);
    // the write stage: records of committed tasks, each partition once
    p.onTaskEnd(end(2, task(20, 0), true, 26));
    p.onTaskEnd(end(2, task(21, 1), true, 24));
    p.onTaskEnd(end(2, task(22, 1), false, 24));
    assertThat(p.committedRows()).isEqualTo(50);
    p.print(false);
    String line = bytes.toString(StandardCharsets.UTF_8).lines().reduce((a, b) -> b).orElse("");
    assertThat(line).startsWith("infer: 50 of 50 rows, ").contains("ETA 0m00s");
  }

  @Test
  void ratesOfSlowJobsKeepTheirDigits() {
    assertThat(Progress.rate(16, 36.5)).isEqualTo("0.44");
    assertThat(Progress.rate(125, 10)).isEqualTo("12.5");
    assertThat(Progress.rate(41_000, 14)).isEqualTo("2,929");
    assertThat(Progress.rate(1, 1000)).isEqualTo("0.0010");
    assertThat(Progress.rate(0, 3)).isEqualTo("0");
  }
}
