package org.sparktp.model.hf;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.function.UnaryOperator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.ops.Slice;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.Plan;

/** Loading Hugging Face directories: per-rank reads, tied weights, and every error before any task runs. */
class HfModelTest {
  static final String DIR = "src/test/resources/hf/";
  @TempDir
  Path tmp;

  /** A copy of a fixture with its config.json edited. */
  Path copy(String name, UnaryOperator<String> editConfig) throws IOException {
    Path d = tmp.resolve(name);
    Files.createDirectories(d);
    for (File f : new File(DIR + name).listFiles()) {
      Files.copy(f.toPath(), d.resolve(f.getName()));
    }
    Path c = d.resolve("config.json");
    Files.writeString(c, editConfig.apply(Files.readString(c, StandardCharsets.UTF_8)));
    return d;
  }

  /**
   * The checkpoint's weight dtype (what auto precision resolves against): the safetensors dtype of the 2-D
   * tensors, as tools/make_hf_fixtures.py stored them, whatever config.json's torch_dtype says (it decides only when
   * the 2-D tensors disagree).
   */
  @Test
  void weightDtypeIsTheDtypeTheCheckpointStoresItsMatricesIn() throws Exception {
    for (String name : org.sparktp.testing.HfFixtures.NAMES) {
      try (HfModel hf = HfModel.open(DIR + name)) {
        assertThat(hf.weightDtype().safetensorsName()).as(name)
            .isEqualTo(org.sparktp.testing.HfFixtures.load(name).dtype());
      }
    }
    // gpt2 (all F32 on disk) claiming torch_dtype bfloat16: the files win
    Path d = copy("gpt2", c -> c.replace("\"torch_dtype\": \"float32\"", "\"torch_dtype\": \"bfloat16\""));
    try (HfModel f32 = HfModel.open(d.toString())) {
      assertThat(f32.weightDtype()).as("all F32 on disk, whatever torch_dtype says")
          .isEqualTo(org.sparktp.tensor.DType.F32);
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 4})
  void eachRankReadsOnlyItsSlicesOfTheCheckpoint(int p) throws Exception {
    for (String name : new String[] {"gpt2", "llama"}) {
      try (HfModel hf = HfModel.open(DIR + name)) {
        Plan plan = TransformerGraph.plan(hf.model(), p, Task.LOGITS, null, false, false);
        long bytesPerValue = name.equals("llama") ? 2 : 4; // llama is BF16 on disk
        long whole = 0;
        for (Slice s : TransformerGraph.plan(hf.model(), 1, Task.LOGITS, null, false, false).slices(0).values()) {
          whole += s.elements() * bytesPerValue;
        }
        for (int r = 0; r < p; r++) {
          long before = hf.bytesRead();
          RankWeights w = plan.shard(hf.weightSource(), r);
          long read = hf.bytesRead() - before;
          long values = 0;
          for (Slice s : plan.slices(r).values()) {
            values += s.elements();
            assertThat(w.get(s.id()).data()).hasSize((int) s.elements());
          }
          assertThat(read).as("%s: bytes rank %d of %d reads", name, r, p)
              .isGreaterThanOrEqualTo(values * bytesPerValue);
          if (p == 1) {
            assertThat(read).isEqualTo(whole);
          } else if (name.equals("llama")) {
            // its slices (plus gaps under 4 KiB merged between the rows of a column read): less than the whole.
            // (gpt2's Conv1D rows are 576 bytes here, so each column read coalesces into whole rows; only the
            // lower bound holds for it)
            assertThat(read).isLessThan(whole);
          }
        }
      }
    }
  }

  @Test
  void aTiedHeadIsOneTensorReadOnce() throws Exception {
    try (HfModel hf = HfModel.open(DIR + "gpt2")) {
      assertThat(hf.model().lmHead()).isEqualTo("transformer.wte.weight");
      Plan plan = TransformerGraph.plan(hf.model(), 2, Task.LOGITS, null, false, false);
      long wte = plan.slices(0).keySet().stream().filter(k -> k.startsWith("transformer.wte.weight")).count();
      assertThat(wte).isEqualTo(1);
      assertThat(plan.explain()).contains("embedding transformer.wte.weight").contains("lm_head transformer.wte.weight");
    }
    try (HfModel hf = HfModel.open(DIR + "llama")) {
      assertThat(hf.model().lmHead()).isEqualTo("lm_head.weight");
    }
  }

