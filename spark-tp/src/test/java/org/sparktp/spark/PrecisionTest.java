package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Random;
import org.apache.hadoop.conf.Configuration;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparktp.TpConf;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.model.ModelWriter;
import org.sparktp.nn.ModelSpec;
import org.sparktp.tensor.DType;

/**
 * spark.tp.dtype end to end on local[4]: f32 within 1e-5 of the float64 reference, bf16/f16 weights within
 * 2e-2 (relative to the largest output), at uneven tp sizes, from in-memory weights and from half-precision
 * checkpoints read by each rank.
 */
class PrecisionTest extends SparkTestBase {

  @ParameterizedTest(name = "tp={0}, dtype {1}")
  @CsvSource({"1, bf16", "2, f16", "3, bf16", "4, f32", "3, int8", "2, int8-wo"})
  void inMemoryModelsRunInEveryDtype(int tp, String dtype) {
    Random rng = new Random(900 + tp);
    ModelSpec spec = Reference.block(rng, 50, 203, 37);
    float[][] x = inputs(rng, 41, 50, false);
    TensorParallelModel model = new TensorParallelModel(spec.model()).setTpSize(tp).setGroups(1).setBatchSize(8)
        .setDtype(dtype);
    assertThat(model.resolveDtype("cpu", spark).id()).isEqualTo(dtype);
    assertClose(outputsById(model.transform(frame(Input.FLOATS, x, 3)), x.length, "prediction"),
        Reference.forward(spec, x), dtype.equals("f32") ? 1e-5 : dtype.startsWith("int8") ? 3e-2 : 2e-2);
  }

  /** int8 from a bf16 checkpoint: each rank quantizes the bf16 block it read (not widened first), within 3e-2. */
  @Test
  void aBf16CheckpointRunsAsInt8() throws Exception {
    Random rng = new Random(78);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 23, 50, false);
    Path dir = Files.createTempDirectory("tp-int8");
    ModelWriter.write(spec.model(), new org.apache.hadoop.fs.Path(dir.toString()), new Configuration(), DType.BF16);
    TensorParallelModel m = TensorParallelModel.fromDirectory(dir.toString()).setTpSize(2).setGroups(1)
        .setBatchSize(5).setDtype("INT8");
    assertThat(m.resolveDtype("cpu", spark)).isEqualTo(DType.I8);
    assertThat(m.getOrDefault(m.dtype())).isEqualTo("int8");
    assertClose(outputsById(m.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction"),
        Reference.forward(spec, x), 3e-2);
  }

