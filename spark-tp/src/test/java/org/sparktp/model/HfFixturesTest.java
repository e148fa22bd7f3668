package org.sparktp.model;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeMap;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.testing.HfFixtures;
import org.sparktp.testing.HfFixtures.Fixture;
import org.sparktp.testing.HfFixtures.Row;

/**
 * Keeps the committed Hugging Face fixtures honest: every file is there, the checkpoints hold exactly the
 * tensors HF's modeling code names for the config (names, shapes, dtype; sharded index included), and
 * reference.json agrees with the weights where that can be checked in a line of float64 math (the
 * logits at the last position are the final hidden state times the head; BERT's pooler).
 */
class HfFixturesTest {
  private static final double TOL = 1e-9;

  @ParameterizedTest
  @ValueSource(strings = {"bert", "roberta", "llama", "mistral", "qwen2", "qwen3", "gpt2"})
  void checkpointHoldsExactlyTheHfTensors(String name) throws Exception {
    Fixture f = HfFixtures.load(name);
    Map<String, SafetensorsFile> files = open(f);
    try {
      Map<String, TensorInfo> actual = new TreeMap<>();
      files.values().forEach(file -> actual.putAll(file.tensors()));
      Map<String, long[]> expected = expectedTensors(f);
      assertThat(actual.keySet()).as("tensor names of %s", name).containsExactlyInAnyOrderElementsOf(expected.keySet());
      for (Map.Entry<String, long[]> e : expected.entrySet()) {
        TensorInfo t = actual.get(e.getKey());
        assertThat(t.shape()).as("shape of %s in %s", e.getKey(), name).containsExactly(e.getValue());
        assertThat(t.dtypeName()).as("dtype of %s in %s", e.getKey(), name).isEqualTo(f.dtype());
      }
    } finally {
      for (SafetensorsFile file : files.values()) {
        file.close();
      }
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"bert", "roberta", "llama", "mistral", "qwen2", "qwen3", "gpt2"})
  void referenceIsConsistentWithTheConfigAndWeights(String name) throws Exception {
    Fixture f = HfFixtures.load(name);
    JsonNode c = f.config();
    boolean gpt2 = name.equals("gpt2");
    int hidden = f.configInt(gpt2 ? "n_embd" : "hidden_size");
    int vocab = f.configInt("vocab_size");
    int maxPos = f.configInt(gpt2 ? "n_positions" : "max_position_embeddings");
    assertThat(f.hidden()).isEqualTo(hidden);
    assertThat(f.vocab()).isEqualTo(vocab);
    assertThat(c.get("model_type").asText()).isEqualTo(name);
    assertThat(f.rows()).hasSizeGreaterThanOrEqualTo(5);
    assertThat(f.rows()).anySatisfy(r -> assertThat(r.length()).isEqualTo(1));
    // RoBERTa's positions start at pad_token_id + 1, so its rows hold that many fewer tokens
    int maxLen = name.equals("roberta") ? maxPos - f.configInt("pad_token_id") - 1 : maxPos;
    assertThat(f.maxLength()).isEqualTo(maxLen);
    assertThat(f.rows()).anySatisfy(r -> assertThat(r.length()).isEqualTo(maxLen));
    assertThat(f.rows()).allSatisfy(r -> assertThat(r.length()).isBetween(1, maxLen));
    assertThat(f.rows().stream().mapToInt(Row::length).distinct().count()).isEqualTo(f.rows().size());
    boolean decoder = !name.equals("bert") && !name.equals("roberta");
    assertThat(f.isDecoder()).isEqualTo(decoder);
    String prefix = name.equals("bert") ? "bert." : "";
    Map<String, SafetensorsFile> files = open(f);
    try {
      float[] head = decoder ? readAll(files, headName(f)) : null;
      for (Row r : f.rows()) {
        assertInVocab(r.ids(), vocab, name + " input");
        assertThat(r.lastHidden()).hasNumberOfRows(r.length());
        assertThat(r.lastHidden()[0]).hasSize(hidden);
        double[] mean = new double[hidden];
        for (double[] h : r.lastHidden()) {
          for (int j = 0; j < hidden; j++) {
            mean[j] += h[j] / r.length();
          }
        }
        assertClose(r.embedMean(), mean, name + " embed_mean");
        assertClose(r.embedCls(), r.lastHidden()[0], name + " embed_cls");
        assertClose(r.embedLast(), r.lastHidden()[r.length() - 1], name + " embed_last");
        double norm = Math.sqrt(java.util.Arrays.stream(mean).map(x -> x * x).sum());
        assertClose(r.embedMeanNormalized(), java.util.Arrays.stream(mean).map(x -> x / norm).toArray(),
            name + " embed_mean_normalized");
        if (decoder) {
          // logits = h_last . W_head^T, W_head [vocab, hidden] as stored (widened exactly to float)
          double[] h = r.lastHidden()[r.length() - 1];
          double[] logits = new double[vocab];
          for (int v = 0; v < vocab; v++) {
            for (int j = 0; j < hidden; j++) {
              logits[v] += h[j] * head[v * hidden + j];
            }
          }
          assertClose(r.logitsLast(), logits, name + " logits_last of a row of " + r.length());
          assertThat(r.score()).isNotNull();
          if (r.length() == 1) {
            assertThat(r.score()).isEqualTo(0.0);
          } else {
            assertThat(r.score()).isNegative();
          }
        } else {
          // pooler = tanh(W h[0] + b)
          float[] w = readAll(files, prefix + "pooler.dense.weight");
          float[] b = readAll(files, prefix + "pooler.dense.bias");
          double[] pooler = new double[hidden];
          for (int o = 0; o < hidden; o++) {
            double s = b[o];
            for (int j = 0; j < hidden; j++) {
              s += w[o * hidden + j] * r.lastHidden()[0][j];
            }
            pooler[o] = Math.tanh(s);
          }
          assertClose(r.pooler(), pooler, name + " pooler");
          assertThat(r.logitsLast()).isNull();
        }
      }
    } finally {
      for (SafetensorsFile file : files.values()) {
        file.close();
      }
    }
    if (!decoder) {
      assertThat(f.tokenTypeIds()).hasNumberOfRows(f.rows().size());
      for (int i = 0; i < f.rows().size(); i++) {
        assertThat(f.tokenTypeIds()[i]).hasSize(f.rows().get(i).length()).containsOnly(0);
      }
    }
    if (name.equals("llama") || name.equals("qwen3") || gpt2) {
      assertThat(f.greedy()).hasSize(3).allSatisfy(g -> {
        assertThat(g.tokens()).hasSize(6);
        assertInVocab(g.tokens(), vocab, name + " greedy");
        assertThat(g.margins()).hasSize(6);
        assertThat(java.util.Arrays.stream(g.margins()).min().getAsDouble()).isPositive();
      });
    }
    if (name.equals("bert") || gpt2 || name.equals("mistral")) {
      assertThat(f.texts()).hasSameSizeAs(f.textIds()).hasSameSizeAs(f.textIdsTruncated());
      f.textIds().forEach(ids -> assertInVocab(ids, vocab, name + " text"));
      assertThat(Files.exists(f.dir().resolve("tokenizer.json"))).isTrue();
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"bert", "roberta", "llama", "mistral", "qwen2", "qwen3", "gpt2"})
  void eachFixtureHasTheFilesSavePretrainedWrites(String name) throws Exception {
    java.util.Set<String> want = new java.util.TreeSet<>(java.util.List.of("config.json", "reference.json"));
    switch (name) {
      case "bert" -> want.addAll(java.util.List.of("model.safetensors", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "vocab.txt"));
      case "llama" -> want.addAll(java.util.List.of("model-00001-of-00002.safetensors",
          "model-00002-of-00002.safetensors", "model.safetensors.index.json", "generation_config.json"));
      case "qwen2", "qwen3" -> want.addAll(java.util.List.of("model.safetensors", "generation_config.json"));
      case "mistral" -> want.addAll(java.util.List.of("model.safetensors", "generation_config.json",
          "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"));
      case "roberta" -> want.add("model.safetensors");
      case "gpt2" -> want.addAll(java.util.List.of("model.safetensors", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "vocab.json", "merges.txt", "generation_config.json"));
      default -> throw new IllegalArgumentException(name);
    }
    java.util.Set<String> have = new java.util.TreeSet<>();
    try (java.util.stream.Stream<java.nio.file.Path> files = Files.list(HfFixtures.dir(name))) {
      files.forEach(p -> have.add(p.getFileName().toString()));
    }
    assertThat(have).as("files of fixture %s", name).isEqualTo(want);
    for (String json : have) {
      if (json.endsWith(".json")) {
        assertThat(new ObjectMapper().readTree(HfFixtures.dir(name).resolve(json).toFile())).as(json).isNotNull();
      }
    }
  }

