package org.sparktp.nn;

import org.sparktp.nn.ops.Weights;
import org.sparktp.nn.run.TpRunner;
import org.sparktp.nn.run.RankModel;
import org.sparktp.nn.plan.Plan;
import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Activation;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.shard.Split;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;
import org.sparktp.testing.Compare;
import org.sparktp.testing.Rand;
import org.sparktp.testing.Reference;

/**
 * {@code spark.tp.activation-dtype} in the layer-list engine: the activations handed from op to op are stored
 * in bf16/f16 (observed at every op boundary), partial sums stay f32 until reduced, all-gathers move half the
 * bytes, and the outputs stay within the stated half-precision tolerance ({@link Compare#HALF_TOLERANCE}, 2e-2
 * relative to the output's scale) of the float64 reference; with f32 activations the f32 path is unchanged.
 */
class ActivationDtypeTest {
  final Rand rnd = new Rand();

  /** A model with every kind of step: replicated, column and row linears, a residual, norms and softmax. */
  ModelSpec model() {
    return new ModelSpec(50, List.of(
        EngineTest.linear(rnd, "in", 50, 64, Parallel.REPLICATED),
        new LayerSpec.Residual(List.of(
            new LayerSpec.LayerNorm("ln1", 64, rnd.floats(64, 1), null, 1e-5f),
            EngineTest.linear(rnd, "a", 64, 203, false), new LayerSpec.Act(Activation.GELU_TANH, 203),
            EngineTest.linear(rnd, "b", 203, 64, true))),
        new LayerSpec.Act(Activation.TANH, 64),
        EngineTest.linear(rnd, "c", 64, 37, Parallel.ROW),
        new LayerSpec.LayerNorm("ln2", 37, rnd.floats(37, 1), rnd.floats(37, 1), 1e-5f),
        EngineTest.linear(rnd, "d", 37, 11, Parallel.COLUMN),
        new LayerSpec.Act(Activation.SOFTMAX, 11)));
  }

  record Run(float[] y, List<String> boundaries, long bytesSent) {}

