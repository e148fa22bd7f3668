package org.sparktp.model.hf;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.hubspot.jinjava.Jinjava;
import com.hubspot.jinjava.JinjavaConfig;
import com.hubspot.jinjava.LegacyOverrides;
import com.hubspot.jinjava.el.JinjavaInterpreterResolver;
import com.hubspot.jinjava.interpret.RenderResult;
import com.hubspot.jinjava.interpret.TemplateError;
import com.hubspot.jinjava.lib.fn.ELFunctionDefinition;
import java.io.IOException;
import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.ZonedDateTime;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import jinjava.javax.el.CompositeELResolver;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataInputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparktp.model.ModelFormatException;

/**
 * A model's chat template, rendered as {@code transformers}' {@code apply_chat_template} renders it:
 *
 * <pre>{@code
 * ChatTemplate t = ChatTemplate.load(new Path("hdfs:///models/qwen3"), new Configuration());
 * String prompt = t.render(List.of(new ChatMessage("system", "Be brief."), new ChatMessage("user", "Hi")),
 *     true, Map.of("enable_thinking", false));
 * }</pre>
 *
 * <p>The template is {@code chat_template.jinja} where the directory has one (newer {@code save_pretrained}),
 * else {@code tokenizer_config.json}'s {@code chat_template}: a string, or a list of {@code {name, template}}
 * (the one named {@code default} unless a name is given). It sees what {@code transformers} passes:
 * {@code messages} (mappings with {@code role} and {@code content}), {@code add_generation_prompt},
 * {@code tools} and {@code documents} (none), the tokenizer's special tokens ({@code bos_token},
 * {@code eos_token}, ...), and the caller's extra variables; and, as in transformers' sandbox,
 * {@code raise_exception(msg)}, {@code strftime_now(format)} and a {@code tojson} filter that writes Python's
 * {@code json.dumps}. Jinja's {@code trim_blocks}, {@code lstrip_blocks} and loop controls are on.
 *
 * <p>It runs on HubSpot's jinjava, plus what published templates take from Python that jinjava lacks
 * ({@link PythonIsms}: {@code .startswith}, {@code .strip()}, {@code .split}, ... on strings; {@code [::-1]}).
 * A template that raises, does not parse, or fails is a {@link ChatTemplateException} naming the model.
 * Instances are serializable (the engine is rebuilt where it is used) and may render from several threads.
 */
public final class ChatTemplate implements Serializable {
  private static final long serialVersionUID = 1L;

  /** The template file newer {@code transformers} versions write. */
  public static final String TEMPLATE_FILE = "chat_template.jinja";
  /** The tokenizer settings file holding {@code chat_template} and the special tokens. */
  public static final String CONFIG_FILE = "tokenizer_config.json";

  private static final List<String> SPECIAL = List.of("bos_token", "eos_token", "unk_token", "sep_token",
      "pad_token", "cls_token", "mask_token");

  private final String model;
  private final String source;
  private final Map<String, Object> tokens;
  private transient volatile Jinjava jinjava;
  private transient Clock clock = Clock.systemDefaultZone();

  /**
   * A template from its source text. {@code model} names where it came from in errors; {@code tokens} are the
   * special tokens the template sees ({@code bos_token} -> {@code "<s>"}, ...).
   */
  public ChatTemplate(String model, String source, Map<String, ?> tokens) {
    if (source == null || source.isBlank()) {
      throw new IllegalArgumentException("The chat template of " + model + " is empty");
    }
    this.model = model;
    this.source = source;
    this.tokens = new LinkedHashMap<>(tokens);
  }

  /** True when {@code dir} has a chat template ({@link #TEMPLATE_FILE}, or {@code chat_template} in {@link #CONFIG_FILE}). */
  public static boolean exists(Path dir, Configuration conf) throws IOException {
    FileSystem fs = dir.getFileSystem(conf);
    if (fs.exists(new Path(dir, TEMPLATE_FILE))) {
      return true;
    }
    Path cfg = new Path(dir, CONFIG_FILE);
    return fs.exists(cfg) && readJson(fs, cfg).hasNonNull("chat_template");
  }

  /** The default template of the model directory {@code dir}. */
  public static ChatTemplate load(Path dir, Configuration conf) throws IOException {
    return load(dir, conf, null);
  }

