package org.sparktp.testing;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.URISyntaxException;
import java.net.URL;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * The Hugging Face checkpoint fixtures under {@code src/test/resources/hf/<name>/} (made by
 * {@code tools/make_hf_fixtures.py}: HF's save_pretrained layout plus {@code reference.json}, PyTorch float64
 * outputs of the same weights), read into typed records:
 *
 * <pre>{@code
 * HfFixtures.Fixture f = HfFixtures.load("llama");
 * Path dir = f.dir();                      // the model directory (config.json, *.safetensors, ...)
 * int[] ids = f.rows().get(2).ids();
 * double[][] h = f.rows().get(2).lastHidden();
 * }</pre>
 *
 * <p>Fixtures: {@code bert} (F32, 6 heads of 6, pooler and pre-training heads, WordPiece tokenizer),
 * {@code roberta} (F32, no name prefix, 5 heads of 8, positions offset by {@code pad_token_id + 1}),
 * {@code llama} (BF16, sharded, 8 query / 2 KV heads, llama3 rope scaling, untied head), {@code mistral}
 * (F32, {@code head_dim} 16 with hidden 48 and 4 heads, 4 / 2 heads, untied head), {@code qwen2}
 * (F16, 6 / 2 heads, q/k/v biases, tied head), {@code qwen3} (BF16, per-head q_norm / k_norm, {@code head_dim} 12
 * with hidden 40 and 6 / 3 heads, tied head), {@code gpt2} (F32, fused Conv1D {@code c_attn}, tied head,
 * byte-level BPE tokenizer).
 */
public final class HfFixtures {
  /** Every fixture. */
  public static final List<String> NAMES = List.of("bert", "roberta", "llama", "mistral", "qwen2", "qwen3",
      "gpt2");

  private HfFixtures() {}

  /**
   * One input row and the reference outputs for it. {@code lastHidden} is {@code [len][hidden]}: the final
   * hidden state (after the final norm for decoders, after the last layer for encoders); the embeds are its
   * mean / first / last row and the L2-normalized mean. {@code pooler} (encoders only) is
   * {@code tanh(pooler.dense(h[0]))}; {@code logitsLast} ({@code [vocab]}) and {@code score} (the sum of
   * {@code log p(x_t | x_<t)} over t = 2..n, 0 for a single token) are for decoders only, else null.
   */
  public record Row(int[] ids, double[][] lastHidden, double[] embedMean, double[] embedCls, double[] embedLast,
      double[] embedMeanNormalized, double[] pooler, double[] logitsLast, Double score) {
    /** Number of tokens. */
    public int length() {
      return ids.length;
    }
  }

  /** Greedy decoding: the 6 tokens after {@code prompt} (whole prefix recomputed each step, float64), and
   * the margin between the best and second-best logit at each step. */
  public record Greedy(int[] prompt, int[] tokens, double[] margins) {}

  /**
   * A fixture: its model directory, {@code config.json}, the stored dtype ({@code F32}, {@code BF16},
   * {@code F16}), the rows, and, where the fixture has them, BERT's token type ids (all 0), the greedy
   * decodings (llama, gpt2), and the tokenizer's texts with their ids, without and with truncation to
   * {@code truncateMaxLength} (bert, gpt2; otherwise empty lists and 0).
   */
  public record Fixture(String name, Path dir, JsonNode config, String dtype, int hidden, int vocab,
      List<Row> rows, int[][] tokenTypeIds, List<Greedy> greedy, List<String> texts, List<int[]> textIds,
      int truncateMaxLength, List<int[]> textIdsTruncated) {
    /** The token ids of every row. */
    public int[][] inputs() {
      int[][] out = new int[rows.size()][];
      for (int i = 0; i < out.length; i++) {
        out[i] = rows.get(i).ids();
      }
      return out;
    }

    /** True for the causal LMs (rows carry logits and scores), false for the encoders (bert, roberta). */
    public boolean isDecoder() {
      return !name.equals("bert") && !name.equals("roberta");
    }

    /** The longest row the model takes: {@code max_position_embeddings} ({@code n_positions} for GPT-2),
     * less {@code pad_token_id + 1} for RoBERTa, whose positions start there. */
    public int maxLength() {
      return switch (name) {
        case "gpt2" -> configInt("n_positions");
        case "roberta" -> configInt("max_position_embeddings") - configInt("pad_token_id") - 1;
        default -> configInt("max_position_embeddings");
      };
    }

    /** An integer config.json value. */
    public int configInt(String key) {
      JsonNode v = config.get(key);
      if (v == null || !v.canConvertToInt()) {
        throw new IllegalArgumentException("Fixture " + name + ": config.json has no integer '" + key + "'");
      }
      return v.asInt();
    }
  }