  @org.junit.jupiter.api.Test
  void ropeReferenceFollowsItsOwnDefinition() {
    java.util.List<HfFixtures.RopeCase> cases = HfFixtures.rope();
    assertThat(cases).hasSize(4);
    for (HfFixtures.RopeCase c : cases) {
      int half = c.headDim() / 2;
      assertThat(c.invFreq()).hasSize(half);
      String type = c.ropeScaling().isNull() ? "default" : c.ropeScaling().get("rope_type").asText();
      double[] base = new double[half];
      for (int i = 0; i < half; i++) {
        base[i] = 1.0 / Math.pow(c.ropeTheta(), 2.0 * i / c.headDim());
      }
      if (!type.equals("llama3")) {
        double factor = type.equals("linear") ? c.ropeScaling().get("factor").asDouble() : 1.0;
        assertClose(c.invFreq(), java.util.Arrays.stream(base).map(x -> x / factor).toArray(), "inv_freq " + type);
      } else {
        // every frequency is the base one divided by a factor in [1, factor]
        double factor = c.ropeScaling().get("factor").asDouble();
        for (int i = 0; i < half; i++) {
          assertThat(base[i] / c.invFreq()[i]).isBetween(1 - 1e-12, factor + 1e-12);
        }
      }
      for (int k = 0; k < c.positions().length; k++) {
        double[] x = c.x()[k];
        double[] want = new double[c.headDim()];
        for (int i = 0; i < half; i++) {
          double a = c.positions()[k] * c.invFreq()[i];
          want[i] = x[i] * Math.cos(a) - x[i + half] * Math.sin(a);
          want[i + half] = x[i + half] * Math.cos(a) + x[i] * Math.sin(a);
        }
        assertClose(c.rotated()[k], want, "rope " + type + " at position " + c.positions()[k]);
      }
    }
    // Llama 3.1's values put frequencies in all three llama3 bands: kept, interpolated, divided by factor
    HfFixtures.RopeCase l31 = cases.get(3);
    long kept = 0;
    long divided = 0;
    for (int i = 0; i < l31.headDim() / 2; i++) {
      double ratio = 1.0 / Math.pow(l31.ropeTheta(), 2.0 * i / l31.headDim()) / l31.invFreq()[i];
      kept += Math.abs(ratio - 1) < 1e-12 ? 1 : 0;
      divided += Math.abs(ratio - 8) < 1e-9 ? 1 : 0;
    }
    assertThat(kept).isPositive();
    assertThat(divided).isPositive();
    assertThat(kept + divided).isLessThan(l31.headDim() / 2);
  }

