package org.sparktp.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.testing.HfFixtures;

/**
 * The Hugging Face tokenizer wrapper against the ids of tools/make_hf_fixtures.py's plain Python WordPiece
 * (BERT), byte-level BPE (GPT-2) and SentencePiece-style BPE with byte fallback (Mistral)
 * implementations of the same tokenizer.json files.
 */
class TextTokenizerTest {
  private static Path hadoopDir(String name) {
    return new Path(HfFixtures.dir(name).toUri());
  }

  @ParameterizedTest
  @ValueSource(strings = {"bert", "gpt2", "mistral"})
  void encodesTextsAsTheReferenceImplementation(String name) throws Exception {
    HfFixtures.Fixture f = HfFixtures.load(name);
    assertThat(f.texts()).hasSizeGreaterThan(4).hasSameSizeAs(f.textIds());
    try (TextTokenizer t = TextTokenizer.open(hadoopDir(name), new Configuration())) {
      for (int i = 0; i < f.texts().size(); i++) {
        assertThat(t.encode(f.texts().get(i))).as("ids of %s text %d %s", name, i, f.texts().get(i))
            .containsExactly(f.textIds().get(i));
      }
      int[][] batch = t.encode(f.texts());
      for (int i = 0; i < batch.length; i++) {
        assertThat(batch[i]).as("batch ids of %s text %d", name, i).containsExactly(f.textIds().get(i));
      }
    }
  }

  @ParameterizedTest
  @ValueSource(strings = {"bert", "gpt2", "mistral"})
  void truncatesKeepingSpecialTokens(String name) throws Exception {
    HfFixtures.Fixture f = HfFixtures.load(name);
    int max = f.truncateMaxLength();
    assertThat(max).isPositive();
    // at least one text is longer than the limit, so truncation is exercised
    assertThat(f.textIds()).anySatisfy(ids -> assertThat(ids.length).isGreaterThan(max));
    try (TextTokenizer t = TextTokenizer.open(hadoopDir(name), new Configuration(), max, true)) {
      assertThat(t.maxLength()).isEqualTo(max);
      for (int i = 0; i < f.texts().size(); i++) {
        assertThat(t.encode(f.texts().get(i))).as("truncated ids of %s text %d", name, i)
            .containsExactly(f.textIdsTruncated().get(i));
      }
    }
  }

  @Test
  void paddingAndTruncationInTheFileAreOverridden(@TempDir java.nio.file.Path dir) throws Exception {
    // sentence-transformers' tokenizer.json files often carry fixed padding and a truncation length; a row
    // must get neither (no pad ids in a ragged batch; truncation only when asked)
    com.fasterxml.jackson.databind.ObjectMapper mapper = new com.fasterxml.jackson.databind.ObjectMapper();
    com.fasterxml.jackson.databind.node.ObjectNode json = (com.fasterxml.jackson.databind.node.ObjectNode)
        mapper.readTree(HfFixtures.dir("bert").resolve("tokenizer.json").toFile());
    json.set("padding", mapper.readTree("{\"strategy\": {\"Fixed\": 20}, \"direction\": \"Right\", "
        + "\"pad_to_multiple_of\": null, \"pad_id\": 0, \"pad_type_id\": 0, \"pad_token\": \"[PAD]\"}"));
    json.set("truncation", mapper.readTree("{\"direction\": \"Right\", \"max_length\": 4, "
        + "\"strategy\": \"LongestFirst\", \"stride\": 0}"));
    Files.writeString(dir.resolve("tokenizer.json"), mapper.writeValueAsString(json));
    HfFixtures.Fixture f = HfFixtures.load("bert");
    try (TextTokenizer plain = TextTokenizer.open(new Path(dir.toUri()), new Configuration());
        TextTokenizer cut = TextTokenizer.open(new Path(dir.toUri()), new Configuration(), f.truncateMaxLength(), true)) {
      for (int i = 0; i < f.texts().size(); i++) {
        assertThat(plain.encode(f.texts().get(i))).as("text %d", i).containsExactly(f.textIds().get(i));
        assertThat(cut.encode(f.texts().get(i))).as("text %d", i).containsExactly(f.textIdsTruncated().get(i));
      }
    }
  }

