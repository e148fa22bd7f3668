package org.sparktp.model.hf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparktp.backend.Activation;
import org.sparktp.model.ModelDirectory;
import org.sparktp.model.ModelFormatException;
import org.sparktp.model.SafetensorsFile;
import org.sparktp.model.TensorInfo;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.ops.AttentionOp;
import org.sparktp.nn.ops.EmbeddingOp;
import org.sparktp.nn.ops.MlpOp;
import org.sparktp.nn.ops.NormOp;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.Part;
import org.sparktp.nn.ops.ResidualOp;
import org.sparktp.nn.ops.Rope;
import org.sparktp.nn.ops.TransformerModel;
import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * A Hugging Face model directory as {@code save_pretrained} writes it: {@code config.json},
 * {@code model.safetensors} or a sharded checkpoint with {@code model.safetensors.index.json}, HF tensor
 * names (with or without the base model's prefix {@code bert.}, {@code roberta.}, {@code model.},
 * {@code transformer.}), dtypes F32, F16, BF16 (read in their own dtype into the rank's tensors, converted to
 * the storage dtype per tensor where it differs: {@link #weightDtype()}). Dispatches on
 * {@code model_type} (or {@code architectures}): {@code bert}, {@code roberta}, {@code llama},
 * {@code mistral}, {@code qwen2}, {@code qwen3}, {@code gpt2}.
 *
 * <p>{@link #open} validates everything before any task runs: an unsupported {@code model_type}, a
 * missing tensor, or a shape that disagrees with the config is an error naming the file, the tensor and
 * the config keys. Then {@link #model()} is the model as ops (no weights) and {@link #weightSource()}
 * reads only the byte ranges a rank asks for.
 */
public final class HfModel implements AutoCloseable {
  /** The tokenizer file HF's {@code tokenizers} library writes. */
  public static final String TOKENIZER_FILE = "tokenizer.json";

  private final Path dir;
  private final String modelType;
  private final Map<String, SafetensorsFile> fileOf;
  private final List<SafetensorsFile> files;
  private final TransformerModel model;
  private final boolean tokenizer;
  private final DType weightDtype;

  private HfModel(Path dir, String modelType, Map<String, SafetensorsFile> fileOf, List<SafetensorsFile> files,
      TransformerModel model, boolean tokenizer, DType weightDtype) {
    this.weightDtype = weightDtype;
    this.dir = dir;
    this.modelType = modelType;
    this.fileOf = fileOf;
    this.files = files;
    this.model = model;
    this.tokenizer = tokenizer;
  }

  /** True when {@code dir/config.json} is a Hugging Face config (it has no {@code spark_tp} key). */
  public static boolean isHuggingFace(Path dir, Configuration conf) throws IOException {
    FileSystem fs = dir.getFileSystem(conf);
    Path config = new Path(dir, "config.json");
    if (!fs.exists(config)) {
      return false;
    }
    JsonNode root = readJson(config, fs);
    return root != null && root.isObject() && !root.has("spark_tp")
        && (root.has("model_type") || root.has("architectures"));
  }

  public static HfModel open(String dir) throws IOException {
    return open(new Path(dir), new Configuration());
  }

  /** Opens and validates a Hugging Face model directory. */
  public static HfModel open(Path dir, Configuration conf) throws IOException {
    FileSystem fs = dir.getFileSystem(conf);
    Path configPath = new Path(dir, "config.json");
    if (!fs.exists(configPath)) {
      throw new ModelFormatException("Cannot open model directory " + dir + ": it has no config.json");
    }
    HfConfig cfg = new HfConfig(readJson(configPath, fs), configPath.toString());
    String type = modelType(cfg);
    Path index = new Path(dir, ModelDirectory.INDEX_FILE);
    Path single = new Path(dir, ModelDirectory.WEIGHTS_FILE);
    Map<String, String> weightMap = new LinkedHashMap<>();
    boolean sharded = fs.exists(index);
    if (!sharded && !fs.exists(single)) {
      throw new ModelFormatException("Cannot open model directory " + dir + ": it has neither "
          + ModelDirectory.WEIGHTS_FILE + " nor " + ModelDirectory.INDEX_FILE);
    }
    if (sharded) {
      weightMap.putAll(ModelDirectory.readIndex(index, fs));
    }
    Map<String, SafetensorsFile> byFile = new LinkedHashMap<>();
    Map<String, SafetensorsFile> fileOf = new LinkedHashMap<>();
    try {
      if (sharded) {
        for (Map.Entry<String, String> e : weightMap.entrySet()) {
          SafetensorsFile f = byFile.get(e.getValue());
          if (f == null) {
            Path p = new Path(dir, e.getValue());
            if (!fs.exists(p)) {
              throw new ModelFormatException("Cannot load '" + e.getKey() + "': " + index + " maps it to "
                  + e.getValue() + ", but " + p + " does not exist");
            }
            f = SafetensorsFile.open(p, conf);
            byFile.put(e.getValue(), f);
          }
          if (!f.contains(e.getKey())) {
            throw new ModelFormatException("Cannot load '" + e.getKey() + "' from " + f.path()
                + ": the file has no such tensor (" + ModelDirectory.INDEX_FILE + " maps it there)");
          }
          fileOf.put(e.getKey(), f);
        }
      } else {
        SafetensorsFile f = SafetensorsFile.open(single, conf);
        byFile.put(ModelDirectory.WEIGHTS_FILE, f);
        for (String t : f.tensors().keySet()) {
          fileOf.put(t, f);
        }
      }
      Builder b = new Builder(cfg, type, fileOf, dir);
      TransformerModel m = switch (type) {
        case "bert", "roberta", "xlm-roberta" -> b.bert();
        case "llama", "mistral", "qwen2", "qwen3" -> b.llama();
        case "gpt2" -> b.gpt2();
        default -> throw new IllegalStateException(type);
      };
      return new HfModel(dir, type, fileOf, List.copyOf(byFile.values()), m, fs.exists(new Path(dir,
          TOKENIZER_FILE)), weightDtype(fileOf, cfg));
    } catch (IOException | RuntimeException e) {
      for (SafetensorsFile f : byFile.values()) {
        try {
          f.close();
        } catch (IOException s) {
          e.addSuppressed(s);
        }
      }
      throw e;
    }
  }

  private static DType weightDtype(Map<String, SafetensorsFile> fileOf, HfConfig cfg) throws ModelFormatException {
    DType seen = null;
    boolean mixed = false;
    for (Map.Entry<String, SafetensorsFile> e : fileOf.entrySet()) {
      TensorInfo info = e.getValue().tensors().get(e.getKey());
      if (info == null || info.dtype() == null || !info.dtype().isLoadable() || info.shape().length != 2) {
        continue;
      }
      if (seen == null) {
        seen = info.dtype();
      } else if (seen != info.dtype()) {
        mixed = true;
      }
    }
    if (seen != null && !mixed) {
      return seen;
    }
    String t = cfg.text("torch_dtype", "float32");
    return switch (t) {
      case "bfloat16" -> DType.BF16;
      case "float16" -> DType.F16;
      default -> DType.F32;
    };
  }

  private static final List<String> SUPPORTED = List.of("bert", "roberta", "xlm-roberta", "llama", "mistral",
      "qwen2", "qwen3", "gpt2");

  private static String modelType(HfConfig cfg) throws ModelFormatException {
    String t = cfg.text("model_type", null);
    if (t == null && cfg.node("architectures") != null && cfg.node("architectures").size() > 0) {
      String a = cfg.node("architectures").get(0).asText();
      String lower = a.toLowerCase(Locale.ROOT);
      for (String s : List.of("xlm-roberta", "roberta", "bert", "llama", "mistral", "qwen2", "qwen3", "gpt2")) {
        if (lower.startsWith(s.replace("-", ""))) {
          t = s;
          break;
        }
      }
      if (t == null) {
        throw new ModelFormatException(cfg.file() + ": unsupported architecture '" + a + "' (key 'architectures')"
            + "; spark-tp loads model_type " + String.join(", ", SUPPORTED));
      }
    }
    if (t == null) {
      throw new ModelFormatException(cfg.file() + ": missing key 'model_type' (and no 'architectures')");
    }
    if (!SUPPORTED.contains(t)) {
      throw new ModelFormatException(cfg.file() + ": unsupported model_type '" + t + "'; spark-tp loads "
          + String.join(", ", SUPPORTED));
    }
    return t;
  }

  private static JsonNode readJson(Path p, FileSystem fs) throws IOException {
    try (FSDataInputStream in = fs.open(p)) {
      String text = new String(in.readAllBytes(), StandardCharsets.UTF_8);
      try {
        return new ObjectMapper().readTree(text);
      } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
        throw new ModelFormatException("Invalid " + p + ": not valid JSON: " + e.getOriginalMessage(), e);
      }
    }
  }

  /** Builds the ops of one architecture, resolving and checking each tensor as it goes. */
  private static final class Builder {
    private final HfConfig c;
    private final String type;
    private final Map<String, SafetensorsFile> fileOf;
    private final Path dir;
    private String prefix = "";

    Builder(HfConfig c, String type, Map<String, SafetensorsFile> fileOf, Path dir) {
      this.c = c;
      this.type = type;
      this.fileOf = fileOf;
      this.dir = dir;
    }

    /** Picks the base-model prefix by where {@code probe} is found. */
    void prefix(String probe, String... candidates) throws ModelFormatException {
      for (String p : candidates) {
        if (fileOf.containsKey(p + probe)) {
          prefix = p;
          return;
        }
      }
      throw new ModelFormatException("Cannot find tensor '" + probe + "' (also tried with the prefixes "
          + Arrays.toString(candidates) + ") in " + dir + " (model_type " + type + "); it has "
          + sample());
    }

    private String sample() {
      List<String> names = new ArrayList<>(fileOf.keySet());
      return names.isEmpty() ? "no tensors" : names.size() <= 5 ? names.toString()
          : names.subList(0, 5) + " and " + (names.size() - 5) + " more";
    }

    boolean exists(String name) {
      return fileOf.containsKey(prefix + name);
    }

    /** The on-disk name of {@code name} (under the prefix), checked to have {@code shape}. */
    String t(String name, String why, long... shape) throws ModelFormatException {
      return exact(prefix + name, why, shape);
    }

    String exact(String full, String why, long... shape) throws ModelFormatException {
      SafetensorsFile f = fileOf.get(full);
      if (f == null) {
        throw new ModelFormatException("Missing tensor '" + full + "' in " + dir + " (model_type " + type + ", "
            + why + ")");
      }
      TensorInfo info = f.tensors().get(full);
      if (!Arrays.equals(info.shape(), shape)) {
        throw new ModelFormatException("Cannot load '" + full + "' from " + f.path() + ": expected "
            + Arrays.toString(shape) + " (" + why + "), file has " + info.shapeString());
      }
      if (info.dtype() == null || !info.dtype().isLoadable()) {
        throw new ModelFormatException("Cannot load '" + full + "' from " + f.path() + ": dtype " + info.dtypeName()
            + " is not supported; spark-tp loads F32, F16 and BF16");
      }
      return full;
    }

    String opt(String name, String why, long... shape) throws ModelFormatException {
      return exists(name) ? t(name, why, shape) : null;
    }

    TransformerModel bert() throws ModelFormatException {
      boolean roberta = !type.equals("bert");
      int h = c.integer("hidden_size");
      int heads = c.integer("num_attention_heads");
      int layers = c.integer("num_hidden_layers");
      int inter = c.integer("intermediate_size");
      int vocab = c.integer("vocab_size");
      int maxPos = c.integer("max_position_embeddings", 512);
      int types = c.integer("type_vocab_size", 2);
      float eps = (float) c.number("layer_norm_eps", 1e-12);
      Activation act = activation(c.text("hidden_act", "gelu"), "hidden_act");
      if (h % heads != 0) {
        throw new ModelFormatException(c.file() + ": hidden_size " + h + " is not a multiple of num_attention_heads "
            + heads);
      }
      int hd = h / heads;
      int posOffset = roberta ? c.integerOrZero("pad_token_id", 1) + 1 : 0;
      String base = roberta ? "roberta." : "bert.";
      prefix("embeddings.word_embeddings.weight", base, "");
      String hk = "hidden_size " + h;
      List<Op> ops = new ArrayList<>();
      String word = t("embeddings.word_embeddings.weight", "vocab_size " + vocab + " x " + hk, vocab, h);
      ops.add(new EmbeddingOp("embeddings", vocab, h, word,
          t("embeddings.position_embeddings.weight", "max_position_embeddings " + maxPos + " x " + hk, maxPos, h),
          maxPos, posOffset,
          t("embeddings.token_type_embeddings.weight", "type_vocab_size " + types + " x " + hk, types, h), types,
          t("embeddings.LayerNorm.weight", hk, h), t("embeddings.LayerNorm.bias", hk, h), eps));
      for (int i = 0; i < layers; i++) {
        String l = "encoder.layer." + i + ".";
        String sq = hk + " x " + hk;
        Part q = Part.linear(t(l + "attention.self.query.weight", sq, h, h), t(l + "attention.self.query.bias", hk, h),
            h, h);
        Part k = Part.linear(t(l + "attention.self.key.weight", sq, h, h), t(l + "attention.self.key.bias", hk, h),
            h, h);
        Part v = Part.linear(t(l + "attention.self.value.weight", sq, h, h), t(l + "attention.self.value.bias", hk, h),
            h, h);
        Part o = Part.linear(t(l + "attention.output.dense.weight", sq, h, h),
            t(l + "attention.output.dense.bias", hk, h), h, h);
        ops.add(new ResidualOp("layer." + i + ".attention", List.of(
            new AttentionOp("layer." + i + ".attention", h, heads, heads, hd, false, null, q, k, v, o))));
        ops.add(new NormOp("layer." + i + ".attention.output.LayerNorm", false, h,
            t(l + "attention.output.LayerNorm.weight", hk, h), t(l + "attention.output.LayerNorm.bias", hk, h), eps));
        String ik = "intermediate_size " + inter + " x " + hk;
        Part up = Part.linear(t(l + "intermediate.dense.weight", ik, inter, h),
            t(l + "intermediate.dense.bias", "intermediate_size " + inter, inter), inter, h);
        Part down = Part.linear(t(l + "output.dense.weight", hk + " x intermediate_size " + inter, h, inter),
            t(l + "output.dense.bias", hk, h), h, inter);
        ops.add(new ResidualOp("layer." + i + ".mlp", List.of(
            new MlpOp("layer." + i + ".mlp", h, inter, act, null, up, down))));
        ops.add(new NormOp("layer." + i + ".output.LayerNorm", false, h, t(l + "output.LayerNorm.weight", hk, h),
            t(l + "output.LayerNorm.bias", hk, h), eps));
      }
      return new TransformerModel(type, vocab, h, maxPos - posOffset, false, ops, null);
    }

    TransformerModel llama() throws ModelFormatException {
      boolean qwen = type.equals("qwen2"); // q/k/v biases, no o bias
      boolean qkNorm = type.equals("qwen3"); // per-head RMSNorm on queries and keys before RoPE
      int h = c.integer("hidden_size");
      int heads = c.integer("num_attention_heads");
      int kv = c.integer("num_key_value_heads", heads);
      int layers = c.integer("num_hidden_layers");
      int inter = c.integer("intermediate_size");
      int vocab = c.integer("vocab_size");
      int maxPos = c.integer("max_position_embeddings", 2048);
      int hd = c.integer("head_dim", qkNorm ? 128 : h / heads); // Qwen3Config's default head_dim is 128
      float eps = (float) c.number("rms_norm_eps", 1e-6);
      boolean attnBias = qwen || c.bool("attention_bias", false);
      boolean oBias = !qwen && c.bool("attention_bias", false);
      boolean mlpBias = c.bool("mlp_bias", false);
      String actName = c.text("hidden_act", "silu");
      if (!actName.equals("silu")) {
        throw new ModelFormatException(c.file() + ": hidden_act '" + actName + "' is not supported for " + type
            + " (spark-tp runs SwiGLU with silu)");
      }
      if (heads % kv != 0) {
        throw new ModelFormatException(c.file() + ": num_attention_heads " + heads
            + " is not a multiple of num_key_value_heads " + kv);
      }
      if (type.equals("mistral") && c.has("sliding_window")) {
        maxPos = Math.min(maxPos, c.integer("sliding_window")); // longer rows would need the window
      }
      if ((qwen || qkNorm) && c.bool("use_sliding_window", false)) {
        throw new ModelFormatException(c.file() + ": use_sliding_window=true is not supported");
      }
      Rope rope = rope(hd);
      prefix("embed_tokens.weight", "model.", "");
      String hk = "hidden_size " + h;
      String qk = "num_attention_heads " + heads + " x head_dim " + hd;
      String kk = "num_key_value_heads " + kv + " x head_dim " + hd;
      List<Op> ops = new ArrayList<>();
      String embed = t("embed_tokens.weight", "vocab_size " + vocab + " x " + hk, vocab, h);
      ops.add(new EmbeddingOp("embed_tokens", vocab, h, embed, null, 0, 0, null, 0, null, null, 0f));
      for (int i = 0; i < layers; i++) {
        String l = "layers." + i + ".";
        String a = l + "self_attn.";
        Part q = Part.linear(t(a + "q_proj.weight", qk + ", " + hk, (long) heads * hd, h),
            attnBias ? t(a + "q_proj.bias", qk, (long) heads * hd) : null, heads * hd, h);
        Part k = Part.linear(t(a + "k_proj.weight", kk + ", " + hk, (long) kv * hd, h),
            attnBias ? t(a + "k_proj.bias", kk, (long) kv * hd) : null, kv * hd, h);
        Part v = Part.linear(t(a + "v_proj.weight", kk + ", " + hk, (long) kv * hd, h),
            attnBias ? t(a + "v_proj.bias", kk, (long) kv * hd) : null, kv * hd, h);
        Part o = Part.linear(t(a + "o_proj.weight", hk + ", " + qk, h, (long) heads * hd),
            oBias ? t(a + "o_proj.bias", hk, h) : null, h, heads * hd);
        String hdk = "head_dim " + hd;
        ops.add(new ResidualOp("layers." + i + ".self_attn", List.of(
            new NormOp("layers." + i + ".input_layernorm", true, h, t(l + "input_layernorm.weight", hk, h), null, eps),
            new AttentionOp("layers." + i + ".self_attn", h, heads, kv, hd, true, rope, q, k, v, o,
                qkNorm ? t(a + "q_norm.weight", hdk, hd) : null, qkNorm ? t(a + "k_norm.weight", hdk, hd) : null,
                eps))));
        String m = l + "mlp.";
        String ik = "intermediate_size " + inter + " x " + hk;
        Part gate;
        Part up;
        if (exists(m + "gate_up_proj.weight")) { // merged gate/up: [2 * intermediate, hidden]
          String gu = t(m + "gate_up_proj.weight", "2 x " + ik, 2L * inter, h);
          gate = new Part(gu, null, false, 0, inter, 2 * inter, h);
          up = new Part(gu, null, false, inter, inter, 2 * inter, h);
        } else {
          gate = Part.linear(t(m + "gate_proj.weight", ik, inter, h),
              mlpBias ? t(m + "gate_proj.bias", "intermediate_size", inter) : null, inter, h);
          up = Part.linear(t(m + "up_proj.weight", ik, inter, h),
              mlpBias ? t(m + "up_proj.bias", "intermediate_size", inter) : null, inter, h);
        }
        Part down = Part.linear(t(m + "down_proj.weight", hk + " x intermediate_size " + inter, h, inter),
            mlpBias ? t(m + "down_proj.bias", hk, h) : null, h, inter);
        ops.add(new ResidualOp("layers." + i + ".mlp", List.of(
            new NormOp("layers." + i + ".post_attention_layernorm", true, h,
                t(l + "post_attention_layernorm.weight", hk, h), null, eps),
            new MlpOp("layers." + i + ".mlp", h, inter, Activation.SILU, gate, up, down))));
      }
      ops.add(new NormOp("norm", true, h, t("norm.weight", hk, h), null, eps));
      String head = lmHead(embed, vocab, h, c.bool("tie_word_embeddings", false));
      return new TransformerModel(type, vocab, h, maxPos, true, ops, head);
    }

    private String lmHead(String embed, int vocab, int h, boolean tied) throws ModelFormatException {
      if (fileOf.containsKey("lm_head.weight")) {
        return exact("lm_head.weight", "vocab_size " + vocab + " x hidden_size " + h, vocab, h);
      }
      if (tied) {
        return embed;
      }
      throw new ModelFormatException("Missing tensor 'lm_head.weight' in " + dir + " (model_type " + type
          + ", tie_word_embeddings is false, so the LM head is its own tensor)");
    }

    private Rope rope(int hd) throws ModelFormatException {
      double theta = c.number("rope_theta", 10000.0);
      JsonNode s = c.node("rope_scaling");
      if (s == null) {
        return Rope.plain(hd, theta);
      }
      String t = s.has("rope_type") ? s.get("rope_type").asText() : s.has("type") ? s.get("type").asText() : "default";
      double factor = s.has("factor") ? s.get("factor").asDouble() : 1.0;
      return switch (t) {
        case "default" -> Rope.plain(hd, theta);
        case "linear" -> new Rope(hd, theta, "linear", factor, 0, 0, 0);
        case "llama3" -> new Rope(hd, theta, "llama3", factor, s.path("low_freq_factor").asDouble(1.0),
            s.path("high_freq_factor").asDouble(4.0), s.path("original_max_position_embeddings").asInt(8192));
        default -> throw new ModelFormatException(c.file() + ": rope_scaling type '" + t
            + "' is not supported (key 'rope_scaling'); spark-tp supports linear and llama3");
      };
    }

    TransformerModel gpt2() throws ModelFormatException {
      int h = c.integer("n_embd");
      int heads = c.integer("n_head");
      int layers = c.integer("n_layer");
      int vocab = c.integer("vocab_size");
      int maxPos = c.integer("n_positions", 1024);
      int inter = c.has("n_inner") ? c.integer("n_inner") : 4 * h;
      float eps = (float) c.number("layer_norm_epsilon", 1e-5);
      Activation act = activation(c.text("activation_function", "gelu_new"), "activation_function");
      if (h % heads != 0) {
        throw new ModelFormatException(c.file() + ": n_embd " + h + " is not a multiple of n_head " + heads);
      }
      int hd = h / heads;
      prefix("wte.weight", "transformer.", "");
      String hk = "n_embd " + h;
      List<Op> ops = new ArrayList<>();
      String wte = t("wte.weight", "vocab_size " + vocab + " x " + hk, vocab, h);
      ops.add(new EmbeddingOp("wte", vocab, h, wte, t("wpe.weight", "n_positions " + maxPos + " x " + hk, maxPos, h),
          maxPos, 0, null, 0, null, null, 0f));
      for (int i = 0; i < layers; i++) {
        String l = "h." + i + ".";
        String cw = t(l + "attn.c_attn.weight", "Conv1D [n_embd, 3 x n_embd], " + hk, h, 3L * h);
        String cb = t(l + "attn.c_attn.bias", "3 x " + hk, 3L * h);
        Part q = new Part(cw, cb, true, 0, h, 3 * h, h);
        Part k = new Part(cw, cb, true, h, h, 3 * h, h);
        Part v = new Part(cw, cb, true, 2 * h, h, 3 * h, h);
        Part o = Part.conv1d(t(l + "attn.c_proj.weight", "Conv1D [n_embd, n_embd], " + hk, h, h),
            t(l + "attn.c_proj.bias", hk, h), h, h);
        ops.add(new ResidualOp("h." + i + ".attn", List.of(
            new NormOp("h." + i + ".ln_1", false, h, t(l + "ln_1.weight", hk, h), t(l + "ln_1.bias", hk, h), eps),
            new AttentionOp("h." + i + ".attn", h, heads, heads, hd, true, null, q, k, v, o))));
        Part up = Part.conv1d(t(l + "mlp.c_fc.weight", "Conv1D [n_embd, n_inner " + inter + "]", h, inter),
            t(l + "mlp.c_fc.bias", "n_inner " + inter, inter), inter, h);
        Part down = Part.conv1d(t(l + "mlp.c_proj.weight", "Conv1D [n_inner " + inter + ", n_embd]", inter, h),
            t(l + "mlp.c_proj.bias", hk, h), h, inter);
        ops.add(new ResidualOp("h." + i + ".mlp", List.of(
            new NormOp("h." + i + ".ln_2", false, h, t(l + "ln_2.weight", hk, h), t(l + "ln_2.bias", hk, h), eps),
            new MlpOp("h." + i + ".mlp", h, inter, act, null, up, down))));
      }
      ops.add(new NormOp("ln_f", false, h, t("ln_f.weight", hk, h), t("ln_f.bias", hk, h), eps));
      return new TransformerModel(type, vocab, h, maxPos, true, ops, lmHead(wte, vocab, h, true));
    }

    private Activation activation(String name, String key) throws ModelFormatException {
      return switch (name) {
        case "gelu" -> Activation.GELU;
        case "gelu_new", "gelu_pytorch_tanh", "gelu_fast" -> Activation.GELU_TANH;
        case "relu" -> Activation.RELU;
        case "silu", "swish" -> Activation.SILU;
        default -> throw new ModelFormatException(c.file() + ": " + key + " '" + name + "' is not supported; use "
            + "gelu, gelu_new, relu or silu");
      };
    }
  }

  public Path path() {
    return dir;
  }

  public String modelType() {
    return modelType;
  }

  /** The model as ops, no weights (small; ships with the plan). */
  public TransformerModel model() {
    return model;
  }

  /** True when the directory has {@code tokenizer.json}. */
  public boolean hasTokenizer() {
    return tokenizer;
  }

  /** Reads only the requested rows or columns of a tensor (positioned reads). */
  public WeightSource weightSource() {
    return new WeightSource() {
      private SafetensorsFile f(String name) {
        SafetensorsFile f = fileOf.get(name);
        if (f == null) {
          throw new IllegalArgumentException("The model in " + dir + " has no tensor '" + name + "'");
        }
        return f;
      }

      @Override
      public float[] rows(String name, int start, int count) {
        try {
          return f(name).readRows(name, start, count);
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
      }

      @Override
      public float[] columns(String name, int start, int count) {
        try {
          return f(name).readColumns(name, start, count);
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
      }

      @Override
      public float[] all(String name) {
        try {
          return f(name).readAll(name);
        } catch (IOException e) {
          throw new UncheckedIOException(e);
        }
      }

      @Override
      public DType dtype(String name) {
        return f(name).tensors().get(name).dtype();
      }

      @Override
      public Tensor rows(String name, int start, int count, int cols, DType dtype, Backend be) {
        SafetensorsFile f = f(name);
        return readTyped(f, name, count, cols, dtype, be, sink -> f.readRowsRaw(name, start, count, sink));
      }

      @Override
      public Tensor columns(String name, int start, int count, int rows, DType dtype, Backend be) {
        SafetensorsFile f = f(name);
        return readTyped(f, name, rows, count, dtype, be, sink -> f.readColumnsRaw(name, start, count, sink));
      }
    };
  }

  private interface RawRead {
    void run(SafetensorsFile.RawSink sink) throws IOException;
  }

  /**
   * Reads a block in the file's dtype straight into a new tensor on {@code be} (through the file's read buffers
   * of at most {@link SafetensorsFile#MAX_READ_BYTES}: no float32 copy, no whole-block array on the heap; a
   * dtype the backend does not hold is widened per buffer), then converts that one tensor on the backend when
   * {@code dtype} differs.
   */
  private static Tensor readTyped(SafetensorsFile f, String name, int rows, int cols, DType dtype, Backend be,
      RawRead read) {
    DType stored = f.tensors().get(name).dtype();
    DType land = be.supports(stored) ? stored : DType.F32;
    Tensor t = be.allocate(rows, cols, land);
    try {
      long[] at = {0};
      read.run((buf, off, len) -> {
        ByteBuffer src = ByteBuffer.wrap(buf, off, len).order(ByteOrder.LITTLE_ENDIAN);
        if (land == stored) {
          be.write(t, at[0], src);
          at[0] += len;
        } else {
          ByteBuffer wide = ByteBuffer.allocate(len / stored.size() * 4).order(ByteOrder.LITTLE_ENDIAN);
          DType.F32.convertFrom(stored, src, wide, len / stored.size());
          wide.flip();
          be.write(t, at[0], wide);
          at[0] += wide.limit();
        }
      });
      if (at[0] != t.bytes()) {
        throw new IllegalStateException("Read " + at[0] + " bytes of '" + name + "' from " + f.path() + " for "
            + t.shape() + " " + land.id() + " (" + t.bytes() + " bytes)");
      }
      if (land == dtype) {
        return t;
      }
      try (Tensor src = t) {
        return be.convert(src, dtype);
      }
    } catch (IOException e) {
      t.close();
      throw new UncheckedIOException(e);
    } catch (RuntimeException | Error e) {
      t.close();
      throw e;
    }
  }

  /**
   * The dtype the checkpoint stores its weights in: the one dtype of its 2-D tensors when they agree, else
   * {@code config.json}'s {@code torch_dtype} ({@code bfloat16}, {@code float16}), else F32. {@code auto}
   * precision picks bf16 for a bf16/f16 checkpoint on a CPU with native bf16.
   */
  public DType weightDtype() {
    return weightDtype;
  }

  /** Bytes of tensor data read so far, over every file. */
  public long bytesRead() {
    long n = 0;
    for (SafetensorsFile f : files) {
      n += f.bytesRead();
    }
    return n;
  }

  @Override
  public void close() throws IOException {
    SafetensorsFile.closeAll(files);
  }
}
