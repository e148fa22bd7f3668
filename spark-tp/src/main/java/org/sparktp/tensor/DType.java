package org.sparktp.tensor;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Locale;

/**
 * Element types: those of tensors ({@code F32}, {@code BF16}, {@code F16}; {@code I32} for ids) and every
 * type a safetensors header may name, with their sizes in bytes. Every one is recognised (so a checkpoint
 * that also holds, say, {@code I64} buffers still opens and its sizes are checked), but only {@code F32},
 * {@code F16} and {@code BF16} can be loaded as weights ({@link #isLoadable()}).
 *
 * <p>The enum constant's name is the safetensors name ({@link #safetensorsName()}); {@link #id()} is the
 * lower-case name used by {@code spark.tp.dtype} and {@code --dtype}.
 *
 * <p>Two int8 storages of linear weights, neither of them a tensor that travels between ops: a linear's weight is
 * loaded in its float type and quantized once, per output channel, when its kernel is prepared
 * ({@code Backend.prepareLinear(weight, bias, act, storage)}).
 * <ul>
 *   <li>{@code I8} ({@code spark.tp.dtype=int8}, {@link #id()} {@code int8}): <b>W8A8</b>, dynamic quantization as
 *   PyTorch and ONNX Runtime call it: the activations entering the linear are quantized too, per row (token), on
 *   the fly, and the GEMM multiplies s8 by s8 with s32 sums;</li>
 *   <li>{@link #I8_WO} ({@code int8-wo}): <b>weight-only</b>: the activations stay float, the s8 weights are widened
 *   inside the kernel.</li>
 * </ul>
 */
public enum DType {
  F32(4, true),
  F16(2, true),
  BF16(2, true),
  F64(8, false),
  I64(8, false),
  U64(8, false),
  I32(4, false),
  U32(4, false),
  I16(2, false),
  U16(2, false),
  I8(1, false),
  U8(1, false),
  BOOL(1, false),
  F8_E4M3(1, false),
  F8_E5M2(1, false),
  /** Not a safetensors type: the int8 weight-only storage of linear weights ({@code spark.tp.dtype=int8-wo}). */
  I8_WO(1, false);

  private final int size;
  private final boolean loadable;

  DType(int size, boolean loadable) {
    this.size = size;
    this.loadable = loadable;
  }

  /** Bytes per element. */
  public int size() {
    return size;
  }

  /** The name in a safetensors header ({@code "F32"}, {@code "BF16"}, ...; {@code "I8"} for {@link #I8_WO}). */
  public String safetensorsName() {
    return this == I8_WO ? "I8" : name();
  }

  /**
   * The lower-case name of configuration values: {@code f32}, {@code bf16}, {@code f16}, {@code int8} (I8, W8A8),
   * {@code int8-wo} (I8_WO, weight-only).
   */
  public String id() {
    return this == I8 ? "int8" : this == I8_WO ? "int8-wo" : name().toLowerCase(Locale.ROOT);
  }

  /** True for the two int8 storages of linear weights: {@link #I8} (W8A8) and {@link #I8_WO} (weight-only). */
  public boolean isInt8() {
    return this == I8 || this == I8_WO;
  }

  /** True for the float types a tensor between ops or a float weight may have (F32, BF16, F16). */
  public boolean isFloat() {
    return this == F32 || this == BF16 || this == F16;
  }

  /**
   * The type a linear weight to be stored as {@code this} is held in until its kernel is prepared, when it
   * was loaded as {@code loaded}: the storage type itself for the float types; for {@code I8} (quantized by
   * the backend's {@code prepareLinear}) the loaded float type, so that nothing is widened or rounded twice; the
   * same for {@code I8_WO}.
   */
  public DType weightTensorType(DType loaded) {
    return isInt8() ? loaded : this;
  }

  /** True for the 16-bit float types, whose sums are accumulated in float32. */
  public boolean isHalf() {
    return this == BF16 || this == F16;
  }

  /** True when tensors of this type can be read as weights (F32, F16, BF16). */
  public boolean isLoadable() {
    return loadable;
  }

