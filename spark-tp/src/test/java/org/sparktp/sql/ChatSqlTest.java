package org.sparktp.sql;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.model.hf.ChatMessage;
import org.sparktp.model.hf.ChatTemplate;
import org.sparktp.spark.TensorParallelModel;
import org.sparktp.testing.HfFixtures;

/**
 * Conversations as input: {@code tp_chat_template} in SQL renders a messages column (from JSON, fields in JSON's
 * order) with the model's chat template, equal to the hand-checked prompt (the same as jinja2's); a template's
 * {@code raise_exception} fails the query naming the model and its message; and a messages column given to
 * {@code transform} (task generate, tp 2) generates what the rendered prompts given as text generate. Chat template
 * kwargs (a JSON object: a thinking switch, a list) reach the template from {@code tp_chat_template},
 * {@code tp_generate}'s options and {@code setChatTemplateKwargs}; JSON that is not an object fails at analysis.
 */
class ChatSqlTest extends SqlTestBase {
  static final String TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}"
      + "{{ raise_exception('Unsupported role ' ~ m.role) }}{% endif %}[{{ m.role|upper }}] {{ m.content.strip() }}"
      + "{{ eos_token if m.role == 'assistant' else '' }}\n{% endfor %}{% if add_generation_prompt %}[ASSISTANT]"
      + "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}{% endif %}"
      + "{% if tags is defined %}{% for t in tags %}<{{ t }}>{% endfor %}{% endif %}";
  /** Chat template kwargs the template above reads: a thinking switch and a list. */
  static final String KWARGS = "{\"enable_thinking\": false, \"tags\": [\"a\", 7]}";

  static SparkSession spark;
  static String dir;
  @TempDir
  static Path tmp;

  @BeforeAll
  static void start() throws Exception {
    spark = session("spark-tp-chat-tests");
    Path d = HfFixtures.copy("mistral", tmp);
    ObjectMapper json = new ObjectMapper();
    ObjectNode cfg = (ObjectNode) json.readTree(d.resolve("tokenizer_config.json").toFile());
    cfg.put("chat_template", TEMPLATE);
    json.writeValue(d.resolve("tokenizer_config.json").toFile(), cfg);
    dir = d.toString();
    spark.conf().set("spark.tp.models.chat", dir);
    Path lines = tmp.resolve("conversations.json");
    Files.writeString(lines, """
        {"id": 1, "messages": [{"role": "user", "content": " Hi there "}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Go"}]}
        {"id": 2, "messages": [{"content": "Why?", "role": "user"}]}
        """);
    spark.read().json(lines.toString()).createOrReplaceTempView("conv");
  }

  @AfterAll
  static void stop() {
    stopAnySession(); // the default session is this class's
  }

  @Test
  void tpChatTemplateRendersAMessagesColumnFromJson() {
    List<Row> rows = spark.sql("SELECT id, tp_chat_template('chat', messages) AS p, "
        + "tp_chat_template(model => 'chat', messages => messages, add_generation_prompt => false) AS q "
        + "FROM conv ORDER BY id").collectAsList();
    assertThat(spark.table("conv").schema().apply("messages").dataType().simpleString())
        .isEqualTo("array<struct<content:string,role:string>>");
    assertThat(rows.get(0).getString(1)).isEqualTo("<s>[USER] Hi there\n[ASSISTANT] Hello</s>\n[USER] Go\n[ASSISTANT]");
    assertThat(rows.get(0).getString(2)).isEqualTo("<s>[USER] Hi there\n[ASSISTANT] Hello</s>\n[USER] Go\n");
    assertThat(rows.get(1).getString(1)).isEqualTo("<s>[USER] Why?\n[ASSISTANT]");
  }

  @Test
  void chatTemplateKwargsReachTheTemplateFromSql() {
    List<Row> rows = spark.sql("SELECT id, tp_chat_template('chat', messages, true, '" + KWARGS + "') AS p, "
        + "tp_chat_template('chat', messages, add_generation_prompt => false, chat_template_kwargs => '" + KWARGS
        + "') AS q, tp_chat_template('chat', messages, chat_template_kwargs => '{\"enable_thinking\": true}') AS r "
        + "FROM conv ORDER BY id").collectAsList();
    assertThat(rows.get(0).getString(1)).isEqualTo(
        "<s>[USER] Hi there\n[ASSISTANT] Hello</s>\n[USER] Go\n[ASSISTANT]<think></think><a><7>");
    assertThat(rows.get(0).getString(2)).isEqualTo("<s>[USER] Hi there\n[ASSISTANT] Hello</s>\n[USER] Go\n<a><7>");
    assertThat(rows.get(1).getString(1)).isEqualTo("<s>[USER] Why?\n[ASSISTANT]<think></think><a><7>");
    assertThat(rows.get(1).getString(3)).isEqualTo("<s>[USER] Why?\n[ASSISTANT]");
    assertThatThrownBy(() -> spark.sql("SELECT tp_chat_template('chat', messages, true, '{enable_thinking: false}')"
        + " FROM conv")).hasMessageContaining("tp_chat_template argument 'chat_template_kwargs' is not valid JSON (")
        .hasMessageContaining("; give a JSON object of template variables such as '{\"enable_thinking\": false}'");
    assertThatThrownBy(() -> spark.sql("SELECT tp_generate('chat', messages, map('chat_template_kwargs', '[1]'))"
        + " FROM conv")).hasMessageContaining("tp_generate: option 'chat_template_kwargs' must be a JSON object, got"
        + " a JSON array; give a JSON object of template variables");
    assertThatThrownBy(() -> TensorParallelModel.fromDirectory(dir).setChatTemplateKwargs("false"))
        .hasMessage("chatTemplateKwargs must be a JSON object, got a JSON boolean; give a JSON object of template"
            + " variables such as '{\"enable_thinking\": false}'");
  }

  @Test
  void chatTemplateKwargsReachTheTemplateFromTpGenerateAndTheDataFrameParam() {
    // the prompt the kwargs make, written by hand: generating from it as text is the reference (row 2: row 1's
    // prompt with the kwargs is longer than the test model's context)
    spark.createDataFrame(List.of(
        org.apache.spark.sql.RowFactory.create(2L, "<s>[USER] Why?\n[ASSISTANT]<think></think><a><7>")),
        new org.apache.spark.sql.types.StructType().add("id", DataTypes.LongType).add("prompt", DataTypes.StringType))
        .createOrReplaceTempView("kw_prompts");
    List<Row> fromText = spark.sql("SELECT id, tp_generate('chat', prompt, map('max_new_tokens', '3')) AS r "
        + "FROM kw_prompts ORDER BY id").collectAsList();
    List<Row> fromMessages = spark.sql("SELECT id, tp_generate('chat', messages, map('max_new_tokens', '3', "
        + "'chat_template_kwargs', '" + KWARGS + "')) AS r FROM conv WHERE id = 2").collectAsList();
    assertThat(fromMessages).hasSize(1).isEqualTo(fromText);
    assertThat(fromText.get(0).getStruct(1).<Integer>getAs("prompt_tokens")).as("the kwargs' tokens are in the prompt")
        .isGreaterThan(spark.sql("SELECT tp_generate('chat', messages, map('max_new_tokens', '1')).prompt_tokens FROM conv"
            + " WHERE id = 2").first().getInt(0));
    List<Row> fromParam = TensorParallelModel.fromDirectory(dir).setTask("generate").setMaxNewTokens(3)
        .setInputCol("messages").setChatTemplateKwargs(java.util.Map.of("enable_thinking", false, "tags",
            List.of("a", 7))).transform(spark.table("conv").where("id = 2"))
        .select("id", TensorParallelModel.GENERATED_IDS).collectAsList();
    assertThat(fromParam).hasSize(1);
    assertThat(fromParam.get(0).getList(1)).isEqualTo(fromText.get(0).getStruct(1).getList(1));
  }

  @Test
  void aTemplateErrorOrAModelWithoutATemplateIsOneClearError() {
    assertThatThrownBy(() -> spark.sql("SELECT tp_chat_template('chat', array(named_struct('role', 'robot', "
        + "'content', 'beep')))").collect()).hasStackTraceContaining("ChatTemplateException: The chat template of ")
        .hasStackTraceContaining("mistral raised: Unsupported role robot");
    String gpt2 = HfFixtures.dir("gpt2").toString();
    assertThatThrownBy(() -> spark.sql("SELECT tp_chat_template('" + gpt2 + "', messages) FROM conv"))
        .hasMessageContaining("tp_chat_template: The model in ").hasMessageContaining(gpt2 + " has no chat template");
    assertThatThrownBy(() -> spark.sql("SELECT tp_chat_template('chat', 'hello')"))
        .hasMessageContaining("argument 'messages' must be array<struct<role: string, content: string>>, got string");
  }

  @Test
  void transformTakesAMessagesColumnAsTheRenderedPrompts() throws Exception {
    Dataset<Row> conv = spark.table("conv").orderBy("id");
    ChatTemplate t = ChatTemplate.load(new org.apache.hadoop.fs.Path(dir), new org.apache.hadoop.conf.Configuration());
    List<Row> texts = new ArrayList<>();
    for (Row r : conv.collectAsList()) {
      List<ChatMessage> ms = new ArrayList<>();
      for (Row m : r.<Row>getList(r.fieldIndex("messages"))) {
        ms.add(new ChatMessage(m.getAs("role"), m.getAs("content")));
      }
      texts.add(org.apache.spark.sql.RowFactory.create(r.<Long>getAs("id"), t.render(ms, true, null)));
    }
    Dataset<Row> asText = spark.createDataFrame(texts, new org.apache.spark.sql.types.StructType()
        .add("id", DataTypes.LongType).add("prompt", DataTypes.StringType));
    TensorParallelModel m = TensorParallelModel.fromDirectory(dir).setTpSize(2).setTask("generate")
        .setMaxNewTokens(4);
    List<Row> fromMessages = m.copy(new org.apache.spark.ml.param.ParamMap()).setInputCol("messages")
        .transform(conv).orderBy("id").select("id", TensorParallelModel.GENERATED_IDS).collectAsList();
    List<Row> fromText = m.copy(new org.apache.spark.ml.param.ParamMap()).setInputCol("prompt")
        .transform(asText).orderBy("id").select("id", TensorParallelModel.GENERATED_IDS).collectAsList();
    assertThat(fromMessages).hasSize(2).isEqualTo(fromText);
    assertThat(fromMessages.get(0).getList(1)).hasSize(4);
  }

  @Test
  void withOnErrorColumnARowWhoseTemplateFailsGetsItsCauseAndTheOthersRun() {
    Dataset<Row> conv = spark.table("conv").unionByName(spark.read().json(spark.createDataset(List.of(
        "{\"id\": 3, \"messages\": [{\"role\": \"robot\", \"content\": \"beep\"}]}"),
        org.apache.spark.sql.Encoders.STRING())));
    TensorParallelModel m = TensorParallelModel.fromDirectory(dir).setInputCol("messages").setTpSize(2)
        .setTask("generate").setMaxNewTokens(4);
    List<Row> alone = m.copy(new org.apache.spark.ml.param.ParamMap()).transform(spark.table("conv")).orderBy("id")
        .select("id", TensorParallelModel.GENERATED_IDS).collectAsList();
    TensorParallelModel col = m.copy(new org.apache.spark.ml.param.ParamMap()).setConf("spark.tp.on-error", "column");
    List<Row> rows = col.transform(conv).orderBy("id").select("id", TensorParallelModel.GENERATED_IDS, "error")
        .collectAsList();
    assertThat(rows).hasSize(3);
    assertThat(rows.subList(0, 2).stream().map(r -> org.apache.spark.sql.RowFactory.create(r.get(0), r.get(1))))
        .containsExactlyElementsOf(alone);
    assertThat(rows.get(0).isNullAt(2)).isTrue();
    assertThat(rows.get(1).isNullAt(2)).isTrue();
    assertThat(rows.get(2).isNullAt(1)).isTrue();
    assertThat(rows.get(2).getString(2)).startsWith("column 'messages' could not be rendered with the chat template:"
        + " The chat template of ").endsWith("raised: Unsupported role robot");
    assertThat(col.lastMetrics().rowErrors()).isEqualTo(1);
    // the default (fail) still fails the job, naming the cause
    assertThatThrownBy(() -> m.copy(new org.apache.spark.ml.param.ParamMap()).transform(conv).collect())
        .hasStackTraceContaining("Unsupported role robot");
  }
}
