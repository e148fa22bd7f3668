package org.sparktp.nn;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.tensor.Tensor;
import org.sparktp.testing.Compare;
import org.sparktp.testing.Rand;
import org.sparktp.testing.Reference;

/** Single layers used directly (as a user holding whole weights would), on p in-process ranks. */
class LayersTest {
  final Rand rnd = new Rand();
  static final int ROWS = 7;
  static final int IN = 50;
  static final int OUT = 37;

  double[][] linearRef(float[] x, float[] w, float[] b, Activation act) {
    LayerSpec.Linear spec = new LayerSpec.Linear("l", IN, OUT, w, b, Parallel.AUTO);
    double[][] y = Reference.forward(new ModelSpec(IN, List.of(spec)), rnd.rows(x, ROWS, IN));
    return act == null ? y : Reference.act(act, y);
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 4})
  void columnParallelLinearWithGatheredOutputMatchesFloat64(int p) {
    float[] x = rnd.floats(ROWS * IN, 2);
    float[] w = rnd.floats(OUT * IN, 0.2);
    float[] b = rnd.floats(OUT, 1);
    double[][] ref = linearRef(x, w, b, Activation.GELU);
    List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          ColumnParallelLinear layer = ColumnParallelLinear.fromFull(be, "l", w, b, IN, OUT, rank, p,
              Activation.GELU, true)) {
        RunContext ctx = new RunContext(be, comm);
        try (DistTensor y = layer.forward(DistTensor.replicated(be.upload(x, ROWS, IN)), ctx)) {
          assertThat(y.layout()).isEqualTo(Layout.REPLICATED);
          return be.download(y.local());
        }
      }
    });
    for (int r = 0; r < p; r++) {
      Compare.assertClose(got.get(r), ref, "rank " + r + " p=" + p);
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 4})
  void columnParallelLinearLeavesEachRankItsBalancedColumnBlock(int p) {
    float[] x = rnd.floats(ROWS * IN, 2);
    float[] w = rnd.floats(OUT * IN, 0.2);
    double[][] ref = linearRef(x, w, null, null);
    List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          ColumnParallelLinear layer = ColumnParallelLinear.fromFull(be, "l", w, null, IN, OUT, rank, p, null,
              false)) {
        try (DistTensor y = layer.forward(DistTensor.replicated(be.upload(x, ROWS, IN)), new RunContext(be, comm))) {
          assertThat(y.layout()).isEqualTo(Layout.SHARDED);
          assertThat(y.local().cols()).isEqualTo(layer.outSplit().length(rank));
          return be.download(y.local());
        }
      }
    });
    org.sparktp.shard.Split s = org.sparktp.shard.Split.balanced(OUT, p);
    for (int r = 0; r < p; r++) {
      double[][] block = new double[ROWS][s.length(r)];
      for (int i = 0; i < ROWS; i++) {
        System.arraycopy(ref[i], s.offset(r), block[i], 0, s.length(r));
      }
      Compare.assertClose(got.get(r), block, "rank " + r);
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 4})
  void rowParallelLinearAddsTheBiasOnceAfterTheReduction(int p) {
    float[] x = rnd.floats(ROWS * IN, 2);
    float[] w = rnd.floats(OUT * IN, 0.2);
    float[] b = rnd.floats(OUT, 3); // large bias: adding it p times would show
    double[][] ref = linearRef(x, w, b, null);
    for (boolean parallelInput : new boolean[] {false, true}) {
      List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
        try (CpuBackend be = new CpuBackend();
            RowParallelLinear layer = RowParallelLinear.fromFull(be, "l", w, b, IN, OUT, rank, p, parallelInput,
                true)) {
          RunContext ctx = new RunContext(be, comm);
          DistTensor in = DistTensor.replicated(be.upload(x, ROWS, IN));
          if (parallelInput) {
            in = Mappings.toSharded(in, layer.inSplit(), ctx);
          }
          try (DistTensor y = layer.forward(in, ctx)) {
            assertThat(y.layout()).isEqualTo(Layout.REPLICATED);
            return be.download(y.local());
          }
        }
      });
      for (int r = 0; r < p; r++) {
        Compare.assertClose(got.get(r), ref, "rank " + r + " p=" + p + " inputIsParallel=" + parallelInput);
      }
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3})
  void layerNormAndActivationLayersMatchFloat64(int p) {
    float[] x = rnd.floats(ROWS * OUT, 3);
    float[] g = rnd.floats(OUT, 1);
    float[] bt = rnd.floats(OUT, 1);
    ModelSpec spec = new ModelSpec(OUT, List.of(new LayerSpec.LayerNorm("n", OUT, g, bt, 1e-5f),
        new LayerSpec.Act(Activation.SILU, OUT)));
    double[][] ref = Reference.forward(spec, rnd.rows(x, ROWS, OUT));
    List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
      try (CpuBackend be = new CpuBackend(); Tensor gt = be.upload(g, 1, OUT); Tensor btt = be.upload(bt, 1, OUT)) {
        LayerNormLayer ln = new LayerNormLayer("n", gt, btt, 1e-5f);
        ActivationLayer act = new ActivationLayer(Activation.SILU);
        RunContext ctx = new RunContext(be, comm);
        try (DistTensor y = act.forward(ln.forward(DistTensor.replicated(be.upload(x, ROWS, OUT)), ctx), ctx)) {
          return be.download(y.local());
        }
      }
    });
    for (int r = 0; r < p; r++) {
      Compare.assertClose(got.get(r), ref, "rank " + r);
    }
  }
}