  @org.junit.jupiter.api.Test
  void modifiedCopiesForBadInputTests(@org.junit.jupiter.api.io.TempDir java.nio.file.Path tmp) throws Exception {
    java.nio.file.Path dir = HfFixtures.copy("llama", tmp);
    HfFixtures.editConfig(dir, c -> c.put("model_type", "t5"));
    assertThat(new ObjectMapper().readTree(Files.readString(dir.resolve("config.json"))).get("model_type").asText())
        .isEqualTo("t5");
    HfFixtures.removeTensor(dir, "model.layers.1.mlp.up_proj.weight");
    HfFixtures.truncateRows(dir, "model.layers.0.self_attn.k_proj.weight", 15);
    Configuration conf = new Configuration();
    try (SafetensorsFile shard2 = SafetensorsFile.open(new Path(dir.resolve("model-00002-of-00002.safetensors").toUri()), conf);
        SafetensorsFile shard1 = SafetensorsFile.open(new Path(dir.resolve("model-00001-of-00002.safetensors").toUri()), conf);
        SafetensorsFile original = SafetensorsFile.open(new Path(HfFixtures.dir("llama")
            .resolve("model-00001-of-00002.safetensors").toUri()), conf)) {
      assertThat(shard2.contains("model.layers.1.mlp.up_proj.weight")).isFalse();
      assertThat(shard2.contains("model.layers.1.mlp.down_proj.weight")).isTrue();
      assertThat(shard1.info("model.layers.0.self_attn.k_proj.weight").shape()).containsExactly(15, 64);
      // the other tensors keep their values
      assertThat(shard1.readAll("model.layers.0.self_attn.q_proj.weight"))
          .containsExactly(original.readAll("model.layers.0.self_attn.q_proj.weight"));
      float[] k = original.readAll("model.layers.0.self_attn.k_proj.weight");
      assertThat(shard1.readAll("model.layers.0.self_attn.k_proj.weight"))
          .containsExactly(java.util.Arrays.copyOf(k, 15 * 64));
    }
    JsonNode index = new ObjectMapper().readTree(Files.readString(dir.resolve("model.safetensors.index.json")));
    assertThat(index.get("weight_map").has("model.layers.1.mlp.up_proj.weight")).isFalse();
    // the committed fixture is untouched
    try (SafetensorsFile committed = SafetensorsFile.open(new Path(HfFixtures.dir("llama")
        .resolve("model-00002-of-00002.safetensors").toUri()), conf)) {
      assertThat(committed.contains("model.layers.1.mlp.up_proj.weight")).isTrue();
    }
  }