  /**
   * The template named {@code name} (null: {@code default}, or the only one) of the model directory {@code dir}.
   * A directory without one is an error saying which files were looked at.
   */
  public static ChatTemplate load(Path dir, Configuration conf, String name) throws IOException {
    FileSystem fs = dir.getFileSystem(conf);
    Path cfgPath = new Path(dir, CONFIG_FILE);
    JsonNode cfg = fs.exists(cfgPath) ? readJson(fs, cfgPath) : new ObjectMapper().createObjectNode();
    Map<String, Object> tokens = specialTokens(cfg);
    Path stm = new Path(dir, "special_tokens_map.json");
    if (fs.exists(stm)) {
      specialTokens(readJson(fs, stm)).forEach(tokens::putIfAbsent);
    }
    Path file = new Path(dir, TEMPLATE_FILE);
    if (fs.exists(file) && name == null) {
      return new ChatTemplate(dir.toString(), readText(fs, file), tokens);
    }
    JsonNode t = cfg.get("chat_template");
    if (t == null || t.isNull()) {
      throw new ModelFormatException("The model in " + dir + " has no chat template (no " + TEMPLATE_FILE
          + ", no 'chat_template' in " + CONFIG_FILE + "): give the prompt as text, or add a chat template");
    }
    if (t.isTextual()) {
      if (name != null && !name.equals("default")) {
        throw new ModelFormatException(cfgPath + " has one chat template, not one named '" + name + "'");
      }
      return new ChatTemplate(dir.toString(), t.asText(), tokens);
    }
    Map<String, String> named = new LinkedHashMap<>();
    for (JsonNode e : t) {
      named.put(e.path("name").asText(), e.path("template").asText());
    }
    String want = name != null ? name : named.size() == 1 ? named.keySet().iterator().next() : "default";
    String src = named.get(want);
    if (src == null) {
      throw new ModelFormatException(cfgPath + " has no chat template named '" + want + "'; it has "
          + named.keySet());
    }
    return new ChatTemplate(dir + " (template '" + want + "')", src, tokens);
  }

  private static Map<String, Object> specialTokens(JsonNode cfg) {
    Map<String, Object> out = new LinkedHashMap<>();
    for (String k : SPECIAL) {
      JsonNode v = cfg.get(k);
      if (v != null && v.isTextual()) {
        out.put(k, v.asText());
      } else if (v != null && v.has("content")) { // an AddedToken: {"content": "<s>", "lstrip": false, ...}
        out.put(k, v.get("content").asText());
      }
    }
    JsonNode extra = cfg.get("additional_special_tokens");
    if (extra != null && extra.isArray()) {
      List<String> xs = new ArrayList<>();
      extra.forEach(x -> xs.add(x.isTextual() ? x.asText() : x.path("content").asText()));
      out.put("additional_special_tokens", xs);
    }
    return out;
  }

