package org.sparktp.model;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Activation;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.Parallel;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.testing.Rand;

/** A rank plans from the structure alone and reads only its own shards from the checkpoint. */
class PerRankReadTest {
  @TempDir
  Path tmp;
  final Rand rnd = new Rand();

  ModelSpec model() {
    return new ModelSpec(50, List.of(
        new LayerSpec.Linear("fc1", 50, 203, rnd.floats(203 * 50, 0.1), rnd.floats(203, 0.1), Parallel.AUTO),
        new LayerSpec.Act(Activation.GELU, 203),
        new LayerSpec.Linear("fc2", 203, 64, rnd.floats(64 * 203, 0.1), rnd.floats(64, 0.1), Parallel.AUTO),
        new LayerSpec.LayerNorm("ln", 64, rnd.floats(64, 1), rnd.floats(64, 1), 1e-5f),
        new LayerSpec.Linear("head", 64, 37, rnd.floats(37 * 64, 0.1), null, Parallel.AUTO)));
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3})
  void shardsReadFromTheCheckpointEqualShardsCutFromTheWholeModel(int p) throws Exception {
    ModelSpec spec = model();
    ModelWriter.write(spec.model(), tmp.toString());
    try (ModelDirectory dir = ModelDirectory.open(tmp.toString())) {
      Plan plan = Plan.build(dir.graph(), p); // the directory's ops: no weights read
      assertThat(plan.explain()).isEqualTo(Plan.build(spec.graph(), p).explain());
      WeightSource source = dir.weightSource();
      long fileBytes = 4L * (203 * 50 + 203 + 64 * 203 + 64 + 64 + 64 + 37 * 64);
      for (int r = 0; r < p; r++) {
        long before = dir.bytesRead();
        RankWeights fromFile = plan.shard(source, r);
        long read = dir.bytesRead() - before;
        RankWeights fromMemory = plan.shard(spec.weights(), r);
        assertThat(fromFile.blocks().keySet()).isEqualTo(fromMemory.blocks().keySet());
        for (Map.Entry<String, RankWeights.Block> e : fromMemory.blocks().entrySet()) {
          RankWeights.Block b = fromFile.get(e.getKey());
          assertThat(b.rows()).isEqualTo(e.getValue().rows());
          assertThat(b.cols()).isEqualTo(e.getValue().cols());
          TestData.assertSameFloats(b.data(), e.getValue().data());
        }
        // the rank reads its shard; a narrow row-parallel block may read the small gaps between its rows
        // (coalesced ranges, SafetensorsFile.MERGE_GAP_BYTES), but never the whole file
        assertThat(read).as("bytes read by rank %d of %d", r, p).isGreaterThanOrEqualTo(fromMemory.bytes());
        if (p == 1) {
          assertThat(read).isEqualTo(fileBytes);
        } else {
          assertThat(read).isLessThan(fileBytes);
        }
      }
    }
  }

  @org.junit.jupiter.api.Test
  void aStructureOnlySpecCannotBeShardedFromMemory() throws Exception {
    ModelSpec structure = model().structure(); // the test-side builder's structure: no weights to cut
    Plan plan = Plan.build(structure.graph(), 2);
    assertThatThrownBy(() -> plan.shard(structure.weights(), 0))
        .hasMessageContaining("is not loaded in this model spec (structure only)");
  }
}
