package org.sparktp.backend;

import java.util.Locale;
import org.sparktp.tensor.DType;

/**
 * The precision policy ({@code spark.tp.dtype}): the storage and GEMM input type of the linear weights.
 * GEMMs accumulate in float32; layer norm, softmax and the elementwise ops compute in float32; the
 * activations between ops are float32 (a bf16/f16 GEMM rounds its f32 input inside the kernel).
 */
public final class Precision {
  private Precision() {}

  /**
   * {@code f32}, {@code bf16} or {@code f16} as named, or for {@code auto}: bf16 when the backend has native
   * bf16 GEMMs ({@code nativeBf16}: AMX or AVX512-BF16 on a CPU) and the checkpoint stores its weights in
   * bf16 or f16 ({@code checkpoint}; null or F32 for float32 or in-memory weights), else f32.
   */
  public static DType resolve(String value, DType checkpoint, boolean nativeBf16, String setting) {
    String v = value == null ? "auto" : value.trim().toLowerCase(Locale.ROOT);
    if (v.equals("auto")) {
      return nativeBf16 && checkpoint != null && checkpoint.isHalf() ? DType.BF16 : DType.F32;
    }
    return DType.parseStorage(value, setting);
  }
}
