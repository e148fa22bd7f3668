package org.sparktp.nn.gen;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Map;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.BackendOp;
import org.sparktp.backend.Fallbacks;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.tensor.DType;

/**
 * Greedy generation of the Hugging Face llama (GQA) and gpt2 fixtures at tp 1 on the CUDA backend: token for token
 * equal to the float64 PyTorch reference and to the CPU backend, with nothing run through the host ({@link
 * Fallbacks} unchanged for every op) and a bounded number of host transfers per decode step: the KV cache stays on
 * the device, so the copies of a step do not grow with the context. Needs a GPU (skipped elsewhere).
 */
@Tag("gpu")
class GenerateGpuTest {

  static CudaBackend cuda() {
    return new CudaBackend(Map.of(), 0);
  }

  @ParameterizedTest(name = "{0}")
  @ValueSource(strings = {"llama", "gpt2"})
  void greedyOnTheGpuEqualsTheReferenceAndTheCpuWithFewTransfersPerStep(String name) throws Exception {
    CudaProbe.Status st = CudaProbe.status();
    assumeTrue(st.available(), () -> "no GPU: " + st.backendReason());
    GenerateTest.Greedy ref = GenerateTest.reference(name);
    int maxNew = ref.tokens().get(0).length;
    GenerateParams gp = GenerateParams.greedy(maxNew);
    long[] seeds = GenerateTest.seeds(ref.prompts().size());
    long[] fallbacks = new long[BackendOp.values().length];
    for (BackendOp op : BackendOp.values()) {
      fallbacks[op.ordinal()] = Fallbacks.count("cuda", op);
    }
    org.sparktp.backend.cuda.CudaTransfers[] marks = new org.sparktp.backend.cuda.CudaTransfers[2];
    long[] steps = new long[2];
    int[] calls = {0};
    GenerateTest.Run gpu = GenerateTest.generate(name, 1, ref.prompts(), seeds, gp, false, DType.F32,
        GenerateGpuTest::cuda, (be, g) -> {
          marks[calls[0]] = ((CudaBackend) be).transfers();
          steps[calls[0]++] = g.steps();
        });
    GenerateTest.Run cpu = GenerateTest.generate(name, 1, ref.prompts(), seeds, gp, false, DType.F32,
        CpuBackend::new, null);
    for (int r = 0; r < ref.prompts().size(); r++) {
      assertThat(gpu.rows()[r].ids()).as("%s row %d on the GPU vs the float64 reference", name, r)
          .containsExactly(ref.tokens().get(r));
      assertThat(gpu.rows()[r].ids()).as("%s row %d on the GPU vs the CPU backend", name, r)
          .containsExactly(cpu.rows()[r].ids());
    }
    for (BackendOp op : BackendOp.values()) {
      assertThat(Fallbacks.count("cuda", op)).as("cuda ran %s through the host while generating", op)
          .isEqualTo(fallbacks[op.ordinal()]);
    }
    org.sparktp.backend.cuda.CudaTransfers t = marks[1].since(marks[0]);
    long n = Math.max(1, steps[1] - steps[0]);
    long layers = GenerateTest.model(name).model().body().stream()
        .filter(op -> op instanceof org.sparktp.nn.ops.AttentionOp).count();
    String measured = String.format("%s: %d steps, %d host-to-device copies (%d bytes), %d device-to-host copies"
        + " (%d bytes), %d layers", name, n, t.toDevice(), t.toDeviceBytes(), t.toHost(), t.toHostBytes(), layers);
    System.out.println("transfers per generation: " + measured);
    // per step: the LM head's logits slice and the next ids come back; nothing per layer
    assertThat(t.toHost()).as(measured).isLessThanOrEqualTo(4 * n);
    // per step: ids, positions and attention metadata go up, a few per layer at most
    assertThat(t.toDevice()).as(measured).isLessThanOrEqualTo((4 * layers + 8) * n);
  }
}