  @Test
  void explainShowsHeadsAndKvReplicasPerRank() throws Exception {
    try (HfModel hf = HfModel.open(DIR + "llama")) {
      // 8 query heads, 2 KV heads on 3 ranks: 3, 3, 2 query heads; rank 1 (q 3-5) needs both KV heads
      String e = TransformerGraph.plan(hf.model(), 3, null, null, false, false).explain();
      assertThat(e).contains("causal attention layers.0.self_attn [8 heads, 2 kv x 8] rope(llama3)")
          .contains("r0: q 0-2 kv 0-0 (1 replica), r1: q 3-5 kv 0-1 (2 replicas), r2: q 6-7 kv 1-1 (1 replica)");
    }
    try (HfModel hf = HfModel.open(DIR + "bert")) {
      String e = TransformerGraph.plan(hf.model(), 4, null, null, false, false).explain();
      assertThat(e).contains("bidirectional attention layer.0.attention [6 heads x 6]")
          .contains("r0: q 0-1 kv 0-1, r1: q 2-3 kv 2-3, r2: q 4-4 kv 4-4, r3: q 5-5 kv 5-5");
    }
  }

  @Test
  void anUnsupportedModelTypeIsRefused() throws Exception {
    Path d = copy("bert", c -> c.replace("\"model_type\": \"bert\"", "\"model_type\": \"t5\""));
    assertThatThrownBy(() -> HfModel.open(d.toString()))
        .hasMessageContaining("config.json: unsupported model_type 't5'; spark-tp loads bert, roberta");
  }

  @Test
  void aMissingTensorNamesTheTensorAndTheConfigKey() throws Exception {
    Path d = copy("bert", c -> c.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3"));
    assertThatThrownBy(() -> HfModel.open(d.toString()))
        .hasMessageContaining("Missing tensor 'bert.encoder.layer.2.attention.self.query.weight' in ")
        .hasMessageContaining("model_type bert");
  }

  @Test
  void aShapeThatDisagreesWithTheConfigNamesFileTensorAndKey() throws Exception {
    Path d = copy("llama", c -> c.replace("\"intermediate_size\": 100", "\"intermediate_size\": 96"));
    assertThatThrownBy(() -> HfModel.open(d.toString()))
        .hasMessageContaining("Cannot load 'model.layers.0.mlp.gate_proj.weight' from ")
        .hasMessageContaining("model-0000")
        .hasMessageContaining("expected [96, 64] (intermediate_size 96 x hidden_size 64), file has [100, 64]");
  }

  @Test
  void anUntiedHeadMustBeInTheCheckpoint() throws Exception {
    Path d = copy("qwen2", c -> c.replace("\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false"));
    assertThatThrownBy(() -> HfModel.open(d.toString()))
        .hasMessageContaining("Missing tensor 'lm_head.weight'").hasMessageContaining("tie_word_embeddings is false");
  }

  @Test
  void badRowsAreErrorsNamingTheRow() throws Exception {
    try (HfModel hf = HfModel.open(DIR + "gpt2")) {
      Plan plan = TransformerGraph.plan(hf.model(), 1, null, null, false, false);
      int[] ids = new int[40];
      assertThatThrownBy(() -> plan.transformer().checkRow(ids, 0, 40, "Row 7"))
          .hasMessage("Row 7 has 40 tokens, more than the model's max_position_embeddings (32); shorten it or set"
              + " spark.tp.truncate=true");
      assertThatThrownBy(() -> plan.transformer().checkRow(new int[] {1, 327}, 0, 2, "Row 3"))
          .hasMessage("Row 3 has token id 327 at position 1, outside the vocabulary [0, 327)");
      assertThatThrownBy(() -> plan.transformer().checkRow(new int[0], 0, 0, "Row 0"))
          .hasMessage("Row 0 is an empty sequence: every row needs at least one token");
      Plan trunc = TransformerGraph.plan(hf.model(), 1, null, null, false, true);
      assertThat(trunc.transformer().checkRow(ids, 0, 40, "Row 7")).isEqualTo(32);
      assertThatThrownBy(() -> TransformerGraph.plan(hf.model(), 7, null, null, false, false))
          .hasMessageContaining("Cannot split the attention heads of 'h.0.attn' (num_attention_heads) of size 6 "
              + "across p=7 ranks");
    }
    try (HfModel hf = HfModel.open(DIR + "bert")) {
      assertThatThrownBy(() -> TransformerGraph.plan(hf.model(), 1, Task.SCORE, null, false, false))
          .hasMessageContaining("Task 'score' needs a language-model head; this bert model has none: use task embed");
    }
  }

  @Test
  void sparkTpConfigsAreNotTakenForHuggingFace() throws Exception {
    Path d = tmp.resolve("m");
    Files.createDirectories(d);
    Files.writeString(d.resolve("config.json"), "{\"spark_tp\": 1, \"input_dim\": 3, \"layers\": []}");
    org.apache.hadoop.conf.Configuration conf = new org.apache.hadoop.conf.Configuration();
    assertThat(HfModel.isHuggingFace(new org.apache.hadoop.fs.Path(d.toString()), conf)).isFalse();
    assertThat(HfModel.isHuggingFace(new org.apache.hadoop.fs.Path(DIR + "bert"), conf)).isTrue();
  }
}
