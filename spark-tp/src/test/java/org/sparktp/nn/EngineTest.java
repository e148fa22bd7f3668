package org.sparktp.nn;

import org.sparktp.nn.run.TpRunner;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.plan.Plan;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.tensor.DType;
import org.sparktp.testing.Compare;
import org.sparktp.testing.Rand;
import org.sparktp.testing.Reference;

/**
 * Whole models on p in-process ranks through {@link TpRunner}, against the float64 reference: every
 * rank brings its own (uneven, sometimes empty) rows over several steps and must get back exactly the
 * outputs of those rows.
 */
class EngineTest {
  static final long TIMEOUT_MS = 30_000;
  final Rand rnd = new Rand();

  static LayerSpec.Linear linear(Rand rnd, String name, int in, int out, boolean bias) {
    double scale = 1 / Math.sqrt(in);
    return new LayerSpec.Linear(name, in, out, rnd.floats(out * in, scale), bias ? rnd.floats(out, 0.5) : null,
        Parallel.AUTO);
  }

  static LayerSpec.Linear linear(Rand rnd, String name, int in, int out, Parallel mode) {
    LayerSpec.Linear l = linear(rnd, name, in, out, true);
    return new LayerSpec.Linear(name, in, out, l.weight(), l.bias(), mode);
  }

  /** The 5-op model of the issue: linear, gelu, linear, layer_norm, linear; in 50, hidden 203, out 37. */
  static ModelSpec fiveOpModel(Rand rnd) {
    return new ModelSpec(50, List.of(
        linear(rnd, "fc1", 50, 203, true),
        new LayerSpec.Act(Activation.GELU, 203),
        linear(rnd, "fc2", 203, 64, true),
        new LayerSpec.LayerNorm("ln", 64, rnd.floats(64, 2), rnd.floats(64, 1), 1e-5f),
        linear(rnd, "head", 64, 37, true)));
  }

  /** Rows per rank per step: uneven, and some ranks run out early. */
  static int rowsFor(int rank, int step) {
    int[] base = {5, 3, 0, 7};
    int n = base[rank % 4] + step;
    return rank == 1 && step >= 2 ? 0 : n;
  }

  /** Runs the model on p ranks; each rank streams 3 steps of its own rows; returns outputs in rank order. */
  static List<float[]> runGroup(ModelSpec spec, int p, float[][][] inputs, long[] commCalls) {
    return runGroup(spec, p, inputs, commCalls, DType.F32);
  }