  @Test
  void aBf16CheckpointRunsInBf16UnderAutoWhereTheCpuHasIt() throws Exception {
    Random rng = new Random(77);
    ModelSpec spec = Reference.mlp(rng, 50, 203, 37);
    float[][] x = inputs(rng, 29, 50, false);
    Path dir = Files.createTempDirectory("tp-bf16");
    ModelWriter.write(spec.model(), new org.apache.hadoop.fs.Path(dir.toString()), new Configuration(), DType.BF16);
    TensorParallelModel m = TensorParallelModel.fromDirectory(dir.toString()).setTpSize(3).setGroups(1)
        .setBatchSize(4);
    DType expected = CpuBackend.hasNativeBf16() ? DType.BF16 : DType.F32;
    assertThat(m.resolveDtype("auto", spark)).isEqualTo(expected);
    assertClose(outputsById(m.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction"),
        Reference.forward(spec, x), 2e-2);
    // an f16 checkpoint with spark.tp.dtype=f32 from the session conf: widened at load, f32 GEMMs
    Path dir16 = Files.createTempDirectory("tp-f16");
    ModelWriter.write(spec.model(), new org.apache.hadoop.fs.Path(dir16.toString()), new Configuration(), DType.F16);
    TensorParallelModel m16 = TensorParallelModel.fromDirectory(dir16.toString()).setTpSize(2).setGroups(1);
    spark.conf().set(TpConf.DTYPE, "f32");
    try {
      assertThat(m16.resolveDtype("cpu", spark)).isEqualTo(DType.F32);
      assertClose(outputsById(m16.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction"),
          Reference.forward(spec, x), 2e-2);
    } finally {
      spark.conf().unset(TpConf.DTYPE);
    }
  }

  @Test
  void unknownDtypesAreRefusedWithTheAllowedValues() {
    ModelSpec spec = Reference.mlp(new Random(1), 5, 7, 3);
    assertThatThrownBy(() -> new TensorParallelModel(spec.model()).setDtype("int4"))
        .hasMessage("Unknown dtype 'int4' (dtype param): use auto, f32, bf16, f16, int8 (W8A8) or int8-wo (int8 "
            + "weight-only)");
    spark.conf().set(TpConf.DTYPE, "fp8");
    try {
      assertThatThrownBy(() -> new TensorParallelModel(spec.model()).transform(frame(Input.FLOATS, new float[][] {{1, 2, 3,
          4, 5}}, 1))).hasMessageContaining("Unknown dtype 'fp8' (spark.tp.dtype): use auto, f32, bf16, f16, int8 "
              + "(W8A8) or int8-wo (int8 weight-only)");
    } finally {
      spark.conf().unset(TpConf.DTYPE);
    }
  }

  /**
   * spark.tp.activation-dtype end to end: bf16 activations from the param (f32 weights, tp 3) and from the session
   * conf (bf16 weights, tp 2) within 2e-2 of float64; auto follows the weights; bad values are refused.
   */
  @Test
  void activationDtypeFromTheParamAndTheConf() {
    Random rng = new Random(950);
    ModelSpec spec = Reference.block(rng, 50, 203, 37);
    float[][] x = inputs(rng, 23, 50, false);
    TensorParallelModel m = new TensorParallelModel(spec.model()).setTpSize(3).setGroups(1).setBatchSize(8)
        .setDtype("f32").setActivationDtype("BF16");
    assertThat(m.getOrDefault(m.activationDtype())).isEqualTo("bf16");
    assertClose(outputsById(m.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction"),
        Reference.forward(spec, x), 2e-2);
    org.sparktp.TpSettings defaults = org.sparktp.TpSettings.of(java.util.Map.of());
    TensorParallelModel auto = new TensorParallelModel(spec.model());
    assertThat(auto.resolveActivationDtype(DType.F32, defaults)).isEqualTo(DType.F32);
    assertThat(auto.resolveActivationDtype(DType.BF16, defaults)).isEqualTo(DType.BF16);
    assertThat(auto.resolveActivationDtype(DType.I8, defaults)).as("int8 weights").isEqualTo(DType.BF16);
    spark.conf().set(TpConf.ACTIVATION_DTYPE, "bf16");
    try {
      TensorParallelModel b = new TensorParallelModel(spec.model()).setTpSize(2).setGroups(1).setDtype("bf16");
      assertClose(outputsById(b.transform(frame(Input.FLOATS, x, 2)), x.length, "prediction"),
          Reference.forward(spec, x), 2e-2);
    } finally {
      spark.conf().unset(TpConf.ACTIVATION_DTYPE);
    }
    assertThatThrownBy(() -> new TensorParallelModel(spec.model()).setActivationDtype("int8"))
        .hasMessage("Unknown activation dtype 'int8' (activationDtype param): use auto, f32, bf16 or f16");
    spark.conf().set(TpConf.ACTIVATION_DTYPE, "fp8");
    try {
      assertThatThrownBy(() -> new TensorParallelModel(spec.model()).transform(frame(Input.FLOATS, new float[][] {{1, 2, 3,
          4, 5}}, 1))).hasMessageContaining(
              "Unknown activation dtype 'fp8' (spark.tp.activation-dtype): use auto, f32, bf16 or f16");
    } finally {
      spark.conf().unset(TpConf.ACTIVATION_DTYPE);
    }
  }
}
