package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.types.DataTypes;
import org.junit.jupiter.api.Test;
import org.sparktp.model.TextTokenizer;
import org.sparktp.testing.HfFixtures;

/**
 * Task generate on a DataFrame (the engine is tested in-process by GenerateTest): greedy output of the
 * gpt2 fixture against the float64 reference's greedy tokens, after a rank failed the first attempt (the
 * stage is retried whole), with the text of the new tokens and the finish reason; a prompt that leaves no
 * room for maxNewTokens fails naming the row before any rank runs.
 */
class GenerateSparkTest extends SparkTestBase {

  @Test
  void greedyGenerationRetriedAfterAFailedRankEqualsTheReference() throws Exception {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    int n = f.greedy().size();
    int[][] prompts = new int[n][];
    for (int i = 0; i < n; i++) {
      prompts[i] = f.greedy().get(i).prompt();
    }
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids").setTpSize(2)
        .setTask("generate").setMaxNewTokens(6).setConf("spark.tp.test.fail-rank", "1");
    Dataset<Row> out = m.transform(HfSparkTest.idsFrame(prompts, false));
    assertThat(out.columns()).containsExactly("id", "ids", "generated_ids", "generated_text", "finish_reason");
    assertThat(out.schema().apply("generated_ids").dataType())
        .isEqualTo(DataTypes.createArrayType(DataTypes.IntegerType, false));
    List<Row> rows = out.collectAsList();
    assertThat(rows).hasSize(n);
    try (TextTokenizer tok = TextTokenizer.open(new org.apache.hadoop.fs.Path(f.dir().toString()),
        new Configuration(), 0, false)) {
      for (Row r : rows) {
        int[] want = f.greedy().get(r.getInt(0)).tokens();
        List<Integer> got = r.getList(2);
        List<Integer> w = new ArrayList<>();
        for (int t : want) {
          w.add(t);
        }
        assertThat(got).as("row %d", r.getInt(0)).isEqualTo(w);
        assertThat(r.getString(3)).isEqualTo(tok.decode(want));
        assertThat(r.getString(4)).isEqualTo("length");
      }
    }
    assertThat(m.lastMetrics().newTokens()).isGreaterThanOrEqualTo(6L * n);
  }

  @Test
  void aPromptWithoutRoomForMaxNewTokensFailsNamingTheRow() {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids").setTpSize(2)
        .setTask("generate").setMaxNewTokens(6);
    assertThatThrownBy(() -> m.transform(HfSparkTest.idsFrame(new int[][] {{1, 2}, new int[30]}, false).coalesce(1))
        .collect())
        .hasMessageContaining("Column 'ids': row 1 of input partition 0 has 30 tokens, more than 26 (the model's "
            + "max_position_embeddings 32 minus maxNewTokens 6); shorten it or set spark.tp.truncate=true");
  }
}