  /** Runs {@code rows} (the same on every rank) through RankModel.forward; returns rank 0's replicated output. */
  static List<Run> run(ModelSpec spec, int p, float[] x, int rows, DType weights, DType activations) {
    Plan plan = Plan.build(spec.graph(), p);
    return LocalCommunicator.run(p, EngineTest.TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank), weights)) {
        RunContext ctx = new RunContext(be, comm).activationDtype(activations);
        List<String> seen = Collections.synchronizedList(new ArrayList<>());
        ctx.observeBoundaries(t -> seen.add(t.layout() + " " + t.local().dtype()));
        float[] y;
        try (DistTensor out = Mappings.toReplicated(m.forward(InputBatch.dense(x, rows, spec.inputDim()), ctx), ctx)) {
          assertThat(out.local().dtype()).as("the model's output").isEqualTo(DType.F32);
          y = be.download(out.local());
        }
        return new Run(y, seen, comm.stats().bytesSent());
      }
    });
  }

  static java.util.stream.Stream<Arguments> cases() {
    List<Arguments> out = new ArrayList<>();
    for (int p = 1; p <= 4; p++) {
      out.add(Arguments.of(p, DType.F32, DType.BF16));
      out.add(Arguments.of(p, DType.BF16, DType.BF16));
    }
    out.add(Arguments.of(3, DType.F32, DType.F16));
    return out.stream();
  }

  @ParameterizedTest(name = "tp {0}, {1} weights, {2} activations")
  @MethodSource("cases")
  void halfActivationsAreStoredBetweenOpsAndMatchFloat64(int p, DType weights, DType act) {
    ModelSpec spec = model();
    int rows = 9;
    float[] x = rnd.floats(rows * spec.inputDim(), 2);
    List<Run> got = run(spec, p, x, rows, weights, act);
    double[][] ref = Reference.forward(spec, rnd.rows(x, rows, spec.inputDim()));
    for (int r = 0; r < p; r++) {
      Run run = got.get(r);
      Compare.assertClose(run.y(), ref, "rank " + r + ", tp " + p + ", " + weights + " weights, " + act
          + " activations, " + rnd, Compare.HALF_TOLERANCE);
      // every op's output is stored in the activation dtype, except partial sums (f32 until reduced)
      assertThat(run.boundaries()).as("op boundaries").hasSizeGreaterThan(8);
      for (String b : run.boundaries()) {
        assertThat(b).as("boundary of rank " + r).isEqualTo(b.startsWith("PARTIAL") ? "PARTIAL F32"
            : b.substring(0, b.indexOf(' ')) + " " + act);
      }
      if (p > 1) {
        assertThat(run.boundaries()).as("tp > 1 has partial sums").contains("PARTIAL F32");
      }
      // the model's output (the last op's) is not rounded: not every value is a bf16 value
      boolean wide = false;
      for (float v : run.y()) {
        wide |= (Float.floatToRawIntBits(v) & 0xffff) != 0;
      }
      assertThat(wide).as("the output keeps f32 precision").isTrue();
    }
    // rounding at every boundary really happened: the output differs from the f32-activation run
    List<Run> wide = run(spec, p, x, rows, weights, DType.F32);
    assertThat(wide.get(0).y()).isNotEqualTo(got.get(0).y());
  }

  @ParameterizedTest(name = "tp {0}")
  @ValueSource(ints = {1, 3})
  void f32ActivationsWithBf16WeightsStayF32(int p) {
    ModelSpec spec = model();
    int rows = 5;
    float[] x = rnd.floats(rows * spec.inputDim(), 2);
    List<Run> got = run(spec, p, x, rows, DType.BF16, DType.F32);
    double[][] ref = Reference.forward(spec, rnd.rows(x, rows, spec.inputDim()));
    Compare.assertClose(got.get(0).y(), ref, "bf16 weights, f32 activations, " + rnd, Compare.HALF_TOLERANCE);
    assertThat(got.get(0).boundaries()).isNotEmpty().allMatch(b -> b.endsWith(" F32"));
  }

  /** f32 activations are the f32 path as it was: within 1e-5 of float64, bit-identical to the default context. */
  @Test
  void f32ActivationsLeaveF32ModelsUnchanged() {
    ModelSpec spec = model();
    int rows = 6;
    float[] x = rnd.floats(rows * spec.inputDim(), 2);
    List<Run> f32 = run(spec, 3, x, rows, DType.F32, DType.F32);
    Compare.assertClose(f32.get(0).y(), Reference.forward(spec, rnd.rows(x, rows, spec.inputDim())), "f32 " + rnd);
    Plan plan = Plan.build(spec.graph(), 3);
    List<float[]> plain = LocalCommunicator.run(3, EngineTest.TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank))) {
        RunContext ctx = new RunContext(be, comm);
        try (DistTensor out = Mappings.toReplicated(m.forward(InputBatch.dense(x, rows, 50), ctx), ctx)) {
          return be.download(out.local());
        }
      }
    });
    assertThat(f32.get(0).y()).isEqualTo(plain.get(0));
  }

  /** TpRunner with bf16 activations: uneven rows per rank, each rank gets its own rows back. */
  @Test
  void runnerWithBf16Activations() {
    ModelSpec spec = EngineTest.fiveOpModel(rnd);
    int p = 3;
    Plan plan = Plan.build(spec.graph(), p);
    float[][] inputs = new float[p][];
    for (int r = 0; r < p; r++) {
      inputs[r] = rnd.floats(EngineTest.rowsFor(r, 1) * spec.inputDim(), 2);
    }
    List<float[]> got = LocalCommunicator.run(p, EngineTest.TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank), DType.BF16)) {
        TpRunner runner = new TpRunner(m, comm).activationDtype(DType.BF16);
        float[] y = runner.step(InputBatch.dense(inputs[rank], inputs[rank].length / 50, 50));
        assertThat(runner.step(InputBatch.dense(new float[0], 0, 50))).isNull();
        return y;
      }
    });
    for (int r = 0; r < p; r++) {
      Compare.assertClose(got.get(r), Reference.forward(spec, rnd.rows(inputs[r], inputs[r].length / 50, 50)),
          "rank " + r + " " + rnd, Compare.HALF_TOLERANCE);
    }
  }

  /** The all-gather of a sharded bf16 activation moves bf16 on the wire: exactly half the bytes of f32. */
  @ParameterizedTest(name = "tp {0}")
  @ValueSource(ints = {2, 3, 4})
  void allGatherOfBf16ActivationsMovesHalfTheBytes(int p) {
    int rows = 7;
    int width = 53; // uneven split
    Split split = Split.balanced(width, p);
    float[] full = rnd.floats(rows * width, 3);
    List<Object[]> res = LocalCommunicator.run(p, EngineTest.TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend()) {
        Object[] out = new Object[4];
        int i = 0;
        for (DType dt : new DType[] {DType.F32, DType.BF16}) {
          RunContext ctx = new RunContext(be, comm);
          long before = comm.stats().bytesSent();
          float[] mine = new float[rows * split.length(rank)];
          for (int r = 0; r < rows; r++) {
            System.arraycopy(full, r * width + split.offset(rank), mine, r * split.length(rank), split.length(rank));
          }
          Tensor f = be.upload(mine, rows, split.length(rank));
          Tensor local = dt == DType.F32 ? f : be.convert(f, dt);
          if (local != f) {
            f.close();
          }
          try (DistTensor g = Mappings.toReplicated(DistTensor.sharded(local, split), ctx)) {
            assertThat(g.local().dtype()).isEqualTo(dt);
            out[i++] = be.download(g.local());
            out[i++] = comm.stats().bytesSent() - before;
          }
        }
        return out;
      }
    });
    for (int r = 0; r < p; r++) {
      float[] f32 = (float[]) res.get(r)[0];
      float[] bf16 = (float[]) res.get(r)[2];
      long b32 = (Long) res.get(r)[1];
      long b16 = (Long) res.get(r)[3];
      assertThat(f32).as("f32 all-gather is exact").isEqualTo(full);
      for (int e = 0; e < full.length; e++) {
        // bf16 is the top 16 bits of f32: the gathered value is the f32 rounded to 8 mantissa bits
        assertThat((double) Math.abs(bf16[e] - full[e])).isLessThanOrEqualTo(Math.abs(full[e]) * Math.pow(2, -8));
      }
      assertThat(b32).isEqualTo(4L * rows * split.length(r));
      assertThat(b16).as("bytes sent by rank %d", r).isEqualTo(b32 / 2);
    }
  }

  /**
   * Embedding tables are stored in the weights' dtype (a bf16 table is half the bytes) and their rows widened to
   * f32 as they are looked up: ids, sum bags and mean bags at tp 1-4 against float64, within 2e-2.
   */
  @ParameterizedTest(name = "tp {0}")
  @ValueSource(ints = {1, 2, 3, 4})
  void bf16EmbeddingTablesMatchFloat64(int p) {
    int vocab = 29; // uneven vocabulary split
    for (int kind = 0; kind < 3; kind++) {
      boolean bag = kind > 0;
      boolean mean = kind == 2;
      ModelSpec spec = new ModelSpec(vocab, List.of(
          new LayerSpec.Embedding("emb", vocab, 16, rnd.floats(vocab * 16, 1), bag, mean),
          EngineTest.linear(rnd, "fc", 16, 9, true)));
      Plan plan = Plan.build(spec.graph(), p);
      ModelSpec table = new ModelSpec(vocab, List.of(spec.layers().get(0))); // the table alone, for its bytes
      Plan tablePlan = Plan.build(table.graph(), p);
      int n = 6;
      int[] ids = new int[n];
      int[][] bags = new int[n][];
      for (int i = 0; i < n; i++) {
        ids[i] = rnd.nextInt(vocab);
        bags[i] = new int[1 + rnd.nextInt(4)];
        for (int j = 0; j < bags[i].length; j++) {
          bags[i][j] = rnd.nextInt(vocab);
        }
      }
      List<Object[]> got = LocalCommunicator.run(p, EngineTest.TIMEOUT_MS, rank -> comm -> {
        try (CpuBackend be = new CpuBackend();
            RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank), DType.BF16);
            RankModel t16 = new RankModel(tablePlan, rank, be, tablePlan.shard(table.weights(), rank),
                DType.BF16);
            RankModel t32 = new RankModel(tablePlan, rank, be, tablePlan.shard(table.weights(), rank),
                DType.F32)) {
          InputBatch in;
          if (bag) {
            int[] off = new int[n + 1];
            List<Integer> flat = new ArrayList<>();
            for (int i = 0; i < n; i++) {
              off[i + 1] = off[i] + bags[i].length;
              for (int id : bags[i]) {
                flat.add(id);
              }
            }
            in = InputBatch.bags(flat.stream().mapToInt(Integer::intValue).toArray(), off, n);
          } else {
            in = InputBatch.ids(ids, n);
          }
          RunContext ctx = new RunContext(be, comm).activationDtype(DType.BF16);
          try (DistTensor out = Mappings.toReplicated(m.forward(in, ctx), ctx)) {
            return new Object[] {be.download(out.local()), t16.weightBytes(), t32.weightBytes()};
          }
        }
      });
      double[][] ref = bag ? Reference.forwardBags(spec, bags) : Reference.forwardIds(spec, ids);
      for (int r = 0; r < p; r++) {
        Compare.assertClose((float[]) got.get(r)[0], ref, "rank " + r + " kind " + kind + " tp " + p + " " + rnd,
            Compare.HALF_TOLERANCE);
        long b16 = (Long) got.get(r)[1];
        long b32 = (Long) got.get(r)[2];
        long rowsHeld = ((org.sparktp.nn.ops.EmbeddingOp) tablePlan.ops().get(0)).vocabSplit(p).length(r);
        assertThat(b32).as("f32 table bytes on rank %d", r).isEqualTo(4L * 16 * rowsHeld);
        assertThat(b16).as("bf16 table bytes on rank %d", r).isEqualTo(2L * 16 * rowsHeld)
            .isEqualTo(tablePlan.weightBytes(r, DType.BF16));
      }
    }
  }

  /** int8 weights: the embedding table is stored in bf16 (Plan.tableDtype) and the model stays within int8's tolerance. */
  @Test
  void int8ModelsKeepTheirEmbeddingTablesInBf16() {
    int vocab = 31;
    ModelSpec spec = new ModelSpec(vocab, List.of(
        new LayerSpec.Embedding("emb", vocab, 24, rnd.floats(vocab * 24, 1), false, false),
        EngineTest.linear(rnd, "fc", 24, 40, true), new LayerSpec.Act(Activation.GELU, 40),
        EngineTest.linear(rnd, "out", 40, 9, true)));
    int p = 2;
    Plan plan = Plan.build(spec.graph(), p);
    assertThat(Weights.tableDtype(DType.I8)).isEqualTo(DType.BF16);
    int[] ids = {0, 30, 7, 7, 15};
    List<float[]> got = LocalCommunicator.run(p, EngineTest.TIMEOUT_MS, rank -> comm -> {
      try (CpuBackend be = new CpuBackend();
          RankModel m = new RankModel(plan, rank, be, plan.shard(spec.weights(), rank), DType.I8)) {
        RunContext ctx = new RunContext(be, comm).activationDtype(DType.BF16);
        try (DistTensor out = Mappings.toReplicated(m.forward(InputBatch.ids(ids, ids.length), ctx), ctx)) {
          return be.download(out.local());
        }
      }
    });
    Compare.assertClose(got.get(0), Reference.forwardIds(spec, ids), "int8 weights, bf16 table and activations "
        + rnd, Compare.tolerance(DType.I8));
  }

  /**
   * The CPU backend's bulk f32 -> bf16 conversion (every op boundary) rounds to nearest, ties to even, keeps NaN a
   * NaN and infinities infinite, bit for bit as the scalar reference {@code HalfFloats.floatToBf16}; the way back
   * is exact. Checked on ties written out by hand and on random values of every magnitude.
   */
  @Test
  void bf16ConversionRoundsToNearestEven() {
    float[] special = {1f + 0x1p-8f, 1f + 3 * 0x1p-8f, -(1f + 0x1p-8f), 1f + 0x1p-8f + 0x1p-20f, Float.NaN,
        Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY, Float.MAX_VALUE, Float.MIN_VALUE, -0f, 0f, 3.0234375f};
    float[] expected = {1f, 1f + 4 * 0x1p-8f, -1f, 1f + 2 * 0x1p-8f, Float.NaN, Float.POSITIVE_INFINITY,
        Float.NEGATIVE_INFINITY, Float.POSITIVE_INFINITY, 0f, -0f, 0f, 3.03125f};
    int n = 200_003; // more than one chunk
    float[] x = new float[n];
    java.util.SplittableRandom r = new java.util.SplittableRandom(rnd.seed());
    for (int i = 0; i < n; i++) {
      x[i] = i < special.length ? special[i] : Float.intBitsToFloat(r.nextInt());
    }
    try (CpuBackend be = new CpuBackend(); Tensor f = be.upload(x, 1, n); Tensor h = be.convert(f, DType.BF16);
        Tensor back = be.convert(h, DType.F32)) {
      float[] y = be.download(back);
      java.nio.ShortBuffer bits = be.hostBuffer(h).asShortBuffer();
      for (int i = 0; i < special.length; i++) {
        assertThat(Float.valueOf(y[i])).as("bf16 of %s", special[i]).isEqualTo(Float.valueOf(expected[i]));
      }
      for (int i = 0; i < n; i++) {
        assertThat(bits.get(i)).as("element %d (%s), seed %d", i, x[i], rnd.seed())
            .isEqualTo(org.sparktp.tensor.HalfFloats.floatToBf16(x[i]));
        assertThat(Float.floatToRawIntBits(y[i])).isEqualTo(bits.get(i) << 16);
      }
    }
  }
}
