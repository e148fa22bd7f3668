package org.sparktp.model.hf;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.ObjectInputStream;
import java.io.ObjectOutputStream;
import java.nio.file.Files;
import java.time.Clock;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Chat templates rendered on the JVM equal real jinja2's rendering as transformers configures it: the cases of
 * {@code chat/cases.json} (templates written for these tests, rendered by {@code tools/make_chat_template_cases.py}
 * with Debian's python3-jinja2) use namespace(), messages[::-1], slices, `is string`, str methods, loop controls,
 * tojson, strftime_now and raise_exception. The output must be equal to the character.
 */
class ChatTemplateTest {
  static final ObjectMapper JSON = new ObjectMapper();
  static final Clock NOW = Clock.fixed(LocalDateTime.parse("2026-03-05T14:07:09").toInstant(ZoneOffset.UTC),
      ZoneOffset.UTC);

  static Stream<Arguments> cases() throws Exception {
    JsonNode root = JSON.readTree(ChatTemplateTest.class.getResource("/chat/cases.json"));
    List<Arguments> out = new ArrayList<>();
    for (JsonNode c : root.get("cases")) {
      out.add(Arguments.of(c.get("name").asText(), c));
    }
    return out.stream();
  }

  @SuppressWarnings("unchecked")
  @ParameterizedTest(name = "{0}")
  @MethodSource("cases")
  void rendersAsJinja2Does(String name, JsonNode c) {
    ChatTemplate t = new ChatTemplate("test-model", c.get("template").asText(),
        JSON.convertValue(c.get("special_tokens"), Map.class)).withClock(NOW);
    List<Map<String, Object>> messages = JSON.convertValue(c.get("messages"), List.class);
    Map<String, Object> extra = JSON.convertValue(c.get("extra"), Map.class);
    boolean gen = c.get("add_generation_prompt").asBoolean();
    if (c.has("error")) {
      assertThatThrownBy(() -> t.renderMaps(messages, gen, extra)).isInstanceOf(ChatTemplateException.class)
          .hasMessage("The chat template of test-model raised: " + c.get("error").asText());
    } else {
      assertThat(t.renderMaps(messages, gen, extra)).as(name).isEqualTo(c.get("expected").asText());
    }
  }

  @Test
  void chatMessagesRenderAsMappingsDo() throws Exception {
    JsonNode c = cases().map(a -> (JsonNode) a.get()[1]).filter(n -> n.get("name").asText().equals(
        "thinking: thinking off")).findFirst().orElseThrow();
    List<ChatMessage> ms = new ArrayList<>();
    for (JsonNode m : c.get("messages")) {
      ms.add(new ChatMessage(m.get("role").asText(), m.get("content").asText()));
    }
    ChatTemplate t = new ChatTemplate("m", c.get("template").asText(), Map.of());
    assertThat(t.render(ms, true, Map.of("enable_thinking", false))).isEqualTo(c.get("expected").asText());
  }

  @Test
  void kwargsGivenAsJsonBecomeJinjaValues() throws Exception {
    JsonNode c = cases().map(a -> (JsonNode) a.get()[1]).filter(n -> n.get("name").asText().equals(
        "kwargs: thinking off, a list and a mapping")).findFirst().orElseThrow();
    ChatTemplate t = new ChatTemplate("m", c.get("template").asText(), Map.of());
    List<ChatMessage> hi = List.of(new ChatMessage("user", "Hi"));
    Map<String, Object> vars = ChatTemplate.parseKwargs("{\"enable_thinking\": false, \"tags\": [\"math\", 3, 2.5], "
        + "\"limits\": {\"max\": 64, \"ratio\": 0.5, \"name\": \"short\"}}", "opt");
    String expected = "<user>Hi\ntags: math, 3, 2.5 (3)\nmax: 64, ratio: 0.5, name: short\n<assistant>\n<think></think>\n";
    assertThat(c.get("expected").asText()).as("jinja2's rendering").isEqualTo(expected);
    assertThat(t.render(hi, true, vars)).as("from JSON").isEqualTo(expected);
    assertThat(t.render(hi, true, ChatTemplate.parseKwargs("{\"enable_thinking\": true}", "opt")))
        .isEqualTo("<user>Hi\n<assistant>\n");
    assertThat(t.render(hi, false, ChatTemplate.parseKwargs(" ", "opt"))).isEqualTo("<user>Hi\n");
  }

  @Test
  void kwargsThatAreNotAJsonObjectAreOneClearLine() {
    assertThatThrownBy(() -> ChatTemplate.parseKwargs("{enable_thinking: false}", "--chat-template-kwargs"))
        .isInstanceOf(IllegalArgumentException.class).hasMessageStartingWith("--chat-template-kwargs is not valid JSON (")
        .hasMessageEndingWith("; give a JSON object of template variables such as '{\"enable_thinking\": false}',"
            + " got '{enable_thinking: false}'").satisfies(e -> assertThat(e.getMessage()).doesNotContain("\n"));
    assertThatThrownBy(() -> ChatTemplate.parseKwargs("[1, 2]", "opt")).hasMessage("opt must be a JSON object, got a"
        + " JSON array; give a JSON object of template variables such as '{\"enable_thinking\": false}'");
    assertThatThrownBy(() -> ChatTemplate.parseKwargs("{\"messages\": []}", "opt")).hasMessage("opt sets 'messages',"
        + " which is the conversation itself; drop that key");
  }

  @Test
  void loadsTheNamedTemplateAndTheSpecialTokensOfADirectory(@TempDir java.nio.file.Path dir) throws Exception {
    Files.writeString(dir.resolve(ChatTemplate.CONFIG_FILE), """
        {"bos_token": {"content": "<B>", "lstrip": false, "__type": "AddedToken"}, "eos_token": "<E>",
         "chat_template": [{"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}{{ eos_token }}"},
                           {"name": "tool_use", "template": "T{{ messages|length }}"}]}
        """);
    Path p = new Path(dir.toUri());
    Configuration conf = new Configuration();
    List<ChatMessage> ms = List.of(new ChatMessage("user", "a"), new ChatMessage("assistant", "b"));
    assertThat(ChatTemplate.exists(p, conf)).isTrue();
    assertThat(ChatTemplate.load(p, conf).render(ms, false, null)).isEqualTo("<B>ab<E>");
    assertThat(ChatTemplate.load(p, conf, "tool_use").render(ms, false, null)).isEqualTo("T2");
    assertThatThrownBy(() -> ChatTemplate.load(p, conf, "rag")).hasMessageContaining(
        "has no chat template named 'rag'; it has [default, tool_use]");
    Files.writeString(dir.resolve(ChatTemplate.TEMPLATE_FILE), "J{{ messages[0].content }}{{ eos_token }}");
    ChatTemplate file = ChatTemplate.load(p, conf);
    assertThat(file.render(ms, false, null)).isEqualTo("Ja<E>");
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try (ObjectOutputStream out = new ObjectOutputStream(bytes)) {
      out.writeObject(file);
    }
    try (ObjectInputStream in = new ObjectInputStream(new ByteArrayInputStream(bytes.toByteArray()))) {
      assertThat(((ChatTemplate) in.readObject()).render(ms, false, null)).isEqualTo("Ja<E>");
    }
  }

  @Test
  void aDirectoryWithoutATemplateOrABrokenTemplateIsOneClearError(@TempDir java.nio.file.Path dir) throws Exception {
    Files.writeString(dir.resolve(ChatTemplate.CONFIG_FILE), "{\"eos_token\": \"</s>\"}");
    Path p = new Path(dir.toUri());
    assertThat(ChatTemplate.exists(p, new Configuration())).isFalse();
    assertThatThrownBy(() -> ChatTemplate.load(p, new Configuration())).hasMessage("The model in " + p
        + " has no chat template (no chat_template.jinja, no 'chat_template' in tokenizer_config.json): give the "
        + "prompt as text, or add a chat template");
    ChatTemplate bad = new ChatTemplate("m", "{% for m in messages %}{{ m.content }}", Map.of());
    assertThatThrownBy(() -> bad.render(List.of(new ChatMessage("user", "x")), false, null))
        .isInstanceOf(ChatTemplateException.class).hasMessageStartingWith("The chat template of m failed");
  }

  @Test
  void pythonFloatsAndStringMethodsFollowPython() {
    assertThat(PythonIsms.pyFloat(0.5)).isEqualTo("0.5");
    assertThat(PythonIsms.pyFloat(1.0)).isEqualTo("1.0");
    assertThat(PythonIsms.pyFloat(1e-5)).isEqualTo("1e-05");
    assertThat(PythonIsms.pyFloat(1.5e16)).isEqualTo("1.5e+16");
    assertThat(PythonIsms.pyFloat(123456.789)).isEqualTo("123456.789");
    assertThat(PythonIsms.split("a,,b", ",", -1)).containsExactly("a", "", "b");
    assertThat(PythonIsms.split("  a  b ", null, -1)).containsExactly("a", "b");
    assertThat(PythonIsms.split("a b c", null, 1)).containsExactly("a", "b c");
    assertThat(PythonIsms.split("a:b:c", ":", 1)).containsExactly("a", "b:c");
    assertThat(PythonIsms.lstrip("\n\nx\n", "\n")).isEqualTo("x\n");
    assertThat(PythonIsms.call("abc", "startswith", new Object[] {List.of("x", "ab")})).isEqualTo(true);
  }
}
