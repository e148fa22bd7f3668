package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.testing.HfFixtures;

/**
 * What a new user stumbled on (issue 21 item 7), each with the message that now says what to change: settings found
 * only inside the ranks are checked before the job, setters name their valid range, and text-model input errors
 * mention text.
 */
class NewUserMessagesTest extends SparkTestBase {
  static final String GPT2 = HfFixtures.dir("gpt2").toString();

  static Dataset<Row> prompts() {
    return spark.createDataFrame(List.of(RowFactory.create(0, "Hello world"), RowFactory.create(1, "Spark")),
        new StructType().add("id", DataTypes.IntegerType).add("text", DataTypes.StringType));
  }

  @Test
  void maxNewTokensAsLongAsTheContextFailsBeforeTheJob() {
    TensorParallelModel m = TensorParallelModel.fromDirectory(GPT2).setInputCol("text").setTask("generate")
        .setMaxNewTokens(32);
    // transform itself throws: no job ran
    assertThatThrownBy(() -> m.transform(prompts()))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("maxNewTokens 32 leaves no room for a prompt: the model's context (max_position_embeddings) is"
            + " 32 tokens, prompt included; set maxNewTokens (--max-new-tokens, max_new_tokens) to at most 31");
  }

  @Test
  void settersSayTheValidRange() {
    TensorParallelModel m = TensorParallelModel.fromDirectory(GPT2);
    assertThatThrownBy(() -> m.setTemperature(-1)).isInstanceOf(IllegalArgumentException.class)
        .hasMessage("temperature must be >= 0 (0 = greedy, > 0 samples), got -1.0");
    assertThatThrownBy(() -> m.setTopP(2)).hasMessage("topP must be in (0, 1] (1 = all tokens), got 2.0");
    assertThatThrownBy(() -> m.setMaxNewTokens(0)).hasMessage("maxNewTokens must be >= 1, got 0");
    assertThatThrownBy(() -> m.setTask("bogus"))
        .hasMessage("task must be one of embed, logits, score, generate, got bogus");
    assertThatThrownBy(() -> m.setTpSize(0)).hasMessage("tpSize must be >= 1, got 0");
    assertThat(m.setTemperature(0.5).setTopP(1).setTask(" Generate ").getOrDefault(m.task())).isEqualTo("generate");
  }

  @Test
  void generateRefusesOutputColAndStopIdsOutsideTheVocabulary() {
    assertThatThrownBy(() -> TensorParallelModel.fromDirectory(GPT2).setInputCol("text").setTask("generate")
        .setOutputCol("completion").transform(prompts()))
        .hasMessage("Task generate writes the columns generated_ids, generated_text, finish_reason, not outputCol"
            + " ('completion'): leave outputCol unset and rename those columns after transform if needed");
    assertThatThrownBy(() -> TensorParallelModel.fromDirectory(GPT2).setInputCol("text").setTask("generate")
        .setMaxNewTokens(4).setStopIds(13, 5000).transform(prompts()))
        .hasMessage("stopIds holds 5000, which is not a token id of the model: its vocabulary has ids 0..326");
  }

  @Test
  void aMissingDirectoryIsSaidOnce(@TempDir java.nio.file.Path tmp) {
    String missing = tmp.resolve("no-such-model").toString();
    assertThatThrownBy(() -> TensorParallelModel.fromDirectory(missing))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("Model directory " + missing + " does not exist");
  }

  @Test
  void inputTypeErrorsOfATextModelMentionString() {
    Dataset<Row> df = spark.createDataFrame(List.of(RowFactory.create(0, 1.5)),
        new StructType().add("id", DataTypes.IntegerType).add("x", DataTypes.DoubleType));
    assertThatThrownBy(() -> TensorParallelModel.fromDirectory(GPT2).setInputCol("x").transform(df))
        .hasMessage("Input column 'x' has type double; the model takes string (text, tokenized with the model's"
            + " tokenizer.json), array<int> or array<long> (a list of ids per row)");
  }
}
