package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.sparktp.testing.HfFixtures;

/**
 * {@code spark.tp.on-error}: with {@code column}, rows that cannot run (null, empty, too long, ids outside the
 * vocabulary) get null outputs and their cause in {@code error}, and the other rows give what they give alone; with
 * {@code null}, the same without the column; with {@code fail} (the default), the job fails naming the user's column.
 */
class RowErrorsTest extends SparkTestBase {
  static final HfFixtures.Fixture GPT2 = HfFixtures.load("gpt2");

  /** (id, text): fixture texts that fit with 4 new tokens, then a null, an empty text and one too long. */
  static Dataset<Row> texts(List<String> good) {
    List<String> all = new ArrayList<>(good);
    all.add(null);
    all.add("");
    all.add(String.join(" ", java.util.Collections.nCopies(20, "Spark runs transformers"))); // > 28 tokens
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < all.size(); i++) {
      rows.add(RowFactory.create(i, all.get(i)));
    }
    return spark.createDataFrame(rows, new StructType().add("id", DataTypes.IntegerType).add("text",
        DataTypes.StringType)).repartition(2);
  }

  static List<String> goodTexts() {
    List<String> good = new ArrayList<>();
    for (int i = 0; i < GPT2.texts().size(); i++) {
      if (GPT2.textIds().get(i).length <= 28) {
        good.add(GPT2.texts().get(i));
      }
    }
    return good;
  }

  static TensorParallelModel generator() {
    return TensorParallelModel.fromDirectory(GPT2.dir().toString()).setInputCol("text").setTpSize(2)
        .setTask("generate").setMaxNewTokens(4);
  }

  @Test
  void columnGivesBadRowsTheirCauseAndTheOthersTheirOwnOutput() {
    List<String> good = goodTexts();
    int n = good.size();
    // the good rows alone, with on-error=fail
    Map<Integer, List<Object>> alone = new HashMap<>();
    for (Row r : generator().transform(texts(good).where("id < " + n)).collectAsList()) {
      alone.put(r.getInt(0), r.getList(2));
    }
    TensorParallelModel m = generator().setConf("spark.tp.on-error", "column");
    Dataset<Row> out = m.transform(texts(good));
    assertThat(out.columns()).containsExactly("id", "text", "generated_ids", "generated_text", "finish_reason",
        "error");
    List<Row> rows = out.collectAsList();
    assertThat(rows).hasSize(n + 3);
    Map<Integer, String> errors = new HashMap<>();
    for (Row r : rows) {
      int id = r.getInt(0);
      if (id < n) {
        assertThat(r.isNullAt(5)).as("row %d: %s", id, r.get(5)).isTrue();
        assertThat(r.getList(2)).as("row %d", id).isEqualTo(alone.get(id));
      } else {
        assertThat(r.isNullAt(2)).isTrue();
        assertThat(r.isNullAt(3)).isTrue();
        assertThat(r.isNullAt(4)).isTrue();
        errors.put(id - n, r.getString(5));
      }
    }
    assertThat(errors.get(0)).isEqualTo("column 'text' is null");
    assertThat(errors.get(1)).isEqualTo("column 'text' is an empty sequence: every row needs at least one token");
    assertThat(errors.get(2)).startsWith("column 'text' has ").contains(" tokens, more than 28 (the model's"
        + " max_position_embeddings 32 minus maxNewTokens 4)");
    assertThat(m.lastMetrics().rowErrors()).isEqualTo(3);

    // on-error=null: the same outputs, no column
    List<Row> nulls = generator().setConf("spark.tp.on-error", "null").transform(texts(good)).collectAsList();
    assertThat(nulls.get(0).schema().fieldNames()).doesNotContain("error");
    for (Row r : nulls) {
      assertThat(r.isNullAt(2)).isEqualTo(r.getInt(0) >= n);
    }
  }

  @Test
  void idsOutsideTheVocabularyAndWrongWidthsAreRowErrorsToo() {
    int[][] ids = {{1, 2, 3}, {5, 327, 4}, {-1}, {7, 8}};
    TensorParallelModel m = TensorParallelModel.fromDirectory(GPT2.dir().toString()).setInputCol("ids").setTpSize(2)
        .setTask("score").setConf("spark.tp.on-error", "column");
    Map<Integer, Row> by = new HashMap<>();
    for (Row r : m.transform(HfSparkTest.idsFrame(ids, false)).collectAsList()) {
      by.put(r.getInt(0), r);
    }
    assertThat(by.get(0).isNullAt(2)).isFalse();
    assertThat(by.get(3).isNullAt(2)).isFalse();
    assertThat(by.get(1).isNullAt(2)).isTrue();
    assertThat(by.get(1).getString(3)).contains("column 'ids'").contains("327");
    assertThat(by.get(2).getString(3)).contains("column 'ids'").contains("-1");
    double alone = TensorParallelModel.fromDirectory(GPT2.dir().toString()).setInputCol("ids").setTask("score")
        .transform(HfSparkTest.idsFrame(new int[][] {{1, 2, 3}}, false)).collectAsList().get(0).getDouble(2);
    assertThat(by.get(0).getDouble(2)).isCloseTo(alone, org.assertj.core.data.Offset.offset(1e-5));

    // a layer-list model: a row of the wrong width
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      Float[] v = new Float[i == 1 ? 49 : 50];
      Arrays.fill(v, 0.5f + i);
      rows.add(RowFactory.create(i, v));
    }
    Dataset<Row> df = spark.createDataFrame(rows, new StructType().add("id", DataTypes.IntegerType)
        .add("features", DataTypes.createArrayType(DataTypes.FloatType, false)));
    List<Row> out = new TensorParallelModel(Reference.mlp(new java.util.Random(), 50, 64, 7).model()).setTpSize(2).setConf("spark.tp.on-error", "column")
        .transform(df).orderBy("id").collectAsList();
    assertThat(out.get(1).isNullAt(2)).isTrue();
    assertThat(out.get(1).getString(3)).startsWith("column 'features' ").contains("49");
    assertThat(out.get(0).isNullAt(2)).isFalse();
    assertThat(out.get(2).isNullAt(3)).isTrue();
  }

  @Test
  void failNamesTheUsersTextColumnNotTheTokenIds() {
    assertThatThrownBy(() -> generator().transform(texts(goodTexts())).collect())
        .hasMessageContaining("Column 'text': row ")
        .hasMessageNotContaining("__spark_tp_token_ids");
    assertThatThrownBy(() -> generator().setConf("spark.tp.on-error", "column").transform(
        texts(goodTexts()).withColumnRenamed("id", "error")))
        .hasMessage("spark.tp.on-error=column writes the column 'error', which the input already has; rename or drop"
            + " it");
  }

  @Test
  void aDeterministicFailureInTheRanksFailsOnceNotOncePerStageRetry() throws Exception {
    java.util.concurrent.atomic.AtomicInteger retried = new java.util.concurrent.atomic.AtomicInteger();
    org.apache.spark.scheduler.SparkListener count = new org.apache.spark.scheduler.SparkListener() {
      @Override
      public void onTaskStart(org.apache.spark.scheduler.SparkListenerTaskStart start) {
        if (start.stageAttemptId() > 0) {
          retried.incrementAndGet();
        }
      }
    };
    spark.sparkContext().addSparkListener(count);
    try {
      // a KV cache budget no row fits: found by every rank, the same in every attempt
      TensorParallelModel m = generator().setConf("spark.tp.kv-cache.max-bytes", "1k");
      assertThatThrownBy(() -> m.transform(texts(goodTexts()).where("text IS NOT NULL AND length(text) BETWEEN 1 AND"
          + " 40")).collect())
          .hasMessageContaining("spark-tp: a deterministic failure (not retried): The KV cache budget"
              + " spark.tp.kv-cache.max-bytes=1024 is too small for ");
      spark.sparkContext().listenerBus().waitUntilEmpty(20_000);
      assertThat(retried.get()).as("tasks of retried stage attempts").isZero();
    } finally {
      spark.sparkContext().removeSparkListener(count);
    }
  }
}
