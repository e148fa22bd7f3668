package org.sparktp.backend;

import java.util.Locale;
import org.sparktp.tensor.DType;

/**
 * The precision policy. {@code spark.tp.dtype}: the storage and GEMM input type of the linear weights.
 * {@code spark.tp.activation-dtype}: the storage type of the activations handed from op to op. GEMMs
 * accumulate in float32; layer norm, softmax and the elementwise ops compute in float32 (an op widens a
 * bf16/f16 input to f32, computes, and its output is rounded once, to nearest even, at the op boundary);
 * partial sums of row-parallel layers are reduced in f32 and rounded once after the reduction.
 */
public final class Precision {
  private Precision() {}

  /** The values {@code spark.tp.activation-dtype} and {@code --activation-dtype} accept. */
  public static final String ACTIVATION_VALUES = "auto, f32, bf16 or f16";

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

  /**
   * Why {@code spark.tp.dtype=auto} gives what {@link #resolve} gives, in one line for {@code explain} and
   * {@code doctor}: the table per instruction set that {@code auto} follows ({@code isa}: oneDNN's, such as
   * {@code avx512_core_amx}, {@code avx512_core_bf16}, {@code avx512_core}, {@code avx2}). bf16 only for a bf16/f16
   * checkpoint on a CPU with bf16 dot products (AMX or AVX512-BF16: there bf16 matmuls measured faster than f32 at
   * every row count, 1 to 2048, see docs/precision.md); f32 weights are never narrowed and int8 is never picked
   * (both change results: ask for them).
   */
  public static String autoReason(DType checkpoint, boolean nativeBf16, String isa) {
    DType got = resolve("auto", checkpoint, nativeBf16, "auto");
    String weights = checkpoint == null ? "in-memory f32" : checkpoint.id();
    if (checkpoint == null || !checkpoint.isHalf()) {
      return "auto -> " + got.id() + ": the weights are " + weights + " and auto never narrows them (bf16 or int8 "
          + "change results; ask for them with spark.tp.dtype)";
    }
    if (!nativeBf16) {
      return "auto -> f32: " + weights + " checkpoint, but oneDNN's " + isa + " has no bf16 dot products (bf16 "
          + "would be emulated, slower than f32): the weights are widened to f32 once, at load";
    }
    return "auto -> bf16: " + weights + " checkpoint and oneDNN's " + isa + (isa.contains("amx")
        ? " runs bf16 matmuls on AMX tiles" : " has bf16 dot products (AVX512-BF16)") + ", faster than f32 at every "
        + "batch size; int8 stays opt-in";
  }

  /**
   * The activations' storage type for {@code value} ({@code auto}, {@code f32}, {@code bf16}, {@code f16}; case
   * ignored) given the weights' resolved storage type {@code weights}: {@code auto} is the weights' type when it
   * is a float type (f32, bf16, f16) and bf16 for any other (int8 weights). A bad value is an error that names
   * {@code setting} and the allowed values.
   */
  public static DType activation(String value, DType weights, String setting) {
    String v = value == null ? "auto" : value.trim().toLowerCase(Locale.ROOT);
    switch (v) {
      case "auto":
        if (weights == null || weights == DType.F32) {
          return DType.F32;
        }
        return weights.isHalf() ? weights : DType.BF16;
      case "f32", "float32", "fp32":
        return DType.F32;
      case "bf16", "bfloat16":
        return DType.BF16;
      case "f16", "float16", "fp16", "half":
        return DType.F16;
      default:
        throw new IllegalArgumentException("Unknown activation dtype '" + value + "' (" + setting + "): use "
            + ACTIVATION_VALUES);
    }
  }
}