  /**
   * One rotary-embedding case of {@code hf/rope_reference.json}: the config values ({@code ropeScaling} is
   * the config's {@code rope_scaling} object, or a JSON null), HF's {@code inv_freq} ({@code [headDim/2]}),
   * and for each position {@code p} a vector {@code x[i]} and its rotation
   * {@code x * cos(p f) + rotate_half(x) * sin(p f)}, {@code f = [inv_freq, inv_freq]}.
   */
  public record RopeCase(int headDim, double ropeTheta, JsonNode ropeScaling, double[] invFreq, int[] positions,
      double[][] x, double[][] rotated) {}

  /** The rotary-embedding references (no scaling; linear; llama3 twice, once with all three bands). */
  public static List<RopeCase> rope() {
    URL url = HfFixtures.class.getResource("/hf/rope_reference.json");
    if (url == null) {
      throw new IllegalStateException("No hf/rope_reference.json on the test classpath");
    }
    try {
      JsonNode root = new ObjectMapper().readTree(url);
      List<RopeCase> out = new ArrayList<>();
      for (JsonNode c : root.get("cases")) {
        out.add(new RopeCase(c.get("head_dim").asInt(), c.get("rope_theta").asDouble(), c.get("rope_scaling"),
            doubles(c.get("inv_freq")), ints(c.get("positions")), matrix(c.get("x")), matrix(c.get("rotated"))));
      }
      return List.copyOf(out);
    } catch (IOException e) {
      throw new UncheckedIOException("Cannot read hf/rope_reference.json", e);
    }
  }

  /** The model directory of fixture {@code name} (on the test classpath). */
  public static Path dir(String name) {
    URL url = HfFixtures.class.getResource("/hf/" + name + "/config.json");
    if (url == null) {
      throw new IllegalArgumentException("No HF fixture '" + name + "' on the test classpath (hf/" + name
          + "/config.json); fixtures: " + NAMES);
    }
    try {
      return Path.of(url.toURI()).getParent();
    } catch (URISyntaxException e) {
      throw new IllegalStateException(e);
    }
  }

  /** Loads fixture {@code name}. */
  public static Fixture load(String name) {
    Path dir = dir(name);
    ObjectMapper mapper = new ObjectMapper();
    try {
      JsonNode config = mapper.readTree(Files.readString(dir.resolve("config.json")));
      JsonNode ref = mapper.readTree(Files.readString(dir.resolve("reference.json")));
      JsonNode inputs = ref.get("inputs");
      JsonNode rowsJson = ref.get("rows");
      List<Row> rows = new ArrayList<>();
      for (int i = 0; i < inputs.size(); i++) {
        JsonNode r = rowsJson.get(i);
        rows.add(new Row(ints(inputs.get(i)), matrix(r.get("last_hidden")), doubles(r.get("embed_mean")),
            doubles(r.get("embed_cls")), doubles(r.get("embed_last")), doubles(r.get("embed_mean_normalized")),
            doubles(r.get("pooler")), doubles(r.get("logits_last")),
            r.has("score") ? r.get("score").asDouble() : null));
      }
      int[][] types = null;
      if (ref.has("token_type_ids")) {
        JsonNode t = ref.get("token_type_ids");
        types = new int[t.size()][];
        for (int i = 0; i < types.length; i++) {
          types[i] = ints(t.get(i));
        }
      }
      List<Greedy> greedy = new ArrayList<>();
      if (ref.has("greedy")) {
        for (JsonNode g : ref.get("greedy")) {
          greedy.add(new Greedy(ints(g.get("prompt")), ints(g.get("tokens")), doubles(g.get("margins"))));
        }
      }
      List<String> texts = new ArrayList<>();
      if (ref.has("texts")) {
        ref.get("texts").forEach(t -> texts.add(t.asText()));
      }
      return new Fixture(name, dir, config, ref.get("dtype").asText(), ref.get("hidden").asInt(),
          ref.get("vocab").asInt(), List.copyOf(rows), types, List.copyOf(greedy), List.copyOf(texts),
          intLists(ref.get("text_ids")), ref.has("truncate_max_length") ? ref.get("truncate_max_length").asInt() : 0,
          intLists(ref.get("text_ids_truncated")));
    } catch (IOException e) {
      throw new UncheckedIOException("Cannot read HF fixture " + name + " in " + dir, e);
    }
  }