  private static void assertInVocab(int[] ids, int vocab, String what) {
    for (int id : ids) {
      assertThat(id).as("%s id", what).isBetween(0, vocab - 1);
    }
  }

  private static String headName(Fixture f) {
    return switch (f.name()) {
      case "llama", "mistral" -> "lm_head.weight";
      case "qwen2", "qwen3" -> "model.embed_tokens.weight";
      case "gpt2" -> "transformer.wte.weight";
      default -> throw new IllegalArgumentException(f.name());
    };
  }

  private static float[] readAll(Map<String, SafetensorsFile> files, String tensor) throws Exception {
    for (SafetensorsFile file : files.values()) {
      if (file.contains(tensor)) {
        return file.readAll(tensor);
      }
    }
    throw new AssertionError("no tensor " + tensor);
  }

  private static void assertClose(double[] got, double[] ref, String what) {
    assertThat(got).as(what).hasSameSizeAs(ref);
    double scale = 0;
    double err = 0;
    for (int i = 0; i < ref.length; i++) {
      scale = Math.max(scale, Math.abs(ref[i]));
      err = Math.max(err, Math.abs(got[i] - ref[i]));
    }
    assertThat(err).as("%s: max |got - ref| (max |ref| = %s)", what, scale).isLessThanOrEqualTo(TOL * Math.max(scale, 1e-30));
  }

  /** The safetensors files of a fixture: model.safetensors, or the shards of model.safetensors.index.json. */
  private static Map<String, SafetensorsFile> open(Fixture f) throws Exception {
    Map<String, SafetensorsFile> files = new LinkedHashMap<>();
    java.nio.file.Path index = f.dir().resolve("model.safetensors.index.json");
    Configuration conf = new Configuration();
    if (Files.exists(index)) {
      assertThat(f.dir().resolve("model.safetensors")).doesNotExist();
      JsonNode idx = new ObjectMapper().readTree(Files.readString(index));
      JsonNode map = idx.get("weight_map");
      long total = 0;
      for (Iterator<Map.Entry<String, JsonNode>> it = map.fields(); it.hasNext(); ) {
        Map.Entry<String, JsonNode> e = it.next();
        String file = e.getValue().asText();
        if (!files.containsKey(file)) {
          files.put(file, SafetensorsFile.open(new Path(f.dir().resolve(file).toUri()), conf));
        }
        assertThat(files.get(file).contains(e.getKey())).as("%s in %s", e.getKey(), file).isTrue();
      }
      assertThat(files).hasSize(2);
      for (SafetensorsFile file : files.values()) {
        for (TensorInfo t : file.tensors().values()) {
          total += t.byteLength();
          assertThat(map.get(t.name()).asText()).isEqualTo(file.path().getName());
        }
      }
      assertThat(idx.get("metadata").get("total_size").asLong()).isEqualTo(total);
    } else {
      files.put("model.safetensors", SafetensorsFile.open(new Path(f.dir().resolve("model.safetensors").toUri()), conf));
    }
    return files;
  }