  static List<float[]> runGroup(ModelSpec spec, int p, float[][][] inputs, long[] commCalls, DType dtype) {
    Plan plan = Plan.build(spec.graph(), p);
    List<float[]> perRank = LocalCommunicator.run(p, TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend()) {
        List<Float> out = new ArrayList<>();
        try (RankModel model = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank), dtype)) {
          assertThat(model.storage()).isEqualTo(dtype);
          if (dtype.isInt8()) {
            assertThat(model.weightBytes()).as("int8 weights are held as int8").isLessThan(plan.weightBytes(rank));
          }
          TpRunner runner = new TpRunner(model, comm);
          int step = 0;
          while (true) {
            float[] x = step < inputs[rank].length ? inputs[rank][step] : new float[0];
            float[] y = runner.step(InputBatch.dense(x, x.length / spec.inputDim(), spec.inputDim()));
            if (y == null) {
              break;
            }
            assertThat(y).hasSize(x.length / spec.inputDim() * spec.outputDim());
            for (float v : y) {
              out.add(v);
            }
            step++;
          }
        }
        if (commCalls != null) {
          commCalls[rank] = comm.stats().calls();
        }
        float[] a = new float[out.size()];
        for (int i = 0; i < a.length; i++) {
          a[i] = out.get(i);
        }
        return a;
      }
    });
    return perRank;
  }

  void checkModel(ModelSpec spec, int p) {
    checkModel(spec, p, DType.F32);
  }

  /**
   * Every (tp size, weight dtype) pair: f32 within 1e-5 of float64, bf16 and f16 within 2e-2, int8 (W8A8 and
   * weight-only) within 3e-2
   * of the unquantized weights' float64 output (measured up to 6e-3 on these models).
   */
  static java.util.stream.Stream<org.junit.jupiter.params.provider.Arguments> tpAndDtype() {
    List<org.junit.jupiter.params.provider.Arguments> out = new ArrayList<>();
    for (DType d : new DType[] {DType.F32, DType.BF16, DType.F16, DType.I8, DType.I8_WO}) {
      for (int p = 1; p <= 4; p++) {
        out.add(org.junit.jupiter.params.provider.Arguments.of(p, d));
      }
    }
    return out.stream();
  }

  void checkModel(ModelSpec spec, int p, DType dtype) {
    int steps = 3;
    float[][][] inputs = new float[p][steps][];
    for (int r = 0; r < p; r++) {
      for (int s = 0; s < steps; s++) {
        inputs[r][s] = rnd.floats(rowsFor(r, s) * spec.inputDim(), 2);
      }
    }
    long[] calls = new long[p];
    List<float[]> got = runGroup(spec, p, inputs, calls, dtype);
    for (int r = 0; r < p; r++) {
      int rows = 0;
      for (float[] x : inputs[r]) {
        rows += x.length / spec.inputDim();
      }
      float[] all = new float[rows * spec.inputDim()];
      int off = 0;
      for (float[] x : inputs[r]) {
        System.arraycopy(x, 0, all, off, x.length);
        off += x.length;
      }
      double[][] ref = Reference.forward(spec, rnd.rows(all, rows, spec.inputDim()));
      Compare.assertClose(got.get(r), ref, "rank " + r + " of p=" + p + ", " + dtype + " weights, " + rnd,
          Compare.tolerance(dtype));
    }
    if (p == 1) {
      assertThat(calls[0]).as("collectives with one rank").isZero();
    }
  }

  @ParameterizedTest(name = "tp {0}, {1} weights")
  @MethodSource("tpAndDtype")
  void fiveOpModelMatchesFloat64ForEveryTensorParallelSize(int p, DType dtype) {
    checkModel(fiveOpModel(rnd), p, dtype);
  }

  @ParameterizedTest(name = "tp {0}, {1} weights")
  @MethodSource("tpAndDtype")
  void megatronMlpCostsOneReductionPerColumnRowPair(int p, DType dtype) {
    ModelSpec mlp = new ModelSpec(50, List.of(linear(rnd, "up", 50, 203, true), new LayerSpec.Act(Activation.GELU, 203),
        linear(rnd, "down", 203, 50, true), new LayerSpec.Act(Activation.RELU, 50),
        linear(rnd, "up2", 50, 101, true), new LayerSpec.Act(Activation.SILU, 101),
        linear(rnd, "down2", 101, 37, true)));
    Plan plan = Plan.build(mlp.graph(), p);
    assertThat(plan.weightBytes(0, DType.BF16)).as("bf16 linear weights take about half the bytes")
        .isLessThan(plan.weightBytes(0) * 6 / 10);
    if (p > 1) {
      // up(col) down(row) -> all-reduce -> up2(col) down2(row): the final partial is reduce-scattered to row owners
      assertThat(plan.collectiveCount()).isEqualTo(1);
      assertThat(plan.outputLayout()).isEqualTo(Layout.PARTIAL);
      assertThat(plan.explain()).contains("column linear up [50->203] +gelu", "row linear down [203->50]",
          "all-reduce", "reduce-scatter over rows");
    }
    checkModel(mlp, p, dtype);
  }

  @ParameterizedTest(name = "tp {0}, {1} weights")
  @MethodSource("tpAndDtype")
  void residualSoftmaxAndForcedModesMatchFloat64(int p, DType dtype) {
    ModelSpec spec = new ModelSpec(50, List.of(
        linear(rnd, "in", 50, 64, Parallel.REPLICATED),
        new LayerSpec.Residual(List.of(
            new LayerSpec.LayerNorm("ln1", 64, rnd.floats(64, 1), null, 1e-5f),
            linear(rnd, "a", 64, 203, false), new LayerSpec.Act(Activation.GELU_TANH, 203),
            linear(rnd, "b", 203, 64, true))),
        new LayerSpec.Act(Activation.TANH, 64),
        linear(rnd, "c", 64, 37, Parallel.ROW),
        new LayerSpec.Act(Activation.SIGMOID, 37),
        linear(rnd, "d", 37, 11, Parallel.COLUMN),
        new LayerSpec.Act(Activation.SOFTMAX, 11)));
    checkModel(spec, p, dtype);
  }

  @ParameterizedTest
  @ValueSource(ints = {1, 2, 3, 4})
  void vocabParallelEmbeddingAndBagsMatchFloat64(int p) {
    int vocab = 23;
    for (boolean bag : new boolean[] {false, true}) {
      for (boolean mean : bag ? new boolean[] {false, true} : new boolean[] {false}) {
        ModelSpec spec = new ModelSpec(vocab, List.of(
            new LayerSpec.Embedding("emb", vocab, 16, rnd.floats(vocab * 16, 1), bag, mean),
            linear(rnd, "fc", 16, 9, true)));
        Plan plan = Plan.build(spec.graph(), p);
        int[][] rowsIds = new int[p][];
        int[][][] bags = new int[p][][];
        for (int r = 0; r < p; r++) {
          int n = rowsFor(r, 1);
          rowsIds[r] = new int[n];
          bags[r] = new int[n][];
          for (int i = 0; i < n; i++) {
            rowsIds[r][i] = rnd.nextInt(vocab);
            bags[r][i] = new int[rnd.nextInt(4)];
            for (int j = 0; j < bags[r][i].length; j++) {
              bags[r][i][j] = rnd.nextInt(vocab);
            }
          }
        }
        List<float[]> got = LocalCommunicator.run(p, TIMEOUT_MS, rank -> comm -> {
          try (CpuBackend be = new CpuBackend();
              RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank))) {
            TpRunner runner = new TpRunner(m, comm);
            InputBatch in;
            if (bag) {
              int[][] b = bags[rank];
              int[] off = new int[b.length + 1];
              List<Integer> ids = new ArrayList<>();
              for (int i = 0; i < b.length; i++) {
                off[i + 1] = off[i] + b[i].length;
                for (int id : b[i]) {
                  ids.add(id);
                }
              }
              in = InputBatch.bags(ids.stream().mapToInt(Integer::intValue).toArray(), off, b.length);
            } else {
              in = InputBatch.ids(rowsIds[rank], rowsIds[rank].length);
            }
            float[] y = runner.step(in);
            InputBatch empty = InputBatch.empty(in.kind(), 0);
            assertThat(runner.step(empty)).isNull();
            return y;
          }
        });
        for (int r = 0; r < p; r++) {
          double[][] ref = bag ? Reference.forwardBags(spec, bags[r]) : Reference.forwardIds(spec, rowsIds[r]);
          Compare.assertClose(got.get(r), ref, "rank " + r + " bag=" + bag + " mean=" + mean + " p=" + p);
        }
      }
    }
  }

  @ParameterizedTest
  @ValueSource(ints = {2, 3, 4})
  void weightBytesPerRankAreWithinOneUnitOfOneOverP(int p) {
    int in = 50;
    int hidden = 203;
    ModelSpec spec = new ModelSpec(in, List.of(linear(rnd, "up", in, hidden, true),
        new LayerSpec.Act(Activation.GELU, hidden), linear(rnd, "down", hidden, in, false)));
    Plan plan = Plan.build(spec.graph(), p);
    long total = 4L * (hidden * in + hidden + in * hidden);
    // one unit: one output row of "up" (weight row + bias element) plus one input column of "down"
    long unit = 4L * (in + 1) + 4L * in;
    for (int r = 0; r < p; r++) {
      long b = plan.shard(spec.weights(), r).bytes();
      assertThat(b).isEqualTo(plan.weightBytes(r));
      assertThat((double) b).as("rank %d", r).isCloseTo(total / (double) p, org.assertj.core.data.Offset.offset(
          (double) unit));
    }
    assertThat(plan.explain()).contains("weight bytes per rank: [");
  }

  @org.junit.jupiter.api.Test
  void explainShowsOpsLayoutsCollectivesBytesPerRowAndWeightBytesPerRank() {
    Plan plan = Plan.build(fiveOpModel(rnd).graph(), 3);
    String text = plan.explain();
    assertThat(text).contains("Plan for tp=3: input width 50, output 37 (SHARDED)");
    assertThat(text).containsPattern("column linear fc1 \\[50->203\\] \\+gelu\\s+REPLICATED\\s+SHARDED");
    assertThat(text).containsPattern("row linear fc2 \\[203->64\\]\\s+SHARDED\\s+PARTIAL");
    // all-reduce of 64 floats over 3 ranks with a ring: 2 * (2/3) * 256 bytes = 341 per row
    assertThat(text).containsPattern("PARTIAL\\s+REPLICATED\\s+all-reduce\\s+341");
    assertThat(text).containsPattern("output rows to their owner\\s+SHARDED\\s+-\\s+all-to-all");
    assertThat(text).contains("collectives per forward pass: 1");
    long w0 = plan.weightBytes(0);
    assertThat(text).contains("weight bytes per rank: [" + w0 + ", ");
    assertThat(Plan.build(fiveOpModel(rnd).graph(), 1).explain()).contains("collectives per forward pass: 0");
  }

  @org.junit.jupiter.api.Test
  void badInputGetsClearErrors() {
    ModelSpec spec = fiveOpModel(rnd);
    assertThatThrownBy(() -> Plan.build(spec.graph(), 0)).hasMessage("Tensor-parallel size must be positive, got 0");
    assertThatThrownBy(() -> Plan.build(spec.graph(), -1)).hasMessage("Tensor-parallel size must be positive, got -1");
    ModelSpec narrow = new ModelSpec(8, List.of(linear(rnd, "tiny", 8, 3, Parallel.COLUMN)));
    assertThatThrownBy(() -> Plan.build(narrow.graph(), 4)).hasMessageContaining(
        "Cannot split the output features of 'tiny' of size 3 across p=4 ranks");
    assertThatThrownBy(() -> new LayerSpec.Linear("fc", 4, 3, rnd.floats(12, 1), rnd.floats(4, 1), Parallel.AUTO))
        .hasMessage("Tensor 'fc.bias' has 4 elements, expected [3] = 3");
    assertThatThrownBy(() -> new ModelSpec(50, List.of(linear(rnd, "fc1", 49, 10, true))))
        .hasMessage("layer 0 (linear fc1 [49 -> 10]) takes width 49 but its input has width 50");
    Plan plan = Plan.build(spec.graph(), 2);
    assertThatThrownBy(() -> LocalCommunicator.run(2, TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank))) {
        return new TpRunner(m, comm).step(InputBatch.dense(new float[3 * 49], 3, 49));
      }
    })).hasMessage("Input rows have width 49, the model expects 50");
    ModelSpec emb = new ModelSpec(5, List.of(new LayerSpec.Embedding("e", 5, 3, rnd.floats(15, 1), false, false)));
    Plan ep = Plan.build(emb.graph(), 1);
    assertThatThrownBy(() -> LocalCommunicator.run(1, TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          RankModel m = new RankModel(ep, rank, be, ep.shard(emb.weights(), rank))) {
        return new TpRunner(m, comm).step(InputBatch.ids(new int[] {1, 7}, 2));
      }
    })).hasMessage("Row 1 of the batch has id 7 outside the vocabulary [0, 5) of embedding e");
  }
}
