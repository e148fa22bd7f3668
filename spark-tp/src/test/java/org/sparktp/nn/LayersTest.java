package org.sparktp.nn;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.nn.ops.ActivationOp;
import org.sparktp.nn.ops.LayoutChangeOp;
import org.sparktp.nn.ops.LinearOp;
import org.sparktp.nn.ops.NormOp;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.OpKernel;
import org.sparktp.nn.ops.Planner;
import org.sparktp.nn.ops.Weights;
import org.sparktp.shard.Split;
import org.sparktp.tensor.DType;
import org.sparktp.testing.Compare;
import org.sparktp.testing.Rand;
import org.sparktp.testing.Reference;

/** Single ops used directly (as a user holding whole weights would), planned for and run on p in-process ranks. */
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

  /** A rank's kernels of planned ops, their weights cut from {@code spec}'s; closes the weights with the backend. */
  record Built(List<Op> ops, List<OpKernel> kernels, Weights weights) implements AutoCloseable {
    static Built of(List<Op> planned, ModelSpec spec, int p, int rank, CpuBackend be) {
      RankWeights blocks = Weights.read(Weights.slices(planned, p, rank).values(), spec.weights(), rank, p);
      Weights w = new Weights(blocks, be, DType.F32, Weights.uses(planned, p, rank));
      List<OpKernel> ks = new ArrayList<>();
      for (Op o : planned) {
        ks.add(o.build(p, rank, w, be));
      }
      return new Built(planned, ks, w);
    }

    DistTensor run(DistTensor x, RunContext ctx) {
      return OpKernel.runAll(ops, kernels, x, null, ctx, false);
    }

    @Override
    public void close() {
      weights.close();
    }
  }

  /** {@code ops} planned for {@code p} ranks, then brought to a replicated output when {@code gather}. */
  static List<Op> planned(List<Op> ops, int p, int width, boolean gather) {
    Planner.Result r = Planner.plan(ops, p, width);
    List<Op> out = new ArrayList<>(r.ops());
    if (gather && r.layout() != Layout.REPLICATED) {
      out.add(new LayoutChangeOp(r.layout(), Layout.REPLICATED, r.width(), null));
    }
    return out;
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 4})
  void columnParallelLinearWithGatheredOutputMatchesFloat64(int p) {
    float[] x = rnd.floats(ROWS * IN, 2);
    float[] w = rnd.floats(OUT * IN, 0.2);
    float[] b = rnd.floats(OUT, 1);
    double[][] ref = linearRef(x, w, b, Activation.GELU);
    ModelSpec spec = new ModelSpec(IN, List.of(new LayerSpec.Linear("l", IN, OUT, w, b, Parallel.COLUMN)));
    List<Op> ops = planned(List.of(LinearOp.of("l", IN, OUT, true, Parallel.COLUMN),
        ActivationOp.of(Activation.GELU, OUT)), p, IN, true);
    assertThat(ops.get(0).describe(p)).isEqualTo((p == 1 ? "replicated" : "column") + " linear l [50->37] +gelu");
    List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
      try (CpuBackend be = new CpuBackend(); Built layer = Built.of(ops, spec, p, rank, be)) {
        RunContext ctx = new RunContext(be, comm);
        try (DistTensor y = layer.run(DistTensor.replicated(be.upload(x, ROWS, IN)), ctx)) {
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
    ModelSpec spec = new ModelSpec(IN, List.of(new LayerSpec.Linear("l", IN, OUT, w, null, Parallel.COLUMN)));
    List<Op> ops = planned(List.of(LinearOp.of("l", IN, OUT, false, Parallel.COLUMN)), p, IN, false);
    Split s = Split.balanced(OUT, p);
    List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
      try (CpuBackend be = new CpuBackend(); Built layer = Built.of(ops, spec, p, rank, be)) {
        try (DistTensor y = layer.run(DistTensor.replicated(be.upload(x, ROWS, IN)), new RunContext(be, comm))) {
          // one rank holds the whole weight: the planner runs it replicated (the same math)
          assertThat(y.layout()).isEqualTo(p == 1 ? Layout.REPLICATED : Layout.SHARDED);
          assertThat(y.split()).isEqualTo(p == 1 ? null : s);
          assertThat(y.local().cols()).isEqualTo(s.length(rank));
          return be.download(y.local());
        }
      }
    });
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
    ModelSpec spec = new ModelSpec(IN, List.of(new LayerSpec.Linear("l", IN, OUT, w, b, Parallel.ROW)));
    // from a replicated input the planner slices it locally (no communication) before the row-parallel linear
    List<Op> ops = planned(List.of(LinearOp.of("l", IN, OUT, true, Parallel.ROW)), p, IN, true);
    if (p > 1) {
      assertThat(ops.get(0).describe(p)).isEqualTo("REPLICATED -> SHARDED (slice (no communication))");
      assertThat(ops.get(1).describe(p)).isEqualTo("row linear l [50->37]");
    } else {
      assertThat(ops).hasSize(1); // one rank: replicated, the same math
    }
    Split inSplit = Split.balanced(IN, p);
    for (boolean parallelInput : p == 1 ? new boolean[] {false} : new boolean[] {false, true}) {
      List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
        List<Op> run = parallelInput ? ops.subList(1, ops.size()) : ops;
        try (CpuBackend be = new CpuBackend(); Built layer = Built.of(run, spec, p, rank, be)) {
          RunContext ctx = new RunContext(be, comm);
          DistTensor in = DistTensor.replicated(be.upload(x, ROWS, IN));
          if (parallelInput) {
            in = Mappings.toSharded(in, inSplit, ctx);
          }
          try (DistTensor y = layer.run(in, ctx)) {
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
    List<Op> ops = planned(List.of(new NormOp("n", false, OUT, "n.weight", "n.bias", 1e-5f),
        ActivationOp.of(Activation.SILU, OUT)), p, OUT, false);
    List<float[]> got = LocalCommunicator.run(p, 10_000, rank -> comm -> {
      try (CpuBackend be = new CpuBackend(); Built layers = Built.of(ops, spec, p, rank, be)) {
        RunContext ctx = new RunContext(be, comm);
        try (DistTensor y = layers.run(DistTensor.replicated(be.upload(x, ROWS, OUT)), ctx)) {
          return be.download(y.local());
        }
      }
    });
    for (int r = 0; r < p; r++) {
      Compare.assertClose(got.get(r), ref, "rank " + r);
    }
  }
}
