package org.sparktp.backend;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;
import org.sparktp.tensor.DType;

/** {@code spark.tp.dtype=auto}: the table per instruction set, and the one line that says which rule applied. */
class PrecisionAutoTest {
  @Test
  void bf16OnlyForAHalfCheckpointOnACpuWithBf16DotProducts() {
    assertThat(Precision.resolve("auto", DType.BF16, true, "k")).isEqualTo(DType.BF16);
    assertThat(Precision.resolve("auto", DType.F16, true, "k")).isEqualTo(DType.BF16);
    assertThat(Precision.resolve("auto", DType.BF16, false, "k")).isEqualTo(DType.F32);
    assertThat(Precision.resolve("auto", DType.F32, true, "k")).isEqualTo(DType.F32);
    assertThat(Precision.resolve("auto", null, true, "k")).isEqualTo(DType.F32);
    assertThat(Precision.resolve(" AUTO ", DType.BF16, true, "k")).isEqualTo(DType.BF16);
  }

  @Test
  void theReasonNamesTheRuleAndTheIsa() {
    assertThat(Precision.autoReason(DType.BF16, true, "avx512_core_amx"))
        .startsWith("auto -> bf16: bf16 checkpoint and oneDNN's avx512_core_amx runs bf16 matmuls on AMX tiles")
        .endsWith("int8 stays opt-in");
    assertThat(Precision.autoReason(DType.F16, true, "avx512_core_bf16"))
        .startsWith("auto -> bf16: f16 checkpoint and oneDNN's avx512_core_bf16 has bf16 dot products (AVX512-BF16)");
    assertThat(Precision.autoReason(DType.BF16, false, "avx512_core"))
        .isEqualTo("auto -> f32: bf16 checkpoint, but oneDNN's avx512_core has no bf16 dot products (bf16 would be "
            + "emulated, slower than f32): the weights are widened to f32 once, at load");
    assertThat(Precision.autoReason(DType.F32, true, "avx512_core_amx"))
        .startsWith("auto -> f32: the weights are f32 and auto never narrows them");
    assertThat(Precision.autoReason(null, true, "avx2")).startsWith("auto -> f32: the weights are in-memory f32");
  }
}
