package org.sparktp.nn.ops;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.DistTensor;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.RunContext;
import org.sparktp.tensor.DType;

/**
 * bf16 activations between the transformer's ops ({@code spark.tp.activation-dtype}): every op boundary holds a
 * bf16 tensor, the ops compute in f32, the output is f32 (not rounded) and within the stated half-precision tolerance (2e-2
 * relative to the largest reference value) of the fixtures' float64 PyTorch references.
 */
class TransformerActivationDtypeTest {
  static final double HALF_TOL = 2e-2;

  @ParameterizedTest(name = "{0} tp={1} {2}")
  @CsvSource({"llama, 1, logits_last", "llama, 3, logits_last", "bert, 2, embed_mean", "gpt2, 4, logits_last"})
  void bf16ActivationsMatchTheFloat64Reference(String name, int p, String key) throws Exception {
    JsonNode ref = new ObjectMapper().readTree(new File(HfEngineTest.DIR + name + "/reference.json"));
    Task task = key.startsWith("logits") ? Task.LOGITS : Task.EMBED;
    try (HfModel hf = HfModel.open(HfEngineTest.DIR + name)) {
      List<int[]> inputs = HfEngineTest.inputs(ref);
      int total = inputs.stream().mapToInt(a -> a.length).sum();
      int[] ids = new int[total];
      int[] off = new int[inputs.size() + 1];
      for (int j = 0; j < inputs.size(); j++) {
        System.arraycopy(inputs.get(j), 0, ids, off[j], inputs.get(j).length);
        off[j + 1] = off[j] + inputs.get(j).length;
      }
      Plan plan = TransformerGraph.plan(hf.model(), p, task, task == Task.EMBED ? Pooling.MEAN : null,
          false, false);
      List<Object[]> res = LocalCommunicator.run(p, 60_000, rank -> comm -> {
        RankWeights w;
        synchronized (hf) {
          w = plan.shard(hf.weightSource(), rank);
        }
        try (CpuBackend be = new CpuBackend(); RankModel m = new RankModel(plan, rank, be, w)) {
          float[][] ys = new float[2][];
          List<String> seen = Collections.synchronizedList(new ArrayList<>());
          for (DType act : new DType[] {DType.BF16, DType.F32}) {
            RunContext ctx = new RunContext(be, comm).activationDtype(act);
            if (act == DType.BF16) {
              ctx.observeBoundaries(t -> seen.add(t.layout() + " " + t.local().dtype()));
            }
            // logits leave the head sharded by vocabulary: gathered here to compare whole rows
            try (DistTensor y = org.sparktp.nn.Mappings.toReplicated(m.forward(Tokens.of(ids, off), ctx), ctx)) {
              assertThat(y.local().dtype()).isEqualTo(DType.F32);
              ys[act == DType.BF16 ? 0 : 1] = be.download(y.local());
            }
          }
          return new Object[] {ys[0], ys[1], seen};
        }
      });
      for (int r = 0; r < p; r++) {
        float[] got = (float[]) res.get(r)[0];
        @SuppressWarnings("unchecked")
        List<String> seen = (List<String>) res.get(r)[2];
        // every op hands the next one a bf16 tensor; the last op's output (the model's) is not rounded
        assertThat(seen).as("op boundaries").hasSize(plan.ops().size() - 1)
            .allMatch(s -> s.equals("REPLICATED BF16"));
        assertThat(got).as("bf16 activations round").isNotEqualTo(res.get(r)[1]);
        boolean wide = false;
        for (float v : got) {
          wide |= (Float.floatToRawIntBits(v) & 0xffff) != 0;
        }
        assertThat(wide).as("the output keeps f32 precision").isTrue();
        int width = got.length / inputs.size();
        double maxErr = 0;
        double maxRef = 0;
        for (int row = 0; row < inputs.size(); row++) {
          JsonNode want = ref.get("rows").get(row).get(key);
          assertThat(want.size()).isEqualTo(width);
          for (int i = 0; i < width; i++) {
            maxErr = Math.max(maxErr, Math.abs(got[row * width + i] - want.get(i).asDouble()));
            maxRef = Math.max(maxRef, Math.abs(want.get(i).asDouble()));
          }
        }
        assertThat(maxErr / maxRef).as("%s %s tp=%d rank %d relative error", name, key, p, r)
            .isLessThanOrEqualTo(HALF_TOL);
      }
    }
  }
}