  private static JsonNode readJson(FileSystem fs, Path p) throws IOException {
    try {
      return new ObjectMapper().readTree(readText(fs, p));
    } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new ModelFormatException("Invalid " + p + ": not valid JSON: " + e.getOriginalMessage(), e);
    }
  }

  private static String readText(FileSystem fs, Path p) throws IOException {
    try (FSDataInputStream in = fs.open(p)) {
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    }
  }

  /**
   * The extra template variables of {@code json}, a JSON object ({@code {"enable_thinking": false, "tools": [...]}}),
   * as {@code apply_chat_template(..., **kwargs)} takes them: JSON's true/false, numbers, strings, null, arrays and
   * objects become the matching Jinja values. Null or blank: none. Invalid JSON, a value that is not an object, or
   * the key {@code messages} is an {@link IllegalArgumentException} naming {@code option} (where the JSON was given).
   */
  public static Map<String, Object> parseKwargs(String json, String option) {
    if (json == null || json.isBlank()) {
      return Map.of();
    }
    String fix = "; give a JSON object of template variables such as '{\"enable_thinking\": false}'";
    JsonNode node;
    try {
      node = new ObjectMapper().readTree(json);
    } catch (com.fasterxml.jackson.core.JsonProcessingException e) {
      throw new IllegalArgumentException(option + " is not valid JSON (" + e.getOriginalMessage().lines().findFirst()
          .orElse("") + ")" + fix + ", got '" + json + "'", e);
    }
    if (node == null || !node.isObject()) {
      throw new IllegalArgumentException(option + " must be a JSON object, got " + (node == null ? "nothing"
          : "a JSON " + node.getNodeType().name().toLowerCase(java.util.Locale.ROOT)) + fix);
    }
    if (node.has("messages")) {
      throw new IllegalArgumentException(option + " sets 'messages', which is the conversation itself; drop that key");
    }
    @SuppressWarnings("unchecked")
    Map<String, Object> out = new ObjectMapper().convertValue(node, LinkedHashMap.class);
    return out;
  }

  /** The template's source text. */
  public String source() {
    return source;
  }

  /** The special tokens the template sees. */
  public Map<String, Object> specialTokens() {
    return Map.copyOf(tokens);
  }

  /** Sets the clock {@code strftime_now} reads (tests); returns this. */
  ChatTemplate withClock(Clock c) {
    this.clock = c;
    return this;
  }

  /**
   * The prompt for {@code messages}: the template rendered with {@code add_generation_prompt} and
   * {@code extra} (more template variables, e.g. {@code enable_thinking}; they win over the special tokens).
   */
  public String render(List<ChatMessage> messages, boolean addGenerationPrompt, Map<String, ?> extra) {
    List<Map<String, Object>> ms = new ArrayList<>(messages.size());
    for (ChatMessage m : messages) {
      Map<String, Object> x = new LinkedHashMap<>();
      x.put("role", m.role());
      x.put("content", m.content());
      ms.add(x);
    }
    return renderMaps(ms, addGenerationPrompt, extra);
  }

  /** As {@link #render}, for messages given as mappings (JSON objects with more keys than role and content). */
  public String renderMaps(List<? extends Map<String, ?>> messages, boolean addGenerationPrompt,
      Map<String, ?> extra) {
    Map<String, Object> vars = new HashMap<>(tokens);
    vars.put("messages", messages);
    vars.put("add_generation_prompt", addGenerationPrompt);
    vars.put("tools", null);
    vars.put("documents", null);
    if (extra != null) {
      vars.putAll(extra);
    }
    Call call = new Call(clock == null ? Clock.systemDefaultZone() : clock);
    Call outer = CALL.get();
    CALL.set(call);
    RenderResult r;
    try {
      r = engine().renderForResult(PythonIsms.rewrite(source), vars);
    } catch (RuntimeException e) {
      throw new ChatTemplateException("The chat template of " + model + " failed: " + e.getMessage());
    } finally {
      CALL.set(outer);
    }
    if (call.raised != null) {
      throw new ChatTemplateException("The chat template of " + model + " raised: " + call.raised);
    }
    for (TemplateError e : r.getErrors()) {
      if (e.getSeverity() == TemplateError.ErrorType.FATAL) {
        throw new ChatTemplateException("The chat template of " + model + " failed at line " + e.getLineno() + ": "
            + e.getMessage());
      }
    }
    return r.getOutput();
  }

  /** What one render's {@code raise_exception} and {@code strftime_now} see. */
  private static final class Call {
    final Clock clock;
    String raised;

    Call(Clock clock) {
      this.clock = clock;
    }
  }

  private static final ThreadLocal<Call> CALL = new ThreadLocal<>();

  /** {@code raise_exception(msg)}: ends the render with {@code msg} (jinjava records errors and goes on). */
  public static String raiseException(Object message) {
    Call c = CALL.get();
    String msg = String.valueOf(message);
    if (c != null && c.raised == null) {
      c.raised = msg;
    }
    throw new IllegalStateException(msg);
  }

  /** {@code strftime_now(format)}: the render's time in Python's {@code strftime} codes. */
  public static String strftimeNow(String format) {
    Call c = CALL.get();
    return PythonIsms.strftime(ZonedDateTime.now(c == null ? Clock.systemDefaultZone() : c.clock), format);
  }

  private Jinjava engine() {
    Jinjava j = jinjava;
    if (j == null) {
      synchronized (this) {
        if (jinjava == null) {
          CompositeELResolver el = new CompositeELResolver();
          el.add(new PythonIsms.StringMethods());
          el.add(JinjavaInterpreterResolver.DEFAULT_RESOLVER_READ_ONLY);
          // Jinja2's behaviour where jinjava keeps its legacy one: {{- -}} trims, Python's operator precedence,
          // dict keys are expressions, none kept in loops
          LegacyOverrides jinja2 = LegacyOverrides.newBuilder().withUseTrimmingForNotesAndExpressions(true)
              .withParseWhitespaceControlStrictly(true).withUseNaturalOperatorPrecedence(true)
              .withEvaluateMapKeys(true).withKeepNullableLoopValues(true).build();
          j = new Jinjava(JinjavaConfig.newBuilder().withTrimBlocks(true).withLstripBlocks(true)
              .withLegacyOverrides(jinja2).withElResolver(el).withFailOnUnknownTokens(false).build());
          j.getGlobalContext().registerFunction(new ELFunctionDefinition("", "raise_exception", ChatTemplate.class,
              "raiseException", Object.class));
          j.getGlobalContext().registerFunction(new ELFunctionDefinition("", "strftime_now", ChatTemplate.class,
              "strftimeNow", String.class));
          j.getGlobalContext().registerFilter(new PythonIsms.ToJson());
          jinjava = j;
        }
        j = jinjava;
      }
    }
    return j;
  }

  @Override
  public String toString() {
    Iterator<String> lines = source.lines().iterator();
    return "ChatTemplate(" + model + ": " + (lines.hasNext() ? lines.next() : "") + " ...)";
  }
}
