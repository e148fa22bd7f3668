package org.sparktp.sql;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.nn.ModelSpec;
import org.sparktp.spark.TensorParallelModel;

/** The SQL functions on an embedded local[4] session with the extension loaded. */
class SqlFunctionsTest extends SqlTestBase {
  static final int N = 60;
  static final int IN = 50;
  static final int OUT = 37;
  static SparkSession spark;
  static ModelSpec spec;
  static String dir;
  static float[][] x;
  @TempDir
  static Path tmp;

  @BeforeAll
  static void start() throws Exception {
    spark = session("spark-tp-sql-tests");
    Random rng = new Random(System.nanoTime());
    Path d = tmp.resolve("mlp");
    spec = writeMlp(rng, d, IN, 203, OUT);
    dir = d.toString();
    x = inputs(rng, N, IN);
    frame(spark, x, 3).createOrReplaceTempView("t");
    spark.conf().set("spark.tp.models.m", dir);
  }

  @AfterAll
  static void stop() {
    if (spark != null) {
      spark.stop();
    }
    stopAnySession();
  }

  @Test
  void sameRowsAsTransformAndReferenceAtTp123() {
    double[][] ref = reference(spec, x, 1);
    for (int tp = 1; tp <= 3; tp++) {
      Dataset<Row> sql = spark.sql("SELECT id, tag, tp_predict('m', features, map('tp', '" + tp
          + "', 'batch-size', '8')) AS p FROM t");
      assertThat(sql.columns()).containsExactly("id", "tag", "p");
      List<Row> rows = sql.collectAsList();
      assertThat(rows).hasSize(N);
      float[][] y = byId(rows, N, "p");
      assertClose(y, ref, "tp " + tp);
      for (Row r : rows) {
        assertThat(r.getString(1)).isEqualTo("row-" + r.getLong(0));
      }
      TensorParallelModel api = TensorParallelModel.fromDirectory(dir).setTpSize(tp).setBatchSize(8)
          .setOutputCol("p");
      float[][] z = byId(api.transform(spark.table("t")).collectAsList(), N, "p");
      for (int i = 0; i < N; i++) {
        assertThat(y[i]).as("tp %d row %d: SQL equals transform", tp, i).containsExactly(z[i]);
      }
    }
  }

  @Test
  void severalCallsOnExpressionsWithResultsUsedAbove() {
    double[][] ref = reference(spec, x, 1);
    double[][] ref2 = reference(spec, x, 2);
    String inner = "SELECT id, tp_predict('m', features) AS a,"
        + " tp_predict('m', transform(features, v -> v * 2)) AS b,"
        + " tp_predict('" + dir + "', features, map('tp', '2')) AS c,"
        + " tp_predict('m', features)[0] + 1 AS a0"
        + " FROM t WHERE id % 3 <> 0";
    List<Row> rows = spark.sql(inner).collectAsList();
    assertThat(rows).hasSize(N - 20);
    assertClose(byId(rows, N, "a"), ref, "a");
    assertClose(byId(rows, N, "b"), ref2, "b (input x * 2)");
    assertClose(byId(rows, N, "c"), ref, "c (tp 2)");
    for (Row r : rows) {
      int id = (int) r.getLong(0);
      assertThat(((Number) r.get(r.fieldIndex("a0"))).doubleValue()).isCloseTo(ref[id][0] + 1, org.assertj.core.data.Offset.offset(1e-4));
    }
    // the results feed WHERE, ORDER BY and aggregates above
    long expected = 0;
    double max = Double.NEGATIVE_INFINITY;
    for (int i = 0; i < N; i++) {
      if (i % 3 != 0 && ref[i][1] > 0) {
        expected++;
        max = Math.max(max, ref[i][0]);
      }
    }
    Row agg = spark.sql("SELECT count(*), max(a[0]) FROM (" + inner + ") WHERE a[1] > 0").first();
    assertThat(agg.getLong(0)).isEqualTo(expected);
    assertThat((double) agg.getFloat(1)).isCloseTo(max, org.assertj.core.data.Offset.offset(1e-4));
    long[] perParity = new long[2];
    for (int i = 0; i < N; i++) {
      if (i % 3 != 0 && ref[i][1] > 0) {
        perParity[i % 2]++;
      }
    }
    List<Row> groups = spark.sql("SELECT id % 2 AS k, count(*) AS n, avg(b[0]) FROM (" + inner + ") WHERE a[1] > 0"
        + " GROUP BY id % 2 ORDER BY k").collectAsList();
    for (Row g : groups) {
      assertThat(g.getLong(1)).as("rows with a[1] > 0 and id %% 2 = %d", g.getLong(0))
          .isEqualTo(perParity[(int) g.getLong(0)]);
    }
    List<Row> sorted = spark.sql("SELECT id, tp_predict('m', features) AS p FROM t ORDER BY p[2] DESC LIMIT 5")
        .collectAsList();
    for (int i = 1; i < sorted.size(); i++) {
      assertThat(sorted.get(i - 1).<Float>getList(1).get(2)).isGreaterThanOrEqualTo(sorted.get(i).<Float>getList(1).get(2));
    }
    int top = (int) sorted.get(0).getLong(0);
    for (int i = 0; i < N; i++) {
      assertThat(ref[top][2]).isGreaterThanOrEqualTo(ref[i][2] - 1e-4);
    }
  }

