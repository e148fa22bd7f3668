package org.sparktp.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.Activation;
import org.sparktp.nn.Parallel;

class ModelConfigTest {
  private static final String FULL = """
      {"spark_tp": 1, "input_dim": 1000, "model_type": "ignored", "layers": [
        {"type": "embedding_bag", "weight": "emb.weight", "mode": "sum"},
        {"type": "linear", "weight": "fc1.weight", "bias": "fc1.bias", "parallel": "column"},
        {"type": "gelu_tanh"},
        {"type": "residual", "layers": [
          {"type": "layer_norm", "weight": "ln.weight", "bias": "ln.bias", "eps": 1e-6},
          {"type": "linear", "weight": "fc2.weight"},
          {"type": "residual", "layers": [{"type": "relu"}]}
        ]},
        {"type": "layer_norm", "weight": "ln2.weight", "bias": "ln2.bias"},
        {"type": "softmax"}
      ]}""";

  private static String error(String json) {
    try {
      ModelConfig c = ModelConfig.parse(json, "/m/config.json");
      throw new AssertionError("expected an error, parsed " + c);
    } catch (ModelFormatException e) {
      assertThat(e.getMessage()).startsWith("Invalid /m/config.json: ");
      return e.getMessage();
    }
  }

  private static String model(String layers) {
    return "{\"spark_tp\": 1, \"input_dim\": 8, \"layers\": [" + layers + "]}";
  }

  @Test
  void parsesEveryLayerTypeWithDefaults() throws Exception {
    ModelConfig c = ModelConfig.parse(FULL, "x");
    assertThat(c.inputDim()).isEqualTo(1000);
    assertThat(c.layers()).hasSize(6);
    assertThat(c.layers().get(0)).isEqualTo(new ModelConfig.Embedding("emb.weight", true, false));
    assertThat(c.layers().get(1)).isEqualTo(new ModelConfig.Linear("fc1.weight", "fc1.bias", Parallel.COLUMN));
    assertThat(c.layers().get(2)).isEqualTo(new ModelConfig.Act(Activation.GELU_TANH));
    ModelConfig.Residual r = (ModelConfig.Residual) c.layers().get(3);
    assertThat(r.layers().get(0)).isEqualTo(new ModelConfig.LayerNorm("ln.weight", "ln.bias", 1e-6f));
    assertThat(r.layers().get(1)).isEqualTo(new ModelConfig.Linear("fc2.weight", null, Parallel.AUTO));
    assertThat(r.layers().get(2)).isEqualTo(new ModelConfig.Residual(List.of(new ModelConfig.Act(Activation.RELU))));
    assertThat(c.layers().get(4)).isEqualTo(new ModelConfig.LayerNorm("ln2.weight", "ln2.bias", 1e-5f));
    assertThat(c.tensorNames()).containsExactly("emb.weight", "fc1.weight", "fc1.bias", "ln.weight", "ln.bias",
        "fc2.weight", "ln2.weight", "ln2.bias");
    assertThat(ModelConfig.parse(model("{\"type\": \"embedding_bag\", \"weight\": \"e\"}"), "x").layers().get(0))
        .isEqualTo(new ModelConfig.Embedding("e", true, true));
  }

  @Test
  void writtenJsonParsesBackToTheSameConfig() throws Exception {
    ModelConfig c = ModelConfig.parse(FULL, "x");
    String json = c.toJson();
    assertThat(json).contains("\"spark_tp\" : 1").contains("1.0E-6").doesNotContain("model_type");
    assertThat(ModelConfig.parse(json, "y")).isEqualTo(c);
  }

  @Test
  void anUnknownLayerTypeListsTheValidOnes() {
    assertThat(error(model("{\"type\": \"linear\", \"weight\": \"w\"}, {\"type\": \"conv2d\"}")))
        .isEqualTo("Invalid /m/config.json: layer 1: unknown layer type 'conv2d'; valid types: linear, layer_norm, "
            + "embedding, embedding_bag, residual, gelu, gelu_tanh, relu, silu, tanh, sigmoid, softmax, identity");
    assertThat(error(model("{\"type\": \"residual\", \"layers\": [{\"type\": \"gelu\"}, {\"type\": \"swish\"}]}")))
        .contains("layer 0.1: unknown layer type 'swish'");
  }