  @Test
  void withoutSpecialTokensBertHasNoClsOrSep() throws Exception {
    HfFixtures.Fixture f = HfFixtures.load("bert");
    try (TextTokenizer t = TextTokenizer.open(hadoopDir("bert"), new Configuration(), 0, false)) {
      int[] full = f.textIds().get(0);
      assertThat(t.encode(f.texts().get(0))).containsExactly(java.util.Arrays.copyOfRange(full, 1, full.length - 1));
    }
  }

  @Test
  void decodesIdsBackToText() throws Exception {
    HfFixtures.Fixture gpt2 = HfFixtures.load("gpt2");
    HfFixtures.Fixture bert = HfFixtures.load("bert");
    try (TextTokenizer g = TextTokenizer.open(hadoopDir("gpt2"), new Configuration());
        TextTokenizer b = TextTokenizer.open(hadoopDir("bert"), new Configuration())) {
      // byte-level BPE is lossless: every reference text comes back exactly, special token included
      for (int i = 0; i < gpt2.texts().size(); i++) {
        assertThat(g.decode(gpt2.textIds().get(i), false)).as("gpt2 text %d", i).isEqualTo(gpt2.texts().get(i));
      }
      assertThat(g.decode(gpt2.textIds().get(6), true)).isEqualTo("ab");
      // SentencePiece-style BPE with byte fallback is lossless too (the decoder drops the prepended space)
      HfFixtures.Fixture mistral = HfFixtures.load("mistral");
      try (TextTokenizer m = TextTokenizer.open(hadoopDir("mistral"), new Configuration())) {
        for (int i = 0; i < mistral.texts().size(); i++) {
          assertThat(m.decode(mistral.textIds().get(i), true)).as("mistral text %d", i)
              .isEqualTo(mistral.texts().get(i));
        }
      }
      // WordPiece: lower-cased, accents stripped, ## pieces joined, special tokens skipped (':' is not in
      // the fixture's vocabulary, so it became [UNK], a special token too)
      assertThat(b.decode(bert.textIds().get(3), true)).isEqualTo("cafe deja vu hugging face tokenizers");
      assertThat(b.decode(bert.textIds().get(3), false))
          .isEqualTo("[CLS] cafe deja vu [UNK] hugging face tokenizers [SEP]");
    }
  }

  @Test
  void anEmptyTextHasOnlyTheSpecialTokens() throws Exception {
    try (TextTokenizer gpt2 = TextTokenizer.open(hadoopDir("gpt2"), new Configuration());
        TextTokenizer bert = TextTokenizer.open(hadoopDir("bert"), new Configuration())) {
      assertThat(gpt2.encode("")).isEmpty();
      assertThat(bert.encode("")).containsExactly(2, 3); // [CLS] [SEP]
    }
  }

  @Test
  void encodesFromSeveralThreadsAtOnce() throws Exception {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    try (TextTokenizer t = TextTokenizer.open(hadoopDir("gpt2"), new Configuration())) {
      java.util.concurrent.ExecutorService pool = java.util.concurrent.Executors.newFixedThreadPool(4);
      try {
        List<java.util.concurrent.Future<Boolean>> results = new java.util.ArrayList<>();
        for (int k = 0; k < 16; k++) {
          results.add(pool.submit(() -> {
            for (int r = 0; r < 20; r++) {
              for (int i = 0; i < f.texts().size(); i++) {
                if (!java.util.Arrays.equals(t.encode(f.texts().get(i)), f.textIds().get(i))) {
                  return false;
                }
              }
            }
            return true;
          }));
        }
        for (java.util.concurrent.Future<Boolean> r : results) {
          assertThat(r.get()).isTrue();
        }
      } finally {
        pool.shutdownNow();
      }
    }
  }

