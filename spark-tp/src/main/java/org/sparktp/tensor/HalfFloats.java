package org.sparktp.tensor;

/**
 * Conversions between float32 and the two 16-bit float formats of checkpoints: IEEE 754 binary16
 * ({@code F16}: 1 sign, 5 exponent, 10 mantissa bits) and bfloat16 ({@code BF16}: the upper 16 bits of
 * a float32). Widening is exact; narrowing rounds to nearest, ties to even, as PyTorch does.
 * ({@code Float.float16ToFloat} exists only from Java 20.)
 */
public final class HalfFloats {
  private HalfFloats() {}

  /** The float32 value of the binary16 bits in the low 16 bits of {@code h}; exact. */
  public static float halfToFloat(int h) {
    int sign = (h & 0x8000) << 16;
    int exp = (h >>> 10) & 0x1f;
    int mant = h & 0x3ff;
    if (exp == 0) {
      // zero or subnormal: mant * 2^-24, exact in float32
      float v = mant * 0x1p-24f;
      return sign != 0 ? -v : v;
    }
    if (exp == 0x1f) {
      // infinity (mant == 0) or NaN, keeping the payload
      return Float.intBitsToFloat(sign | 0x7f800000 | (mant << 13));
    }
    return Float.intBitsToFloat(sign | ((exp - 15 + 127) << 23) | (mant << 13));
  }

  /** The binary16 bits (in the low 16 bits) nearest to {@code f}, ties to even; overflow gives infinity. */
  public static short floatToHalf(float f) {
    int bits = Float.floatToRawIntBits(f);
    int sign = (bits >>> 16) & 0x8000;
    int abs = bits & 0x7fffffff;
    if (abs >= 0x7f800000) {
      // infinity, or NaN kept quiet with the top of its payload
      return (short) (sign | (abs > 0x7f800000 ? 0x7e00 | ((abs >>> 13) & 0x3ff) : 0x7c00));
    }
    if (abs >= 0x477ff000) {
      // >= 65520, halfway between the largest half (65504) and 2^16: rounds to infinity
      return (short) (sign | 0x7c00);
    }
    if (abs >= 0x38800000) {
      // a normal half (>= 2^-14): rebias the exponent, round away the low 13 mantissa bits
      int h = (((abs >>> 23) - 127 + 15) << 10) | ((abs & 0x7fffff) >>> 13);
      int rest = abs & 0x1fff;
      if (rest > 0x1000 || (rest == 0x1000 && (h & 1) != 0)) {
        h++; // a carry into the exponent is the correct next value
      }
      return (short) (sign | h);
    }
    if (abs <= 0x33000000) {
      // at most 2^-25, half the smallest subnormal: rounds to (signed) zero
      return (short) sign;
    }
    // a subnormal half: the value in units of 2^-24
    int e = abs >>> 23;
    int m = (abs & 0x7fffff) | 0x800000;
    int shift = 126 - e; // 14..24
    int h = m >>> shift;
    int rest = m & ((1 << shift) - 1);
    int halfway = 1 << (shift - 1);
    if (rest > halfway || (rest == halfway && (h & 1) != 0)) {
      h++;
    }
    return (short) (sign | h);
  }

  /** The float32 value of the bfloat16 bits in the low 16 bits of {@code b}; exact. */
  public static float bf16ToFloat(int b) {
    return Float.intBitsToFloat((b & 0xffff) << 16);
  }

  /** The bfloat16 bits nearest to {@code f}, ties to even; NaN stays NaN. */
  public static short floatToBf16(float f) {
    int bits = Float.floatToRawIntBits(f);
    if ((bits & 0x7fffffff) > 0x7f800000) {
      return (short) ((bits >>> 16) | 0x40);
    }
    int lsb = (bits >>> 16) & 1;
    return (short) ((bits + 0x7fff + lsb) >>> 16);
  }
}