  @Test
  void missingFieldsAreNamed() {
    assertThat(error("{\"input_dim\": 8, \"layers\": [{\"type\": \"relu\"}]}")).contains("missing field 'spark_tp'");
    assertThat(error("{\"spark_tp\": 1, \"layers\": [{\"type\": \"relu\"}]}")).contains("missing field 'input_dim'");
    assertThat(error("{\"spark_tp\": 1, \"input_dim\": 8}")).contains("missing field 'layers'");
    assertThat(error(model("{\"weight\": \"w\"}"))).contains("layer 0: missing field 'type'; valid types: linear");
    assertThat(error(model("{\"type\": \"linear\", \"bias\": \"b\"}")))
        .contains("layer 0: missing field 'weight' (a tensor name) for type 'linear'");
    assertThat(error(model("{\"type\": \"embedding\"}"))).contains("missing field 'weight'");
    assertThat(error(model("{\"type\": \"residual\"}"))).contains("layer 0: missing field 'layers'");
    assertThat(error(model("{\"type\": \"residual\", \"layers\": []}"))).contains("'layers' must be a non-empty array");
    assertThat(error(model(""))).contains("'layers' must be a non-empty array");
  }

  @Test
  void aVersionOtherThanOneIsRejected() {
    assertThat(error("{\"spark_tp\": 2, \"input_dim\": 8, \"layers\": [{\"type\": \"relu\"}]}"))
        .contains("unsupported format version \"spark_tp\": 2; this version of spark-tp reads version 1");
    assertThat(error("{\"spark_tp\": \"1\", \"input_dim\": 8, \"layers\": [{\"type\": \"relu\"}]}"))
        .contains("unsupported format version");
  }

  @Test
  void anEmbeddingThatIsNotTheFirstLayerIsRejected() {
    assertThat(error(model("{\"type\": \"relu\"}, {\"type\": \"embedding\", \"weight\": \"e\"}")))
        .contains("layer 1 (embedding): an embedding may only be the first layer of a model");
    assertThat(error(model("{\"type\": \"residual\", \"layers\": [{\"type\": \"embedding_bag\", \"weight\": \"e\"}]}")))
        .contains("layer 0.0 (embedding_bag): an embedding may only be the first layer");
  }

  @Test
  void wrongJsonAndWrongValuesAreRejected() {
    assertThat(error("{\"spark_tp\": 1, \"input_dim\": 8, \"layers\": [")).contains("not valid JSON");
    assertThat(error("[1]")).contains("expected a JSON object");
    assertThat(error("{\"spark_tp\": 1, \"input_dim\": -3, \"layers\": [{\"type\": \"relu\"}]}"))
        .contains("'input_dim' must be a positive integer, found -3");
    assertThat(error(model("{\"type\": \"linear\", \"weight\": 5}"))).contains("'weight' must be a non-empty string");
    assertThat(error(model("{\"type\": \"linear\", \"weight\": \"w\", \"parallel\": \"diagonal\"}")))
        .contains("layer 0: Unknown parallel mode 'diagonal'; use one of: auto, column, row, replicated");
    assertThat(error(model("{\"type\": \"linear\", \"weight\": \"w\", \"bais\": \"b\"}")))
        .contains("layer 0: unknown field 'bais' for type 'linear'; allowed fields: type, weight, bias, parallel");
    assertThat(error(model("{\"type\": \"layer_norm\", \"eps\": \"small\"}"))).contains("'eps' must be a number");
    assertThat(error(model("{\"type\": \"layer_norm\", \"eps\": 0}"))).contains("eps must be a positive number");
    assertThat(error(model("{\"type\": \"embedding_bag\", \"weight\": \"e\", \"mode\": \"max\"}")))
        .contains("embedding_bag 'mode' must be \"mean\" or \"sum\", found \"max\"");
    assertThat(error(model("{\"type\": \"relu\", \"weight\": \"w\"}"))).contains("unknown field 'weight'");
    assertThat(error(model("{\"type\": \"relu\"}, {\"type\": \"relu\", \"type\": \"tanh\"}")))
        .contains("Duplicate field 'type'");
  }

  @Test
  void layerNamesDropTheWeightSuffix() {
    assertThat(ModelConfig.layerName("encoder.fc1.weight")).isEqualTo("encoder.fc1");
    assertThat(ModelConfig.layerName("ln.bias")).isEqualTo("ln");
    assertThat(ModelConfig.layerName("w1")).isEqualTo("w1");
    assertThat(ModelConfig.layerName(".weight")).isEqualTo(".weight");
  }
}
