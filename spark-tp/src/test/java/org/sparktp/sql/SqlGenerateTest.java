package org.sparktp.sql;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.AnalysisException;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.sparktp.spark.TensorParallelModel;
import org.sparktp.testing.HfFixtures;

/**
 * {@code tp_generate} and {@code tp_score} on the Hugging Face fixtures (local[4]): greedy completions equal the
 * float64 reference's greedy tokens and the DataFrame API's output of the same model; text is tokenized as HF's
 * tokenizer did when the fixture was made (special tokens in the text included); sampled rows equal the DataFrame
 * API's with the same options; scores equal the reference's.
 */
class SqlGenerateTest extends SqlTestBase {
  static SparkSession spark;
  static HfFixtures.Fixture gpt2;

  @BeforeAll
  static void start() {
    spark = session("spark-tp-sql-generate-tests");
    gpt2 = HfFixtures.load("gpt2");
    spark.conf().set("spark.tp.models.g", gpt2.dir().toString());
    spark.conf().set("spark.tp.models.mistral", HfFixtures.dir("mistral").toString());
  }

  @AfterAll
  static void stop() {
    if (spark != null) {
      spark.stop();
    }
    stopAnySession();
  }

  /** A view (id int, ids array&lt;int&gt;, text string) of {@code ids} and {@code texts} (either may be null). */
  static Dataset<Row> table(List<int[]> ids, List<String> texts, int n) {
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < n; i++) {
      Object[] a = null;
      if (ids != null && ids.get(i) != null) {
        a = new Object[ids.get(i).length];
        for (int j = 0; j < a.length; j++) {
          a[j] = ids.get(i)[j];
        }
      }
      rows.add(RowFactory.create(i, a, texts == null ? null : texts.get(i)));
    }
    StructType schema = new StructType().add("id", DataTypes.IntegerType, false)
        .add("ids", DataTypes.createArrayType(DataTypes.IntegerType, false), true)
        .add("text", DataTypes.StringType, true);
    return spark.createDataFrame(rows, schema).repartition(3);
  }

  static int[] ints(List<Integer> l) {
    return l.stream().mapToInt(Integer::intValue).toArray();
  }

  static Map<Integer, Row> byId(List<Row> rows, String col) {
    Map<Integer, Row> out = new HashMap<>();
    for (Row r : rows) {
      out.put(r.getInt(0), r.getStruct(r.fieldIndex(col)));
    }
    return out;
  }

  @Test
  void greedyCompletionsOfIdsEqualTheReferenceAndTheDataFrameApi() {
    int n = gpt2.greedy().size();
    List<int[]> prompts = new ArrayList<>();
    for (HfFixtures.Greedy g : gpt2.greedy()) {
      prompts.add(g.prompt());
    }
    table(prompts, null, n).createOrReplaceTempView("prompts");
    Dataset<Row> sql = spark.sql("SELECT id, tp_generate('g', ids, map('max_new_tokens', '6', 'tp', '2')) AS r"
        + " FROM prompts");
    assertThat(sql.schema().apply("r").dataType().simpleString())
        .isEqualTo("struct<text:string,ids:array<int>,finish_reason:string,prompt_tokens:int,completion_tokens:int>");
    Map<Integer, Row> got = byId(sql.collectAsList(), "r");
    List<Row> api = TensorParallelModel.fromDirectory(gpt2.dir().toString()).setInputCol("ids").setTpSize(2)
        .setTask("generate").setMaxNewTokens(6).transform(table(prompts, null, n)).collectAsList();
    assertThat(got).hasSize(n);
    for (Row a : api) {
      int i = a.getInt(0);
      Row r = got.get(i);
      assertThat(ints(r.getList(1))).as("row %d", i).containsExactly(gpt2.greedy().get(i).tokens());
      assertThat(r.getList(1)).isEqualTo(a.getList(a.fieldIndex("generated_ids")));
      assertThat(r.getString(0)).isEqualTo(a.getString(a.fieldIndex("generated_text")));
      assertThat(r.getString(2)).isEqualTo("length");
      assertThat(r.getInt(3)).isEqualTo(prompts.get(i).length);
      assertThat(r.getInt(4)).isEqualTo(6);
    }
  }

  @Test
  void textIsTokenizedAsHuggingFaceDidSpecialTokensIncluded() {
    // the fixture's texts with room for 4 new tokens (n_positions 32); one holds <|endoftext|>
    List<String> texts = new ArrayList<>();
    List<int[]> ids = new ArrayList<>();
    for (int i = 0; i < gpt2.texts().size(); i++) {
      if (gpt2.textIds().get(i).length <= 28) {
        texts.add(gpt2.texts().get(i));
        ids.add(gpt2.textIds().get(i));
      }
    }
    assertThat(texts).contains("a<|endoftext|>b");
    int n = texts.size();
    table(ids, texts, n).createOrReplaceTempView("texts");
    Map<Integer, Row> got = byId(spark.sql("SELECT id, tp_generate(model => 'g', input => text, max_new_tokens => 4,"
        + " tp => 2) AS r FROM texts").collectAsList(), "r");
    // the same model on HF's ids (DataFrame API), and on the text (DataFrame API)
    List<Row> onIds = TensorParallelModel.fromDirectory(gpt2.dir().toString()).setInputCol("ids").setTpSize(1)
        .setTask("generate").setMaxNewTokens(4).transform(table(ids, texts, n)).collectAsList();
    List<Row> onText = TensorParallelModel.fromDirectory(gpt2.dir().toString()).setInputCol("text").setTpSize(2)
        .setTask("generate").setMaxNewTokens(4).transform(table(ids, texts, n)).collectAsList();
    Map<Integer, List<Object>> text = new HashMap<>();
    for (Row a : onText) {
      text.put(a.getInt(0), a.getList(a.fieldIndex("generated_ids")));
    }
    for (Row a : onIds) {
      int i = a.getInt(0);
      Row r = got.get(i);
      assertThat(r.getInt(3)).as("prompt tokens of %s", texts.get(i)).isEqualTo(ids.get(i).length);
      assertThat(r.getList(1)).as("row %d", i).isEqualTo(a.getList(a.fieldIndex("generated_ids")))
          .isEqualTo(text.get(i));
      assertThat(r.getString(0)).isEqualTo(a.getString(a.fieldIndex("generated_text")));
    }
  }

  @Test
  void aTextThatStartsWithTheBosGetsOneBos() {
    // mistral's post-processor adds <s> (id 1): "<s>Hello world" is one <s>, then the text
    List<String> texts = List.of("Hello world", "<s>Hello world", "<s><s>Hello world");
    table(null, texts, 3).createOrReplaceTempView("bos");
    Map<Integer, Row> got = byId(spark.sql("SELECT id, tp_generate('mistral', text, map('max_new_tokens', '2')) AS r"
        + " FROM bos").collectAsList(), "r");
    int plain = got.get(0).getInt(3);
    assertThat(got.get(1).getInt(3)).isBetween(plain, plain + 1); // one <s>; the text's pieces may differ after it
    assertThat(got.get(2).getInt(3)).isEqualTo(got.get(1).getInt(3) + 1); // a second <s> written twice is kept
  }

  @Test
  void sampledOptionsAsNamedArgumentsEqualTheDataFrameApi() {
    List<int[]> prompts = List.of(new int[] {40, 41, 42}, new int[] {7}, new int[] {300, 2, 9, 100, 101});
    table(prompts, null, 3).createOrReplaceTempView("sampled");
    Map<Integer, Row> got = byId(spark.sql("SELECT id, tp_generate(model => 'g', input => ids, max_new_tokens => 5,"
        + " temperature => 0.9, top_k => 12, top_p => 0.95, seed => 7, repetition_penalty => 1.2, stop_ids => '300',"
        + " tp => 2) AS r FROM sampled").collectAsList(), "r");
    List<Row> api = TensorParallelModel.fromDirectory(gpt2.dir().toString()).setInputCol("ids").setTpSize(1)
        .setTask("generate").setMaxNewTokens(5).setTemperature(0.9).setTopK(12).setTopP(0.95).setSeed(7)
        .setRepetitionPenalty(1.2).setStopIds(300).transform(table(prompts, null, 3)).collectAsList();
    for (Row a : api) {
      Row r = got.get(a.getInt(0));
      assertThat(r.getList(1)).isEqualTo(a.getList(a.fieldIndex("generated_ids")));
      assertThat(r.getString(2)).isEqualTo(a.getString(a.fieldIndex("finish_reason")));
    }
  }

  @Test
  void scoreEqualsTheReference() {
    List<int[]> ids = new ArrayList<>();
    for (HfFixtures.Row r : gpt2.rows()) {
      ids.add(r.ids());
    }
    int n = ids.size();
    table(ids, null, n).createOrReplaceTempView("scored");
    Dataset<Row> sql = spark.sql("SELECT id, tp_score('g', ids, map('tp', '2')) AS s FROM scored");
    assertThat(sql.schema().apply("s").dataType()).isEqualTo(DataTypes.DoubleType);
    for (Row r : sql.collectAsList()) {
      double want = gpt2.rows().get(r.getInt(0)).score();
      assertThat(r.getDouble(1)).as("row %d", r.getInt(0)).isCloseTo(want, org.assertj.core.data.Offset.offset(
          1e-4 * Math.max(1, Math.abs(want))));
    }
  }

  @Test
  void onErrorColumnAddsTheCauseToTheResultAndRunsTheOtherRows() {
    String tooLong = String.join(" ", java.util.Collections.nCopies(20, "Spark runs transformers"));
    table(List.of(new int[] {40, 41}, new int[] {5, 400}, new int[] {7}), java.util.Arrays.asList("Hello world",
        null, tooLong), 3).createOrReplaceTempView("bad");
    Dataset<Row> q = spark.sql("SELECT id, tp_generate('g', text, map('max_new_tokens', '4', 'on-error', 'column'))"
        + " AS r, tp_score('g', ids, map('on-error', 'column')) AS s FROM bad");
    assertThat(q.schema().apply("r").dataType().simpleString()).isEqualTo("struct<text:string,ids:array<int>,"
        + "finish_reason:string,prompt_tokens:int,completion_tokens:int,error:string>");
    assertThat(q.schema().apply("s").dataType().simpleString()).isEqualTo("struct<value:double,error:string>");
    Map<Integer, Row> r = byId(q.collectAsList(), "r");
    Map<Integer, Row> s = byId(q.collectAsList(), "s");
    assertThat(r.get(0).isNullAt(5)).isTrue();
    assertThat(r.get(0).getInt(4)).isEqualTo(4);
    assertThat(r.get(1).getString(5)).isEqualTo("column 'text' is null");
    assertThat(r.get(1).isNullAt(1)).isTrue();
    assertThat(r.get(2).getString(5)).startsWith("column 'text' has ").contains("more than 28");
    assertThat(s.get(0).isNullAt(1)).isTrue();
    assertThat(s.get(0).isNullAt(0)).isFalse();
    assertThat(s.get(1).isNullAt(0)).isTrue();
    assertThat(s.get(1).getString(1)).startsWith("column 'ids' ").contains("400");
  }

  @Test
  void rowErrorsNameTheQuerysColumn() {
    String tooLong = String.join(" ", java.util.Collections.nCopies(20, "Spark runs transformers"));
    table(null, List.of(tooLong), 1).createOrReplaceTempView("long");
    assertThatThrownBy(() -> spark.sql("SELECT tp_generate('g', text, map('max_new_tokens', '4')) FROM long")
        .collect()).hasMessageContaining("Column 'text': row 0 of input partition ");
  }

  @Test
  void aMessagesColumnIsRenderedWithTheChatTemplateThenGenerated(@org.junit.jupiter.api.io.TempDir java.nio.file.Path tmp)
      throws Exception {
    java.nio.file.Path d = HfFixtures.copy("gpt2", tmp);
    com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
    com.fasterxml.jackson.databind.node.ObjectNode cfg = (com.fasterxml.jackson.databind.node.ObjectNode) json
        .readTree(d.resolve("tokenizer_config.json").toFile());
    cfg.put("chat_template", "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}"
        + "{% if add_generation_prompt %}assistant:{% endif %}");
    json.writeValue(d.resolve("tokenizer_config.json").toFile(), cfg);
    // fields in JSON's order (content before role), as a JSON reader infers them
    spark.read().json(spark.createDataset(List.of(
        "{\"id\": 0, \"messages\": [{\"role\": \"user\", \"content\": \"Hello world\"}]}",
        "{\"id\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\","
            + " \"content\": \"b\"}]}"), org.apache.spark.sql.Encoders.STRING()))
        .createOrReplaceTempView("chats");
    String model = d.toString();
    Map<Integer, Row> fromMessages = byId(spark.sql("SELECT CAST(id AS INT) AS id, tp_generate('" + model
        + "', messages, map('max_new_tokens', '3')) AS r FROM chats").collectAsList(), "r");
    List<String> rendered = List.of("user: Hello world\nassistant:", "user: a\nassistant: b\nassistant:");
    table(null, rendered, 2).createOrReplaceTempView("rendered");
    Map<Integer, Row> fromText = byId(spark.sql("SELECT id, tp_generate('" + model + "', text, map('max_new_tokens',"
        + " '3')) AS r FROM rendered").collectAsList(), "r");
    for (int i = 0; i < 2; i++) {
      assertThat(fromMessages.get(i).getInt(3)).as("prompt tokens of chat %d", i).isEqualTo(fromText.get(i).getInt(3));
      assertThat(fromMessages.get(i).getList(1)).isEqualTo(fromText.get(i).getList(1));
    }
    assertError("SELECT tp_generate('g', array(named_struct('role', 'user', 'content', 'hi')))",
        "tp_generate argument 'input' (array(named_struct(");
  }

  @Test
  void misuseIsAnAnalysisErrorPointingAtWhatToUse() {
    table(List.of(new int[] {1, 2}), List.of("hi"), 1).createOrReplaceTempView("one");
    assertError("SELECT tp_predict('g', ids, map('task', 'generate')) FROM one",
        "tp_predict: task 'generate' returns text, ids and a finish reason per row, not one array; use"
            + " tp_generate(model, input [, options])");
    assertError("SELECT tp_generate('g', ids, map('task', 'embed')) FROM one",
        "tp_generate runs task 'generate', but the options ask for task 'embed'");
    assertError("SELECT tp_generate('g', id) FROM one",
        "tp_generate argument 'input' (one.id) has type int; tp_generate takes string (a prompt, tokenized with the"
            + " model's tokenizer.json), array<int> or array<long> (token ids)");
    assertError("SELECT tp_generate('g', ids, map('tp', '8')) FROM one",
        "tp_generate: A tensor-parallel group of tpSize 8 needs 8 task slots at once, but the cluster has 4");
    assertError("SELECT tp_generate('g', ids, map('temperature', '-1')) FROM one",
        "option 'temperature' has the invalid value '-1'");
  }

  private static void assertError(String sql, String part) {
    assertThatThrownBy(() -> spark.sql(sql).collect()).isInstanceOf(AnalysisException.class)
        .hasMessageContaining(part);
  }
}
