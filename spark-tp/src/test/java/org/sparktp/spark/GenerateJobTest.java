package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.junit.jupiter.api.Test;
import org.sparktp.model.TextTokenizer;
import org.sparktp.testing.HfFixtures;

/** Stop strings and EOS ids of task generate, without Spark. */
class GenerateJobTest {

  @Test
  void aStopStringEndsTheRowOnceTheNewTextContainsIt() throws Exception {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    int[] tokens = f.greedy().get(2).tokens(); // 5 5 5 5 5 259
    String last;
    String before;
    try (TextTokenizer tok = TextTokenizer.open(new Path(f.dir().toString()), new Configuration(), 0, false)) {
      last = tok.decode(new int[] {tokens[5]}, true);
      before = tok.decode(java.util.Arrays.copyOf(tokens, 5), true);
    }
    assertThat(before).doesNotContain(last);
    try (GenerateJob.TextStop stop = new GenerateJob.TextStop(f.dir().toString(), List.of("never-there", last))) {
      for (int c = 1; c <= 5; c++) {
        assertThat(stop.stops(tokens, c)).as("after %d tokens", c).isFalse();
      }
      assertThat(stop.stops(tokens, 6)).isTrue();
    }
  }

  @Test
  void eosIdsComeFromConfigAndGenerationConfig() {
    assertThat(GenerateJob.eosIds(HfFixtures.dir("gpt2").toString(), new Configuration())).containsExactly(326);
    assertThat(GenerateJob.eosIds(HfFixtures.dir("llama").toString(), new Configuration())).containsExactly(2);
  }
}
