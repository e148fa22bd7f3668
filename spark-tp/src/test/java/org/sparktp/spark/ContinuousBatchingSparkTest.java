package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.junit.jupiter.api.Test;
import org.sparktp.testing.HfFixtures;

/**
 * Issue 21, continuous batching across micro-batches in a barrier task: with {@code spark.tp.batch-size} 2 (a rank
 * submits its next 2 rows before the group finishes the 2 before) the gpt2 fixture's rows, null prompts among them,
 * come back as with one micro-batch per partition: the same rows in the same order, the float64 reference's greedy
 * tokens (a prompt {@code P + T[0..k)} continues with {@code T[k..]}), null outputs for the null prompts.
 */
class ContinuousBatchingSparkTest extends SparkTestBase {

  @Test
  void smallMicroBatchesGiveTheSameRowsInTheSameOrderAsOne() {
    HfFixtures.Fixture f = HfFixtures.load("gpt2");
    int maxNew = 3;
    List<int[]> prompts = new ArrayList<>();
    List<int[]> want = new ArrayList<>();
    for (int k = 0; k <= 3; k++) {
      for (HfFixtures.Greedy g : f.greedy()) {
        int[] p = Arrays.copyOf(g.prompt(), g.prompt().length + k);
        System.arraycopy(g.tokens(), 0, p, g.prompt().length, k);
        prompts.add(p);
        want.add(Arrays.copyOfRange(g.tokens(), k, k + maxNew));
        if (prompts.size() % 4 == 1) {
          prompts.add(null); // a null prompt: null outputs, in its place
          want.add(null);
        }
      }
    }
    StructType schema = new StructType().add("id", DataTypes.IntegerType)
        .add("ids", DataTypes.createArrayType(DataTypes.IntegerType, false));
    List<Row> data = new ArrayList<>();
    for (int i = 0; i < prompts.size(); i++) {
      data.add(RowFactory.create(i, prompts.get(i) == null ? null : Arrays.stream(prompts.get(i)).boxed().toArray()));
    }
    Dataset<Row> in = spark.createDataFrame(data, schema).coalesce(2);
    List<List<Row>> runs = new ArrayList<>();
    for (String batch : List.of("2", "1024")) {
      TensorParallelModel m = TensorParallelModel.fromDirectory(f.dir().toString()).setInputCol("ids").setTpSize(2)
          .setTask("generate").setMaxNewTokens(maxNew).setConf("spark.tp.batch-size", batch)
          .setConf("spark.tp.null-policy", "null");
      runs.add(m.transform(in).select("id", "generated_ids", "finish_reason").collectAsList());
    }
    assertThat(runs.get(0)).as("rows with micro-batches of 2").hasSize(prompts.size());
    for (int i = 0; i < prompts.size(); i++) {
      Row a = runs.get(0).get(i);
      Row b = runs.get(1).get(i);
      assertThat(a.getInt(0)).as("row %d: the same row in the same place", i).isEqualTo(b.getInt(0));
      int id = a.getInt(0);
      if (want.get(id) == null) {
        assertThat(a.isNullAt(1)).as("null prompt %d", id).isTrue();
        continue;
      }
      int[] got = a.<Integer>getList(1).stream().mapToInt(Integer::intValue).toArray();
      assertThat(got).as("row %d, micro-batches of 2", id).containsExactly(want.get(id));
      assertThat(b.<Integer>getList(1).stream().mapToInt(Integer::intValue).toArray()).as("row %d, one micro-batch",
          id).containsExactly(want.get(id));
      assertThat(a.getString(2)).isEqualTo("length");
    }
  }
}
