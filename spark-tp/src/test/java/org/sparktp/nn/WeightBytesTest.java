package org.sparktp.nn;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.nn.run.RankModel;
import org.sparktp.tensor.DType;
import org.sparktp.testing.HfFixtures;
import org.sparktp.testing.Rand;

/**
 * {@link Plan#weightBytes(int, DType)}, the one count of a rank's weight bytes (explain, the shard cache and the
 * CLI's tables report it), against what a loaded {@link RankModel} really holds: the bytes its backend has live
 * after loading (every tensor and packed weight the CPU backend allocated, counted by the backend itself), for a
 * layer-list model and Hugging Face fixtures, at tp 1 and 2; and, for the layer-list model at tp 1, against the
 * count written out by hand.
 */
class WeightBytesTest {
  private static final int VOCAB = 128;
  private static final int DIM = 64;
  private static final int HIDDEN = 256;

  /**
   * Embedding {@code emb [128, 64]}, column linear {@code up [64 -> 256]} with bias, GeLU, row linear {@code down
   * [256 -> 64]} with bias, layer norm, and a head tied to the embedding table ({@code emb [64 -> 128]}, no bias).
   * Widths are multiples of 64, so oneDNN packs them without padding.
   */
  static ModelSpec tiedMlp(Rand rnd) {
    float[] table = rnd.floats(VOCAB * DIM, 1);
    return new ModelSpec(VOCAB, List.of(
        new LayerSpec.Embedding("emb", VOCAB, DIM, table, false, false),
        EngineTest.linear(rnd, "up", DIM, HIDDEN, Parallel.COLUMN),
        new LayerSpec.Act(Activation.GELU, HIDDEN),
        EngineTest.linear(rnd, "down", HIDDEN, DIM, Parallel.ROW),
        new LayerSpec.LayerNorm("ln", DIM, rnd.floats(DIM, 1), rnd.floats(DIM, 1), 1e-5f),
        new LayerSpec.Linear("emb", DIM, VOCAB, table, null, Parallel.AUTO)));
  }

  /** Live bytes on a fresh CPU backend once rank {@code rank}'s model is loaded (host blocks closed). */
  private static long held(Plan plan, WeightSource src, int rank, DType dtype) {
    // f32 on OpenBLAS: the count's f32 is the unpacked layout (oneDNN's f32 packing, spark.tp.cpu.gemm=auto on AVX2
    // and up, gives a tied head its own copy and pads narrow shards, as it does for bf16)
    try (CpuBackend be = dtype == DType.F32 ? new CpuBackend(1, "openblas", 256) : new CpuBackend(1)) {
      assertThat(be.liveBytes()).isZero();
      try (RankWeights w = plan.shard(src, rank); RankModel m = new RankModel(plan, rank, be, w, dtype)) {
        w.close();
        assertThat(m.weightBytes()).as("the model's own count of what it holds").isEqualTo(be.liveBytes());
        return be.liveBytes();
      }
    }
  }

  /** True when the CPU's kernel stores {@code dtype} as it is (oneDNN); OpenBLAS widens bf16/int8 to f32. */
  private static boolean storedAsIs(DType dtype) {
    try (CpuBackend be = new CpuBackend(1)) {
      return dtype == DType.F32 || (be.supports(dtype) || dtype.isInt8()) && be.kernel(dtype).startsWith("onednn");
    }
  }

  @Test
  void theLayerListCountIsTheHandCountAtTp1() {
    Plan plan = Plan.build(tiedMlp(new Rand()).graph(), 1);
    long norm = 2 * 4L * DIM; // gamma and beta, f32
    long biases = 4L * HIDDEN + 4L * DIM;
    // f32: the tied head uses the table itself
    long f32 = 4L * VOCAB * DIM + 4L * DIM * HIDDEN * 2 + biases + norm;
    assertThat(plan.weightBytes(0)).as("f32, tp 1").isEqualTo(f32);
    // bf16: table bf16, linears bf16, the tied head's own bf16 copy
    long bf16 = 2L * VOCAB * DIM + 2L * DIM * HIDDEN * 2 + biases + norm + 2L * VOCAB * DIM;
    assertThat(plan.weightBytes(0, DType.BF16)).as("bf16, tp 1").isEqualTo(bf16);
    // int8: table bf16, linears one byte per weight plus one f32 scale per output row, the head's own int8 copy
    long int8 = 2L * VOCAB * DIM + DIM * HIDDEN * 2 + 4L * (HIDDEN + DIM) + biases + norm + VOCAB * DIM + 4L * VOCAB;
    assertThat(plan.weightBytes(0, DType.I8_WO)).as("int8 weight-only, tp 1").isEqualTo(int8);
    assertThat(plan.weightBytes(0, DType.I8)).as("int8 W8A8, tp 1").isEqualTo(int8);
  }

  @ParameterizedTest(name = "tp {0}")
  @ValueSource(ints = {1, 2})
  void theLayerListCountIsWhatALoadedRankHolds(int tp) {
    ModelSpec spec = tiedMlp(new Rand());
    Plan plan = Plan.build(spec.graph(), tp);
    for (DType dt : new DType[] {DType.F32, DType.BF16, DType.I8_WO, DType.I8}) {
      if (!storedAsIs(dt)) {
        continue;
      }
      for (int r = 0; r < tp; r++) {
        long planned = plan.weightBytes(r, dt);
        long live = held(plan, spec.weights(), r, dt);
        if (dt == DType.I8) {
          // oneDNN's s8 x s8 kernels keep one s32 compensation per output channel next to the packed weight
          long outputRows = plan.slices(r).values().stream()
              .filter(s -> s.kind() == org.sparktp.nn.ops.Slice.Kind.WEIGHT).mapToLong(s -> s.blockRows()).sum()
              + VOCAB / tp;
          assertThat(live - planned).as("W8A8 rank %d/%d: held %d, planned %d", r, tp, live, planned)
              .isBetween(0L, 4L * outputRows);
        } else {
          assertThat(planned).as("%s rank %d/%d", dt.id(), r, tp).isEqualTo(live);
        }
      }
    }
    assertThat(plan.explain()).as("explain reports the count")
        .contains("weight bytes per rank: [" + plan.weightBytes(0));
    assertThat(plan.explainPrecision(DType.BF16, "k")).contains("weight bytes per rank in bf16: ["
        + plan.weightBytes(0, DType.BF16));
  }

  /** gpt2: a tied head, Conv1D weights and a fused qkv; llama: untied, gated MLP, GQA. At f32 (no packing). */
  @ParameterizedTest(name = "{0}")
  @ValueSource(strings = {"gpt2", "llama"})
  void theHuggingFaceCountIsWhatALoadedRankHolds(String name) throws Exception {
    try (HfModel hf = HfModel.open(HfFixtures.dir(name).toString())) {
      for (int tp = 1; tp <= 2; tp++) {
        Plan plan = TransformerGraph.plan(hf.model(), tp, Task.LOGITS, null, false, false);
        for (int r = 0; r < tp; r++) {
          assertThat(plan.weightBytes(r)).as("%s f32 rank %d/%d", name, r, tp)
              .isEqualTo(held(plan, hf.weightSource(), r, DType.F32));
        }
        assertThat(plan.explain()).as("explain reports the count")
            .contains("weight bytes per rank: [" + plan.weightBytes(0));
      }
    }
  }
}