  @Test
  void readsTheFileThroughHadoopFileSystem() throws Exception {
    java.nio.file.Path file = HfFixtures.dir("gpt2").resolve("tokenizer.json");
    CountingFileSystem.reset();
    Path counted = new Path("counting://" + file.getParent().toAbsolutePath());
    try (TextTokenizer t = TextTokenizer.open(counted, CountingFileSystem.conf())) {
      assertThat(t.path().getName()).isEqualTo("tokenizer.json");
      assertThat(t.encode("Hello world")).containsExactly(HfFixtures.load("gpt2").textIds().get(0));
    }
    assertThat(CountingFileSystem.BYTES.get()).isEqualTo(Files.size(file));
  }

  @Test
  void opensAFileAsWellAsADirectory() throws Exception {
    Path file = new Path(hadoopDir("bert"), "tokenizer.json");
    try (TextTokenizer t = TextTokenizer.open(file, new Configuration())) {
      assertThat(t.encode("Hello, world!")).containsExactly(HfFixtures.load("bert").textIds().get(0));
    }
  }

  @Test
  void aMissingTokenizerSaysWhatToAdd(@TempDir java.nio.file.Path dir) throws Exception {
    Configuration conf = new Configuration();
    assertThat(TextTokenizer.exists(new Path(dir.toUri()), conf)).isFalse();
    assertThat(TextTokenizer.exists(hadoopDir("bert"), conf)).isTrue();
    assertThatThrownBy(() -> TextTokenizer.open(new Path(dir.toUri()), conf))
        .isInstanceOf(ModelFormatException.class)
        .hasMessageContaining("No tokenizer at " + new Path(new Path(dir.toUri()), "tokenizer.json"))
        .hasMessageContaining("give token ids");
  }

  @Test
  void aFileThatIsNotJsonIsAClearError(@TempDir java.nio.file.Path dir) throws Exception {
    java.nio.file.Path file = dir.resolve("tokenizer.json");
    Files.writeString(file, "{\"version\": \"1.0\", \"model\": ", StandardCharsets.UTF_8);
    assertThatThrownBy(() -> TextTokenizer.open(new Path(dir.toUri()), new Configuration()))
        .isInstanceOf(ModelFormatException.class)
        .hasMessageStartingWith("Invalid tokenizer file " + new Path(file.toUri()) + ": ")
        .hasMessageContaining("EOF while parsing a value at line 1 column 28")
        .hasMessageContaining("It must be a Hugging Face tokenizers JSON file");
  }

  @Test
  void aJsonFileThatIsNotATokenizerIsAClearError(@TempDir java.nio.file.Path dir) throws Exception {
    java.nio.file.Path file = dir.resolve("tokenizer.json");
    Files.writeString(file, "{\"model\": {\"type\": \"NoSuchModel\"}}", StandardCharsets.UTF_8);
    assertThatThrownBy(() -> TextTokenizer.open(new Path(dir.toUri()), new Configuration()))
        .isInstanceOf(ModelFormatException.class)
        .hasMessageStartingWith("Invalid tokenizer file " + new Path(file.toUri()) + ": ");
  }

  @Test
  void closeIsIdempotentAndEncodeAfterCloseFails() throws Exception {
    TextTokenizer t = TextTokenizer.open(hadoopDir("bert"), new Configuration());
    t.close();
    t.close();
    assertThatThrownBy(() -> t.encode("hello")).isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("is closed");
    assertThatThrownBy(() -> t.encode(List.of("hello"))).isInstanceOf(IllegalStateException.class)
        .hasMessageContaining("is closed");
  }

  @Test
  void aNegativeMaxLengthIsRejected() {
    assertThatThrownBy(() -> TextTokenizer.open(hadoopDir("bert"), new Configuration(), -1, true))
        .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("got -1");
  }
}