  @Test
  void namedArgumentsAndEmbed() {
    double[][] ref = reference(spec, x, 1);
    List<Row> rows = spark.sql("SELECT id, tp_predict(model => 'm', input => features, tp => 2, batch_size => 4) AS p"
        + " FROM t").collectAsList();
    assertClose(byId(rows, N, "p"), ref, "named arguments");
    List<Row> emb = spark.sql("SELECT id, tp_embed('m', features, map('tp', '3')) AS e FROM t").collectAsList();
    assertClose(byId(emb, N, "e"), ref, "tp_embed");
  }

  @Test
  void explainShowsTheNode() {
    String plan = spark.sql("EXPLAIN SELECT id, tp_predict('m', features, map('tp', '2', 'groups', '1')) AS p FROM t")
        .first().getString(0);
    assertThat(plan).contains("TensorParallelInference [model=m, tp=2, groups=1, dtype=f32]");
    String ext = spark.sql("EXPLAIN EXTENDED SELECT tp_predict('m', features, map('tp', '2')) AS p FROM t")
        .first().getString(0);
    // local[4]: as many groups of 2 as the 4 slots allow; shown in the logical and the physical plans
    assertThat(ext.split("TensorParallelInference \\[model=m, tp=2, groups=2, dtype=f32]", -1)).hasSizeGreaterThan(3);
    String two = spark.sql("EXPLAIN SELECT tp_predict('m', features) AS a, tp_predict('m', features, map('tp', '3')) AS b"
        + " FROM t").first().getString(0);
    assertThat(two).contains("TensorParallelInference [model=m, tp=1, groups=4, dtype=f32]")
        .contains("TensorParallelInference [model=m, tp=3, groups=1, dtype=f32]");
    // the values shown are those the call's job resolves, a local property of the calling thread included (inside a
    // SQL execution Spark copies the session conf over the local properties, so only one of them is set here)
    spark.sparkContext().setLocalProperty("spark.tp.dtype", "bf16");
    try {
      String local = spark.sql("EXPLAIN SELECT tp_predict('m', features, map('tp', '2', 'groups', '1')) AS p FROM t")
          .first().getString(0);
      assertThat(local).contains("TensorParallelInference [model=m, tp=2, groups=1, dtype=bf16]");
    } finally {
      spark.sparkContext().setLocalProperty("spark.tp.dtype", null);
    }
  }

  @Test
  void explainModelsAndDescribe() {
    String text = spark.sql("SELECT tp_explain('m', 2)").first().getString(0);
    assertThat(text).isEqualTo(TensorParallelModel.fromDirectory(dir).plan(2).explain()).contains("fc1");
    List<Row> models = spark.sql("SELECT * FROM tp_models()").collectAsList();
    assertThat(models).hasSize(1);
    assertThat(models.get(0).getString(0)).isEqualTo("m");
    assertThat(models.get(0).getString(1)).isEqualTo(dir);
    String describe = String.join("\n", spark.sql("DESCRIBE FUNCTION EXTENDED tp_predict").as(
        org.apache.spark.sql.Encoders.STRING()).collectAsList());
    assertThat(describe).contains("tp_predict(model, input [, options])").contains("Examples:")
        .contains("spark.tp.models.<name>");
  }