  /** The type named {@code name} in a safetensors header, or null when the name is not known. */
  public static DType lookup(String name) {
    for (DType t : values()) {
      if (t != I8_WO && t.name().equals(name)) {
        return t;
      }
    }
    return null;
  }

  /** The names of the loadable types, for error messages. */
  public static String loadableNames() {
    return "F32, F16, BF16";
  }

  /** The float32 value of element bits {@code bits} (F32: the raw int bits; F16/BF16: the low 16 bits). */
  public float toFloat(int bits) {
    return switch (this) {
      case F32 -> Float.intBitsToFloat(bits);
      case F16 -> HalfFloats.halfToFloat(bits);
      case BF16 -> HalfFloats.bf16ToFloat(bits);
      default -> throw new IllegalStateException(this + " is not a float type");
    };
  }

  /**
   * Converts {@code count} little-endian elements of this type starting at {@code src[srcOff]} to
   * float32 in {@code dst[dstOff..]}.
   */
  public void toFloats(byte[] src, int srcOff, float[] dst, int dstOff, int count) {
    switch (this) {
      case F32 -> ByteBuffer.wrap(src, srcOff, count * 4).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
          .get(dst, dstOff, count);
      case F16 -> {
        for (int i = 0; i < count; i++) {
          int p = srcOff + 2 * i;
          dst[dstOff + i] = HalfFloats.halfToFloat((src[p] & 0xff) | (src[p + 1] & 0xff) << 8);
        }
      }
      case BF16 -> {
        for (int i = 0; i < count; i++) {
          int p = srcOff + 2 * i;
          dst[dstOff + i] = HalfFloats.bf16ToFloat((src[p] & 0xff) | (src[p + 1] & 0xff) << 8);
        }
      }
      default -> throw new IllegalStateException(this + " cannot be converted to float32");
    }
  }

  /**
   * Converts {@code count} elements of type {@code from} read from {@code src} (at its position, in its
   * byte order) into this type, written to {@code dst} at its position; both positions advance. Float32
   * to a 16-bit type rounds to nearest, ties to even; the other way is exact.
   */
  public void convertFrom(DType from, ByteBuffer src, ByteBuffer dst, long count) {
    if (from == this) {
      int n = Math.toIntExact(count * size);
      ByteBuffer s = src.slice().order(src.order()).limit(n);
      dst.put(s);
      src.position(src.position() + n);
      return;
    }
    for (long i = 0; i < count; i++) {
      float v = switch (from) {
        case F32 -> src.getFloat();
        case F16 -> HalfFloats.halfToFloat(src.getShort());
        case BF16 -> HalfFloats.bf16ToFloat(src.getShort());
        default -> throw new IllegalStateException(from + " is not a float type");
      };
      switch (this) {
        case F32 -> dst.putFloat(v);
        case F16 -> dst.putShort(HalfFloats.floatToHalf(v));
        case BF16 -> dst.putShort(HalfFloats.floatToBf16(v));
        default -> throw new IllegalStateException(this + " is not a float type");
      }
    }
  }

  /**
   * The storage type named by a configuration value ({@code f32}, {@code bf16}, {@code f16}, {@code int8} = W8A8
   * with per-output-channel weight scales and per-row activation scales, {@link #I8}; {@code int8-wo} = int8
   * weight-only, {@link #I8_WO}; case ignored), or an error naming the allowed values and the setting.
   */
  public static DType parseStorage(String value, String setting) {
    String v = value == null ? "" : value.trim().toLowerCase(Locale.ROOT);
    return switch (v) {
      case "f32", "float32", "fp32" -> F32;
      case "bf16", "bfloat16" -> BF16;
      case "f16", "float16", "fp16", "half" -> F16;
      case "int8", "i8", "w8a8" -> I8;
      case "int8-wo", "int8_wo" -> I8_WO;
      default -> throw new IllegalArgumentException("Unknown dtype '" + value + "' (" + setting
          + "): use auto, f32, bf16, f16, int8 (W8A8) or int8-wo (int8 weight-only)");
    };
  }
}