  /** The tensors HF's modeling code saves for the fixture's config, with their shapes. */
  private static Map<String, long[]> expectedTensors(Fixture f) {
    Map<String, long[]> m = new LinkedHashMap<>();
    JsonNode c = f.config();
    switch (f.name()) {
      case "bert", "roberta" -> {
        boolean bert = f.name().equals("bert");
        String pre = bert ? "bert." : "";
        long d = f.configInt("hidden_size");
        long ff = f.configInt("intermediate_size");
        long v = f.configInt("vocab_size");
        m.put(pre + "embeddings.word_embeddings.weight", new long[] {v, d});
        m.put(pre + "embeddings.position_embeddings.weight", new long[] {f.configInt("max_position_embeddings"), d});
        m.put(pre + "embeddings.token_type_embeddings.weight", new long[] {f.configInt("type_vocab_size"), d});
        m.put(pre + "embeddings.LayerNorm.weight", new long[] {d});
        m.put(pre + "embeddings.LayerNorm.bias", new long[] {d});
        for (int i = 0; i < f.configInt("num_hidden_layers"); i++) {
          String p = pre + "encoder.layer." + i + ".";
          for (String part : new String[] {"attention.self.query", "attention.self.key", "attention.self.value",
              "attention.output.dense"}) {
            m.put(p + part + ".weight", new long[] {d, d});
            m.put(p + part + ".bias", new long[] {d});
          }
          m.put(p + "intermediate.dense.weight", new long[] {ff, d});
          m.put(p + "intermediate.dense.bias", new long[] {ff});
          m.put(p + "output.dense.weight", new long[] {d, ff});
          m.put(p + "output.dense.bias", new long[] {d});
          for (String ln : new String[] {"attention.output.LayerNorm", "output.LayerNorm"}) {
            m.put(p + ln + ".weight", new long[] {d});
            m.put(p + ln + ".bias", new long[] {d});
          }
        }
        m.put(pre + "pooler.dense.weight", new long[] {d, d});
        m.put(pre + "pooler.dense.bias", new long[] {d});
        if (!bert) {
          break;
        }
        m.put("cls.predictions.bias", new long[] {v});
        m.put("cls.predictions.transform.dense.weight", new long[] {d, d});
        m.put("cls.predictions.transform.dense.bias", new long[] {d});
        m.put("cls.predictions.transform.LayerNorm.weight", new long[] {d});
        m.put("cls.predictions.transform.LayerNorm.bias", new long[] {d});
        m.put("cls.seq_relationship.weight", new long[] {2, d});
        m.put("cls.seq_relationship.bias", new long[] {2});
      }
      case "llama", "mistral", "qwen2", "qwen3" -> {
        long d = f.configInt("hidden_size");
        long h = f.configInt("num_attention_heads");
        long kv = f.configInt("num_key_value_heads");
        long hd = c.has("head_dim") ? f.configInt("head_dim") : d / h;
        long ff = f.configInt("intermediate_size");
        long v = f.configInt("vocab_size");
        boolean bias = f.name().equals("qwen2");
        m.put("model.embed_tokens.weight", new long[] {v, d});
        for (int i = 0; i < f.configInt("num_hidden_layers"); i++) {
          String p = "model.layers." + i + ".";
          m.put(p + "input_layernorm.weight", new long[] {d});
          m.put(p + "post_attention_layernorm.weight", new long[] {d});
          m.put(p + "self_attn.q_proj.weight", new long[] {h * hd, d});
          m.put(p + "self_attn.k_proj.weight", new long[] {kv * hd, d});
          m.put(p + "self_attn.v_proj.weight", new long[] {kv * hd, d});
          if (bias) {
            m.put(p + "self_attn.q_proj.bias", new long[] {h * hd});
            m.put(p + "self_attn.k_proj.bias", new long[] {kv * hd});
            m.put(p + "self_attn.v_proj.bias", new long[] {kv * hd});
          }
          m.put(p + "self_attn.o_proj.weight", new long[] {d, h * hd});
          if (f.name().equals("qwen3")) {
            m.put(p + "self_attn.q_norm.weight", new long[] {hd});
            m.put(p + "self_attn.k_norm.weight", new long[] {hd});
          }
          m.put(p + "mlp.gate_proj.weight", new long[] {ff, d});
          m.put(p + "mlp.up_proj.weight", new long[] {ff, d});
          m.put(p + "mlp.down_proj.weight", new long[] {d, ff});
        }
        m.put("model.norm.weight", new long[] {d});
        if (!c.get("tie_word_embeddings").asBoolean()) {
          m.put("lm_head.weight", new long[] {v, d});
        }
      }
      case "gpt2" -> {
        long d = f.configInt("n_embd");
        long v = f.configInt("vocab_size");
        long ff = 4 * d;
        m.put("transformer.wte.weight", new long[] {v, d});
        m.put("transformer.wpe.weight", new long[] {f.configInt("n_positions"), d});
        for (int i = 0; i < f.configInt("n_layer"); i++) {
          String p = "transformer.h." + i + ".";
          for (String ln : new String[] {"ln_1", "ln_2"}) {
            m.put(p + ln + ".weight", new long[] {d});
            m.put(p + ln + ".bias", new long[] {d});
          }
          // Conv1D: [in, out]
          m.put(p + "attn.c_attn.weight", new long[] {d, 3 * d});
          m.put(p + "attn.c_attn.bias", new long[] {3 * d});
          m.put(p + "attn.c_proj.weight", new long[] {d, d});
          m.put(p + "attn.c_proj.bias", new long[] {d});
          m.put(p + "mlp.c_fc.weight", new long[] {d, ff});
          m.put(p + "mlp.c_fc.bias", new long[] {ff});
          m.put(p + "mlp.c_proj.weight", new long[] {ff, d});
          m.put(p + "mlp.c_proj.bias", new long[] {d});
        }
        m.put("transformer.ln_f.weight", new long[] {d});
        m.put("transformer.ln_f.bias", new long[] {d});
      }
      default -> throw new IllegalArgumentException(f.name());
    }
    return m;
  }
}