  // --- modified copies, for bad-input tests ---

  /** Copies fixture {@code name} to {@code parent/name} (to be modified by a test) and returns the copy. */
  public static Path copy(String name, Path parent) {
    Path src = dir(name);
    Path dst = parent.resolve(name);
    try (java.util.stream.Stream<Path> files = Files.list(src)) {
      Files.createDirectories(dst);
      for (Path f : (Iterable<Path>) files::iterator) {
        if (Files.isRegularFile(f)) {
          Files.copy(f, dst.resolve(f.getFileName().toString()), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        }
      }
    } catch (IOException e) {
      throw new UncheckedIOException("Cannot copy HF fixture " + name + " to " + dst, e);
    }
    return dst;
  }

  /** Rewrites {@code dir/config.json} with {@code edit} applied (e.g. {@code c -> c.put("model_type", "t5")}). */
  public static void editConfig(Path dir, java.util.function.Consumer<com.fasterxml.jackson.databind.node.ObjectNode> edit) {
    Path file = dir.resolve("config.json");
    ObjectMapper mapper = new ObjectMapper();
    try {
      com.fasterxml.jackson.databind.node.ObjectNode c =
          (com.fasterxml.jackson.databind.node.ObjectNode) mapper.readTree(Files.readString(file));
      edit.accept(c);
      Files.writeString(file, mapper.writerWithDefaultPrettyPrinter().writeValueAsString(c));
    } catch (IOException e) {
      throw new UncheckedIOException("Cannot edit " + file, e);
    }
  }

  /** Removes {@code tensor} from the checkpoint in {@code dir} (and from its shard index, when sharded). */
  public static void removeTensor(Path dir, String tensor) {
    rewriteTensor(dir, tensor, null);
    Path index = dir.resolve("model.safetensors.index.json");
    if (Files.exists(index)) {
      ObjectMapper mapper = new ObjectMapper();
      try {
        JsonNode idx = mapper.readTree(Files.readString(index));
        ((com.fasterxml.jackson.databind.node.ObjectNode) idx.get("weight_map")).remove(tensor);
        Files.writeString(index, mapper.writerWithDefaultPrettyPrinter().writeValueAsString(idx));
      } catch (IOException e) {
        throw new UncheckedIOException("Cannot edit " + index, e);
      }
    }
  }

  /** Keeps only the first {@code rows} entries of {@code tensor}'s first dimension, so its shape disagrees
   * with the config (the header and data stay a valid safetensors file). */
  public static void truncateRows(Path dir, String tensor, long rows) {
    rewriteTensor(dir, tensor, rows);
  }

  /** The safetensors file of {@code dir} that holds {@code tensor}. */
  public static Path fileOf(Path dir, String tensor) {
    Path index = dir.resolve("model.safetensors.index.json");
    try {
      if (Files.exists(index)) {
        JsonNode file = new ObjectMapper().readTree(Files.readString(index)).get("weight_map").get(tensor);
        if (file == null) {
          throw new IllegalArgumentException("No tensor " + tensor + " in " + index);
        }
        return dir.resolve(file.asText());
      }
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    return dir.resolve("model.safetensors");
  }

  /** Rewrites the file holding {@code tensor}: without it ({@code keepRows == null}) or with only its first
   * {@code keepRows} rows. */
  private static void rewriteTensor(Path dir, String tensor, Long keepRows) {
    Path file = fileOf(dir, tensor);
    ObjectMapper mapper = new ObjectMapper();
    try {
      byte[] bytes = Files.readAllBytes(file);
      long n = java.nio.ByteBuffer.wrap(bytes, 0, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
      int dataStart = 8 + (int) n;
      JsonNode header = mapper.readTree(new String(bytes, 8, (int) n, java.nio.charset.StandardCharsets.UTF_8));
      if (!header.has(tensor)) {
        throw new IllegalArgumentException("No tensor " + tensor + " in " + file);
      }
      com.fasterxml.jackson.databind.node.ObjectNode out = mapper.createObjectNode();
      java.io.ByteArrayOutputStream data = new java.io.ByteArrayOutputStream();
      for (java.util.Iterator<java.util.Map.Entry<String, JsonNode>> it = header.fields(); it.hasNext(); ) {
        java.util.Map.Entry<String, JsonNode> e = it.next();
        if (e.getKey().equals("__metadata__")) {
          out.set(e.getKey(), e.getValue());
          continue;
        }
        long begin = e.getValue().get("data_offsets").get(0).asLong();
        long end = e.getValue().get("data_offsets").get(1).asLong();
        com.fasterxml.jackson.databind.node.ArrayNode shape =
            (com.fasterxml.jackson.databind.node.ArrayNode) e.getValue().get("shape").deepCopy();
        if (e.getKey().equals(tensor)) {
          if (keepRows == null) {
            continue;
          }
          long rows = shape.get(0).asLong();
          end = begin + (end - begin) / rows * keepRows;
          shape.set(0, mapper.getNodeFactory().numberNode(keepRows));
        }
        com.fasterxml.jackson.databind.node.ObjectNode entry = mapper.createObjectNode();
        entry.put("dtype", e.getValue().get("dtype").asText());
        entry.set("shape", shape);
        entry.putArray("data_offsets").add(data.size()).add(data.size() + (end - begin));
        data.write(bytes, dataStart + (int) begin, (int) (end - begin));
        out.set(e.getKey(), entry);
      }
      byte[] h = mapper.writeValueAsString(out).getBytes(java.nio.charset.StandardCharsets.UTF_8);
      int padded = (h.length + 7) / 8 * 8;
      try (java.io.OutputStream o = Files.newOutputStream(file)) {
        o.write(java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(padded).array());
        o.write(h);
        o.write(" ".repeat(padded - h.length).getBytes(java.nio.charset.StandardCharsets.US_ASCII));
        data.writeTo(o);
      }
    } catch (IOException e) {
      throw new UncheckedIOException("Cannot rewrite " + file, e);
    }
  }

  /** {@code m} flattened row-major. */
  public static double[] flat(double[][] m) {
    int cols = m.length == 0 ? 0 : m[0].length;
    double[] out = new double[m.length * cols];
    for (int i = 0; i < m.length; i++) {
      System.arraycopy(m[i], 0, out, i * cols, cols);
    }
    return out;
  }

  private static List<int[]> intLists(JsonNode n) {
    List<int[]> out = new ArrayList<>();
    if (n != null) {
      n.forEach(x -> out.add(ints(x)));
    }
    return List.copyOf(out);
  }

  private static int[] ints(JsonNode n) {
    int[] out = new int[n.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = n.get(i).asInt();
    }
    return out;
  }

  private static double[] doubles(JsonNode n) {
    if (n == null || n.isNull()) {
      return null;
    }
    double[] out = new double[n.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = n.get(i).asDouble();
    }
    return out;
  }

  private static double[][] matrix(JsonNode n) {
    double[][] out = new double[n.size()][];
    for (int i = 0; i < out.length; i++) {
      out[i] = doubles(n.get(i));
    }
    return out;
  }
}
