package org.sparktp.model;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The element types a safetensors header may name, with their sizes. Every one is recognised (so a
 * checkpoint that also holds, say, {@code I64} buffers still opens and its sizes are checked), but only
 * {@code F32}, {@code F16} and {@code BF16} can be loaded as weights; they are converted to float32.
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
  F8_E5M2(1, false);

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

  /** True when tensors of this type can be read as float32 weights. */
  public boolean isLoadable() {
    return loadable;
  }

  /** The type named {@code name} in a safetensors header, or null when the name is not known. */
  public static DType lookup(String name) {
    for (DType t : values()) {
      if (t.name().equals(name)) {
        return t;
      }
    }
    return null;
  }

  /** The names of the loadable types, for error messages. */
  public static String loadableNames() {
    return "F32, F16, BF16";
  }

  /**
   * Converts {@code count} little-endian elements of this type starting at {@code src[srcOff]} to
   * float32 in {@code dst[dstOff..]}.
   */
  void toFloats(byte[] src, int srcOff, float[] dst, int dstOff, int count) {
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
}