  @Test
  void explainsAHuggingFaceModelToo() {
    // once "This model is a transformer: use transformerPlan(p)" for every Hugging Face model
    String bert = org.sparktp.testing.HfFixtures.dir("bert").toString();
    String text = spark.sql("SELECT tp_explain('" + bert + "', 2)").first().getString(0);
    assertThat(text).startsWith("Plan for tp=2: bert (bidirectional), hidden 36")
        .contains("bidirectional attention layer.0.attention [6 heads x 6]; "
            + "heads per rank: r0: q 0-2 kv 0-2, r1: q 3-5 kv 3-5")
        .contains("weight bytes per rank: [");
  }

  @Test
  void badInputIsAnAnalysisErrorNamingTheArgument() throws Exception {
    Path empty = Files.createDirectories(tmp.resolve("not-a-model"));
    assertError("SELECT tp_predict('nope', features) FROM t",
        "tp_predict argument 'model': no model named 'nope' is registered (registered: m)",
        "SET spark.tp.models.nope=<model directory>");
    assertError("SELECT tp_predict('" + empty + "', features) FROM t",
        "tp_predict argument 'model': '" + empty + "' is not a spark-tp model directory");
    assertError("SELECT tp_predict('m', features, map('tpp', '2')) FROM t",
        "tp_predict: unknown option 'tpp'; the options are the model's params", "batch-size", "tp", "null-policy");
    assertError("SELECT tp_predict('m', features, map('tp', '0')) FROM t",
        "tp_predict: option 'tp' has the invalid value '0' for param tpSize");
    assertError("SELECT tp_predict('m', features, map('batch-size', 'many')) FROM t",
        "option 'batch-size' has the invalid value 'many' for param batchSize");
    assertError("SELECT tp_predict('m', features, map('spark.tp.comm.timeout', 'soon')) FROM t",
        "option 'spark.tp.comm.timeout': Invalid duration for spark.tp.comm.timeout: 'soon'");
    assertError("SELECT tp_predict(model => 'm', input => features, backend => 'gpu') FROM t",
        "tp_predict: option 'backend' has the invalid value 'gpu' for param backend (compute backend:");
    assertError("SELECT tp_predict('m', features, map('null-policy', 'drop')) FROM t",
        "tp_predict: option 'null-policy':", "drop");
    assertError("SELECT tp_predict('m', features, map('inputCol', 'x')) FROM t",
        "option 'inputCol' is not allowed");
    assertError("SELECT tp_predict('m', tag) FROM t",
        "tp_predict argument 'input' (t.tag): Input column 't.tag' has type string; the model takes array<float>");
    assertError("SELECT tp_predict(tag, features) FROM t",
        "tp_predict argument 'model' must be a constant string", "got the expression t.tag");
    assertError("SELECT tp_predict('m') FROM t", "tp_predict needs the argument 'input'");
    assertError("SELECT tp_predict('m', features, 'tp=2') FROM t",
        "tp_predict argument 'options' must be a map<string,string>");
  }

  @Test
  void callsWhereTheyCannotRunAreErrorsSayingWhereTheyMayBeUsed() {
    String may = "may be used only in the SELECT list";
    assertError("SELECT max(tp_predict('m', features)[0]) FROM t", "tp_predict cannot be used inside an aggregate"
        + " function", may);
    assertError("SELECT transform(array(features), f -> tp_predict('m', f)) FROM t",
        "tp_predict cannot be used inside a lambda function", may);
    assertError("SELECT id FROM t WHERE tp_predict('m', features)[0] > 0", "cannot be used in a WHERE or HAVING clause",
        may);
    assertError("SELECT a.id FROM t a JOIN t b ON tp_predict('m', a.features)[0] > b.id", "in a join condition", may);
    assertError("SELECT tag, tp_predict('m', features) FROM t GROUP BY tag, features", "in GROUP BY", may);
    Dataset<Row> stream = spark.readStream().format("rate").load();
    assertThatThrownBy(() -> stream.selectExpr("tp_predict('m', array_repeat(cast(value AS float), 50))"))
        .isInstanceOf(AnalysisException.class).hasMessageContaining("cannot be used in a streaming query");
  }

  private static void assertError(String sql, String... parts) {
    assertThatThrownBy(() -> spark.sql(sql).collect()).as(sql).isInstanceOf(AnalysisException.class)
        .satisfies(e -> {
          for (String p : parts) {
            assertThat(e.getMessage()).contains(p);
          }
        });
  }
}
