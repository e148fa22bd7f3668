package org.sparktp.nn.ops;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.tensor.DType;

/**
 * The Hugging Face bert, llama and gpt2 fixtures at tp 1 on the CUDA backend, every task (embeddings with each
 * pooling, logits, scores), against the float64 PyTorch reference ({@link HfEngineTest}'s tolerances: 1e-4 in
 * f32, 2e-2 with bf16/f16 weights) and against the CPU backend's outputs (the same tolerances: both are f32
 * accumulations of the same math). Needs a GPU (skipped elsewhere).
 */
@Tag("gpu")
class HfGpuTest {

  @ParameterizedTest(name = "{0} {1}")
  @CsvSource({"bert, F32", "llama, F32", "gpt2, F32", "bert, BF16", "llama, BF16", "gpt2, BF16", "llama, F16"})
  void everyTaskOnTheGpuMatchesTheReferenceAndTheCpu(String name, DType dtype) throws Exception {
    CudaProbe.Status st = CudaProbe.status();
    assumeTrue(st.available(), () -> "no GPU: " + st.backendReason());
    double tol = dtype == DType.F32 ? HfEngineTest.TOL : HfEngineTest.HALF_TOL;
    JsonNode ref = new ObjectMapper().readTree(new File(HfEngineTest.DIR + name + "/reference.json"));
    List<HfEngineTest.Expect> expects = new ArrayList<>(List.of(
        new HfEngineTest.Expect(Task.EMBED, Pooling.MEAN, false, "embed_mean"),
        new HfEngineTest.Expect(Task.EMBED, Pooling.CLS, false, "embed_cls"),
        new HfEngineTest.Expect(Task.EMBED, Pooling.MEAN, true, "embed_mean_normalized")));
    if (ref.get("rows").get(0).has("logits_last")) {
      expects.add(new HfEngineTest.Expect(Task.LOGITS, null, false, "logits_last"));
      expects.add(new HfEngineTest.Expect(Task.SCORE, null, false, "score"));
    }
    List<int[]> inputs = HfEngineTest.inputs(ref);
    try (HfModel hf = HfModel.open(HfEngineTest.DIR + name)) {
      for (HfEngineTest.Expect e : expects) {
        Plan plan = TransformerGraph.plan(hf.model(), 1, e.task(), e.pooling(), e.normalize(), false);
        float[][] gpu = HfEngineTest.run(plan, hf, inputs, dtype, true, () -> new CudaBackend(Map.of(), 0));
        float[][] cpu = HfEngineTest.run(plan, hf, inputs, dtype, true, CpuBackend::new);
        double errRef = 0;
        double maxRef = 0;
        double errCpu = 0;
        double maxCpu = 0;
        for (int r = 0; r < inputs.size(); r++) {
          JsonNode want = ref.get("rows").get(r).get(e.key());
          for (int i = 0; i < gpu[r].length; i++) {
            double w = want.isArray() ? want.get(i).asDouble() : want.asDouble();
            errRef = Math.max(errRef, Math.abs(gpu[r][i] - w));
            maxRef = Math.max(maxRef, Math.abs(w));
            errCpu = Math.max(errCpu, Math.abs(gpu[r][i] - cpu[r][i]));
            maxCpu = Math.max(maxCpu, Math.abs(cpu[r][i]));
          }
        }
        System.out.printf("%s %s %s: GPU vs float64 %.2e, GPU vs CPU %.2e%n", name, dtype.id(), e.key(),
            errRef / maxRef, errCpu / maxCpu);
        assertThat(errRef / maxRef).as("%s %s %s: GPU vs float64 reference", name, dtype.id(), e.key())
            .isLessThanOrEqualTo(tol);
        assertThat(errCpu / maxCpu).as("%s %s %s: GPU vs CPU backend", name, dtype.id(), e.key())
            .isLessThanOrEqualTo(tol);
      }
    }
  }
}
