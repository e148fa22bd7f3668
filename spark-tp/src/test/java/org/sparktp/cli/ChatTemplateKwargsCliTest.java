package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.testing.HfFixtures;

/** {@code infer --chat-template-kwargs} that is not a JSON object is one usage line before Spark starts. */
class ChatTemplateKwargsCliTest {
  @TempDir
  static Path tmp;

  @Test
  void kwargsThatAreNotAJsonObjectAreAUsageError() {
    String gpt2 = HfFixtures.dir("gpt2").toString();
    String in = HfFixtures.dir("gpt2").resolve("reference.json").toString();
    String out = tmp.resolve("gen-out").toString();
    CliTest.Run r = CliTest.cli("infer", "--model", gpt2, "--input", in, "--output", out, "--task", "generate",
        "--chat-template-kwargs", "{\"enable_thinking\": False}");
    assertThat(r.code()).isEqualTo(2);
    assertThat(r.err()).startsWith("spark-tp: error: --chat-template-kwargs is not valid JSON (").contains("; give a"
        + " JSON object of template variables such as '{\"enable_thinking\": false}', got '{\"enable_thinking\": False}'\n");
    r = CliTest.cli("infer", "--model", gpt2, "--input", in, "--output", out, "--chat-template-kwargs", "\"x\"");
    assertThat(r.code()).isEqualTo(2);
    assertThat(r.err()).startsWith("spark-tp: error: --chat-template-kwargs must be a JSON object, got a JSON string;"
        + " give a JSON object of template variables such as '{\"enable_thinking\": false}'\n");
  }
}
