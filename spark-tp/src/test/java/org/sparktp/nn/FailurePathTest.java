package org.sparktp.nn;

import org.sparktp.nn.run.TpRunner;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.plan.Plan;
import static org.assertj.core.api.Assertions.assertThat;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.params.ParameterizedTest;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.testing.Rand;

/**
 * A collective that fails in the middle of a forward pass (inside a residual block): the rank sees the
 * communicator's error, and closing the model and the backend finds no leaked tensor.
 */
class FailurePathTest {
  final Rand rnd = new Rand();

  /** {@code comm} whose {@code n}-th all-reduce (from 1) aborts the group and throws. */
  static Communicator failingAt(Communicator comm, int n) {
    AtomicInteger calls = new AtomicInteger();
    return (Communicator) Proxy.newProxyInstance(Communicator.class.getClassLoader(),
        new Class<?>[] {Communicator.class}, (proxy, m, args) -> {
          if (m.getName().equals("allReduce") && calls.incrementAndGet() == n) {
            CommunicatorException e = new CommunicatorException("injected all-reduce failure on rank " + comm.rank());
            comm.abort(e);
            throw e;
          }
          try {
            return m.invoke(comm, args);
          } catch (InvocationTargetException e) {
            throw e.getCause();
          }
        });
  }

  /** Also with bf16 activations between ops (their conversions at each boundary leak nothing either). */
  @ParameterizedTest(name = "all-reduce {0} fails, {1} activations")
  @org.junit.jupiter.params.provider.CsvSource({"1, F32", "2, F32", "1, BF16", "2, BF16"})
  void aFailedAllReduceInsideAResidualBlockLeaksNothingAndSurfacesTheCommError(int failAt,
      org.sparktp.tensor.DType act) {
    int w = 24;
    ModelSpec spec = new ModelSpec(w, List.of(
        new LayerSpec.Residual(List.of(EngineTest.linear(rnd, "up", w, 40, true), new LayerSpec.Act(Activation.GELU, 40),
            EngineTest.linear(rnd, "down", 40, w, true))),
        new LayerSpec.Residual(List.of(EngineTest.linear(rnd, "up2", w, 40, true),
            new LayerSpec.Act(Activation.GELU, 40), EngineTest.linear(rnd, "down2", 40, w, true)))));
    Plan plan = Plan.build(spec.graph(), 2);
    Throwable[] seen = new Throwable[2];
    long[] live = new long[2];
    try {
      LocalCommunicator.run(2, 10_000, rank -> comm -> {
        Communicator c = rank == 0 ? failingAt(comm, failAt) : comm;
        CpuBackend be = new CpuBackend();
        try (RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank))) {
          TpRunner runner = new TpRunner(m, c).activationDtype(act);
          runner.step(InputBatch.dense(rnd.floats(3 * w, 1), 3, w));
        } catch (RuntimeException e) {
          seen[rank] = e;
        }
        live[rank] = be.liveTensors();
        be.close();
        return null;
      });
    } catch (RuntimeException ignored) {
      // the group's first failure is rethrown; what each rank saw is checked below
    }
    assertThat(seen[0]).isInstanceOf(CommunicatorException.class)
        .hasMessageContaining("injected all-reduce failure on rank 0");
    assertThat(seen[1]).isNotNull();
    assertThat(live).containsExactly(0, 0);
  }
}
