package org.sparktp.nn;

import org.sparktp.nn.run.TpRunner;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.plan.Plan;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.testing.Compare;
import org.sparktp.testing.Rand;
import org.sparktp.testing.Reference;

/** Whole models through the engine at tp 1 on the CUDA backend, against the float64 reference. Needs a GPU. */
@Tag("gpu")
class EngineGpuTest {
  private final Rand rnd = new Rand();

  private void check(ModelSpec spec) {
    CudaProbe.Status st = CudaProbe.status();
    assumeTrue(st.available(), () -> "no GPU: " + st.backendReason());
    Plan plan = Plan.build(spec.graph(), 1);
    int rows = 77;
    float[] x = rnd.floats(rows * spec.inputDim(), 2);
    float[] y = LocalCommunicator.run(1, 30_000, rank -> comm -> {
      try (CudaBackend be = new CudaBackend(Map.of(), 0)) {
        try (RankModel model = new RankModel(plan, 0, be, plan.shard(spec.weights(), 0))) {
          TpRunner runner = new TpRunner(model, comm);
          float[] out = runner.step(InputBatch.dense(x, rows, spec.inputDim()));
          runner.step(InputBatch.dense(new float[0], 0, spec.inputDim()));
          return out;
        }
      }
    }).get(0);
    Compare.assertClose(y, Reference.forward(spec, rnd.rows(x, rows, spec.inputDim())), "CUDA backend, " + rnd);
  }

  @Test
  void fiveOpModelMatchesFloat64() {
    check(EngineTest.fiveOpModel(rnd));
  }

  @Test
  void mlpWithEveryActivationAndAResidualMatchesFloat64() {
    check(new ModelSpec(50, List.of(EngineTest.linear(rnd, "up", 50, 203, true),
        new LayerSpec.Act(Activation.GELU_TANH, 203), EngineTest.linear(rnd, "down", 203, 50, true),
        new LayerSpec.Act(Activation.SILU, 50), EngineTest.linear(rnd, "h", 50, 64, true),
        new LayerSpec.Act(Activation.TANH, 64), EngineTest.linear(rnd, "out", 64, 10, false),
        new LayerSpec.Act(Activation.SOFTMAX, 10))));
  }
}
