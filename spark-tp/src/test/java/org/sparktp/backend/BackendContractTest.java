package org.sparktp.backend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.tensor.DType;
import org.sparktp.testing.Reference;

/**
 * The contract of {@link Backend}, for every backend whose provider is on the class path ({@link Backends}): the
 * CPU always, CUDA where a GPU is (skipped by assumption elsewhere, never failed). Every {@code Backend} method runs
 * against a reference written here in plain float64 Java, on fresh random data (the seed is in each message), for
 * every dtype the method takes that {@link Backend#supports(BackendOp, DType)} claims, with the tolerance stated at
 * each assertion; an op a backend claims to run natively must never land in {@link Fallbacks}. A structural check
 * (reflection, no device needed) proves that every generic {@code Backend} method of an op a backend claims is
 * overridden with the interface's exact signature, and that no backend declares a lookalike overload in place of an
 * override (the CUDA {@code rope(x, heads, headDim, positions, theta)} that ran RoPE through the host).
 */
class BackendContractTest {
  private static final List<DType> DTYPES = List.of(DType.F32, DType.BF16, DType.F16, DType.I8, DType.I32);
  private static final List<DType> FLOATS = List.of(DType.F32, DType.BF16, DType.F16);

  private final long seed = System.nanoTime();
  private final Random rnd = new Random(seed);

  static Stream<String> backends() {
    return Backends.providers().stream().map(BackendProvider::name);
  }

  /** Every backend class, by its provider's name: a new provider adds its class here. */
  static Stream<Class<? extends Backend>> backendClasses() {
    return Stream.of(CpuBackend.class, CudaBackend.class);
  }

  private static Backend open(String name) {
    BackendProvider p = Backends.pick(name);
    String why = p.unavailableReason(0);
    assumeTrue(why == null, () -> name + " is not available here: " + why);
    return Backends.create(name, Map.of(), 0);
  }

  // ------------------------------------------------------------------------------------------ structure

  @Test
  void everyProviderHasItsClassInThisSuite() {
    assertThat(Backends.providers()).hasSize((int) backendClasses().count());
  }

  /**
   * Public methods named like a {@code Backend} method of which the class overrides no overload: a call through
   * {@code Backend} runs the interface's default, not this method.
   */
  static List<String> lookalikeOverloads(Class<?> c) {
    List<String> out = new ArrayList<>();
    for (Method m : c.getDeclaredMethods()) {
      if (!Modifier.isPublic(m.getModifiers()) || m.isSynthetic() || m.isBridge()) {
        continue;
      }
      boolean named = false;
      boolean overridesOne = false;
      for (Method i : Backend.class.getMethods()) {
        if (i.getName().equals(m.getName())) {
          named = true;
          overridesOne |= declares(c, i);
        }
      }
      if (named && !overridesOne) {
        out.add(c.getSimpleName() + "." + signature(m));
      }
    }
    return out;
  }

  private static boolean declares(Class<?> c, Method i) {
    try {
      c.getDeclaredMethod(i.getName(), i.getParameterTypes());
      return true;
    } catch (NoSuchMethodException e) {
      return false;
    }
  }

  private static String signature(Method m) {
    StringBuilder b = new StringBuilder(m.getName()).append('(');
    Class<?>[] p = m.getParameterTypes();
    for (int i = 0; i < p.length; i++) {
      b.append(i == 0 ? "" : ",").append(p[i].getSimpleName());
    }
    return b.append(')').toString();
  }

  /** The {@code Backend} method {@code name(SimpleType,...)}; fails when {@link BackendOp} names one that is not. */
  static Method backendMethod(String sig) {
    for (Method m : Backend.class.getMethods()) {
      if (signature(m).equals(sig)) {
        return m;
      }
    }
    throw new AssertionError("BackendOp names " + sig + ", which Backend does not declare");
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backendClasses")
  void noBackendDeclaresALookalikeOverloadInsteadOfAnOverride(Class<? extends Backend> c) {
    assertThat(lookalikeOverloads(c)).as("methods of %s that overload a Backend method but override none of its"
        + " signatures (calls through Backend run the generic default)", c.getSimpleName()).isEmpty();
  }

  /** The shape of today's mistake, on a class of its own: the check above sees it. */
  abstract static class RopeOverloadOnly implements Backend {
    public void rope(Tensor x, int heads, int headDim, int[] positions, float theta) {}
  }

  @Test
  void theLookalikeCheckCatchesARopeOverload() {
    assertThat(lookalikeOverloads(RopeOverloadOnly.class))
        .containsExactly("RopeOverloadOnly.rope(Tensor,int,int,int[],float)");
    for (BackendOp op : BackendOp.values()) {
      for (String sig : op.generic()) {
        assertThat(backendMethod(sig).isDefault()).as("%s of %s is a default method", sig, op).isTrue();
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void everyOpClaimedNativeOverridesItsGenericMethods(String name) {
    try (Backend be = open(name)) {
      List<String> missing = missingOverrides(be.getClass(), be::supports);
      assertThat(missing).as("ops %s claims natively whose generic Backend methods it does not override", name)
          .isEmpty();
      for (DType d : DTYPES) {
        assertThat(be.supports(d)).as("supports(%s) is supports(ALLOCATE, %s)", d, d)
            .isEqualTo(be.supports(BackendOp.ALLOCATE, d));
      }
      assertThat(be.supports(BackendOp.ALLOCATE, DType.F32)).isTrue();
    }
  }

  /** The CUDA backend's claims ({@link CudaBackend#claims}) checked without a device. */
  @Test
  void everyOpCudaClaimsIsOverriddenCheckedWithoutAGpu() {
    assertThat(missingOverrides(CudaBackend.class, CudaBackend::claims)).as("ops cuda claims natively whose generic"
        + " Backend methods it does not override").isEmpty();
    for (BackendOp op : List.of(BackendOp.ATTENTION, BackendOp.CACHED_ATTENTION, BackendOp.SWIGLU,
        BackendOp.COPY_ROWS, BackendOp.ROPE, BackendOp.RMS_NORM, BackendOp.EMBEDDING, BackendOp.LINEAR)) {
      assertThat(CudaBackend.claims(op, DType.F32)).as("cuda runs %s natively", op).isTrue();
    }
    assertThat(CudaBackend.claims(BackendOp.LINEAR, DType.BF16)).isTrue();
    assertThat(CudaBackend.claims(BackendOp.CACHED_ATTENTION, DType.F16)).isTrue();
  }

  private static List<String> missingOverrides(Class<?> c, java.util.function.BiPredicate<BackendOp, DType> claims) {
    List<String> missing = new ArrayList<>();
    for (BackendOp op : BackendOp.values()) {
      List<DType> claimed = DTYPES.stream().filter(d -> claims.test(op, d)).toList();
      boolean needs = !claimed.isEmpty() && (!op.f32Generic() || claimed.stream().anyMatch(d -> d != DType.F32));
      for (String sig : needs ? op.generic() : List.<String>of()) {
        if (!declares(c, backendMethod(sig))) {
          missing.add(op + " " + claimed + ": " + sig);
        }
      }
    }
    return missing;
  }

  // ------------------------------------------------------------------------------------------ helpers

  /** Runs {@code body}; when {@code be} claims {@code op} on {@code dt} natively, it must not fall back. */
  private static void check(Backend be, BackendOp op, DType dt, Runnable body) {
    long before = Fallbacks.count(be.name(), op);
    body.run();
    if (be.supports(op, dt)) {
      assertThat(Fallbacks.count(be.name(), op)).as("%s claims %s on %s natively but ran it through the host",
          be.name(), op, dt).isEqualTo(before);
    }
  }

  /** Random values exactly representable in f32, bf16 and f16 (k / 64, |k| < 256). */
  private float[] exact(int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (rnd.nextInt(511) - 255) / 64f;
    }
    return a;
  }

  private float[] gaussian(int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  /** Round to nearest, ties to even, to {@code mantissa} explicit bits and a minimum exponent (normal values). */
  private static double round(double v, int mantissa, int minExp) {
    if (v == 0 || Double.isNaN(v)) {
      return v;
    }
    int e = Math.max(Math.getExponent(v), minExp);
    double q = Math.scalb(1.0, e - mantissa);
    return Math.rint(v / q) * q;
  }

  static double toDtype(double v, DType dt) {
    return switch (dt) {
      case BF16 -> round((float) v, 7, -126);
      case F16 -> round((float) v, 10, -14);
      default -> (float) v;
    };
  }

  /** Little-endian bytes of {@code v} (each exactly representable in {@code dt}). */
  static ByteBuffer bytes(float[] v, DType dt) {
    ByteBuffer b = ByteBuffer.allocate(v.length * dt.size()).order(ByteOrder.LITTLE_ENDIAN);
    for (float f : v) {
      int bits = Float.floatToIntBits(f);
      switch (dt) {
        case F32 -> b.putFloat(f);
        case BF16 -> b.putShort((short) (bits >>> 16));
        case F16 -> {
          int sign = (bits >>> 16) & 0x8000;
          int exp = ((bits >>> 23) & 0xff) - 127 + 15;
          b.putShort((short) (f == 0 ? sign : sign | exp << 10 | (bits & 0x7fffff) >>> 13));
        }
        case I32 -> b.putInt((int) f);
        case I8 -> b.put((byte) f);
        default -> throw new IllegalArgumentException(dt.id());
      }
    }
    return b.flip();
  }

  /** A tensor of {@code dt} holding {@code v} (exact in dt), through bytes or a conversion the backend claims. */
  private static Tensor tensor(Backend be, float[] v, int rows, int cols, DType dt) {
    if (dt == DType.F32) {
      return be.upload(v, rows, cols);
    }
    if (be.supports(BackendOp.UPLOAD, dt)) {
      return be.upload(bytes(v, dt), dt, rows, cols);
    }
    try (Tensor f = be.upload(v, rows, cols)) {
      return be.convert(f, dt);
    }
  }

  /** Whether {@link #tensor} can make a tensor of {@code dt} on {@code be}. */
  private static boolean makes(Backend be, DType dt) {
    return dt == DType.F32 || be.supports(BackendOp.UPLOAD, dt) || be.supports(BackendOp.CONVERT, dt);
  }

  /** ||got - want|| / ||want||. */
  static double relErr(float[] got, double[] want) {
    double num = 0;
    double den = 0;
    for (int i = 0; i < want.length; i++) {
      double d = got[i] - want[i];
      num += d * d;
      den += want[i] * want[i];
    }
    return Math.sqrt(num / Math.max(den, 1e-300));
  }

  static double[] doubles(float[] a) {
    double[] d = new double[a.length];
    for (int i = 0; i < a.length; i++) {
      d[i] = a[i];
    }
    return d;
  }

  // ------------------------------------------------------------------------------------------ memory

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void memoryOfEveryDtypeRoundTripsExactlyOrIsRefusedByName(String name) {
    try (Backend be = open(name)) {
      for (DType dt : DTYPES) {
        if (!be.supports(BackendOp.ALLOCATE, dt)) {
          assertThatThrownBy(() -> be.allocate(3, 4, dt).close()).hasMessageContaining(dt.id());
          continue;
        }
        float[] v = dt == DType.I8 || dt == DType.I32 ? ints(6 * 5, dt == DType.I8 ? 127 : 1 << 20) : exact(6 * 5);
        ByteBuffer want = bytes(v, dt);
        check(be, BackendOp.ALLOCATE, dt, () -> {
          try (Tensor z = be.allocate(6, 5, dt)) {
            assertThat(z.dtype()).isEqualTo(dt);
            assertThat(z.bytes()).isEqualTo(30L * dt.size());
            assertThat(download(be, z)).as("allocate of %s is zeros", dt).isEqualTo(bytes(new float[30], dt));
          }
        });
        if (!be.supports(BackendOp.UPLOAD, dt) || !be.supports(BackendOp.DOWNLOAD, dt)) {
          continue;
        }
        check(be, BackendOp.UPLOAD, dt, () -> {
          try (Tensor t = be.upload(want.duplicate(), dt, 6, 5)) {
            assertThat(download(be, t)).as("upload/download of %s bytes", dt).isEqualTo(want);
            assertThat(download(be, t.rows(2, 3))).isEqualTo(want.duplicate().position(10 * dt.size())
                .limit(25 * dt.size()).slice());
            assertThat(download(be, t.reshape(5, 6))).isEqualTo(want);
            if (be.supports(BackendOp.WRITE, dt)) {
              float[] row = dt.isFloat() ? exact(5) : ints(5, 100);
              check(be, BackendOp.WRITE, dt, () -> be.write(t, 3L * 5 * dt.size(), bytes(row, dt)));
              float[] w = v.clone();
              System.arraycopy(row, 0, w, 15, 5);
              assertThat(download(be, t)).as("write of a row of %s", dt).isEqualTo(bytes(w, dt));
              try (Tensor d = be.allocate(4, 7, dt)) {
                check(be, BackendOp.COPY_BLOCK, dt, () -> be.copyBlock(t, 1, 2, d, 2, 3, 2, 3));
                float[] blk = new float[28];
                for (int r = 0; r < 2; r++) {
                  for (int c = 0; c < 3; c++) {
                    blk[(2 + r) * 7 + 3 + c] = w[(1 + r) * 5 + 2 + c];
                  }
                }
                assertThat(download(be, d)).as("copyBlock of %s", dt).isEqualTo(bytes(blk, dt));
                check(be, BackendOp.ZERO, dt, () -> be.zero(d));
                assertThat(download(be, d)).isEqualTo(bytes(new float[28], dt));
              }
              try (Tensor sel = be.allocate(3, 5, dt)) {
                check(be, BackendOp.SELECT_ROWS, dt, () -> be.selectRows(t, new int[] {4, 0, 4}, sel));
                float[] rowsWanted = new float[15];
                System.arraycopy(w, 20, rowsWanted, 0, 5);
                System.arraycopy(w, 0, rowsWanted, 5, 5);
                System.arraycopy(w, 20, rowsWanted, 10, 5);
                assertThat(download(be, sel)).as("selectRows of %s", dt).isEqualTo(bytes(rowsWanted, dt));
              }
              if (be.supports(BackendOp.HOST_BUFFER, dt)) {
                assertThat(be.hostBuffer(t).order(ByteOrder.LITTLE_ENDIAN)).isEqualTo(bytes(w, dt));
              }
            }
          }
        });
      }
    }
  }

  private float[] ints(int n, int bound) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = rnd.nextInt(2 * bound + 1) - bound;
    }
    return a;
  }

  private static ByteBuffer download(Backend be, Tensor t) {
    ByteBuffer b = ByteBuffer.allocate(Math.toIntExact(t.bytes())).order(ByteOrder.LITTLE_ENDIAN);
    be.download(t, b);
    return b.flip();
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void floatTransfersViewsBlocksAndRowSelectionAreExact(String name) {
    try (Backend be = open(name)) {
      float[] a = gaussian(7 * 5 + 3);
      try (Tensor t = be.upload(a, 3, 7, 5); Tensor u = be.upload(Arrays.copyOfRange(a, 3, 38), 7, 5)) {
        float[] want = Arrays.copyOfRange(a, 3, 38);
        assertThat(be.download(t)).as("seed %d", seed).containsExactly(want);
        assertThat(be.download(u)).containsExactly(want);
        float[] row = gaussian(10);
        be.write(t, 3, row, 2, 5);
        System.arraycopy(row, 2, want, 15, 5);
        float[] got = new float[40];
        be.download(t, got, 4);
        assertThat(Arrays.copyOfRange(got, 4, 39)).containsExactly(want);
        try (Tensor d = be.empty(4, 6)) {
          be.zero(d);
          be.copyBlock(t, 1, 2, d, 2, 1, 2, 3);
          float[] g = be.download(d);
          for (int r = 0; r < 4; r++) {
            for (int c = 0; c < 6; c++) {
              boolean in = r >= 2 && c >= 1 && c < 4;
              assertThat(g[r * 6 + c]).isEqualTo(in ? want[(r - 1) * 5 + c + 1] : 0f);
            }
          }
        }
        try (Tensor s = be.allocate(3, 5)) {
          be.selectRows(t, new int[] {6, 0, 6}, s);
          float[] g = be.download(s);
          for (int c = 0; c < 5; c++) {
            assertThat(new float[] {g[c], g[5 + c], g[10 + c]}).containsExactly(want[30 + c], want[c], want[30 + c]);
          }
        }
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void copyRowsStacksAndTransposesEveryDtype(String name) {
    try (Backend be = open(name)) {
      for (DType dt : FLOATS) {
        if (!makes(be, dt) || !be.supports(BackendOp.DOWNLOAD, dt) && dt != DType.F32) {
          continue;
        }
        float[] a = exact(3 * 4);
        try (Tensor src = tensor(be, a, 3, 4, dt); Tensor dst = tensor(be, new float[7 * 3], 7, 3, dt);
            Tensor dst2 = tensor(be, new float[5 * 4], 5, 4, dt)) {
          check(be, BackendOp.COPY_ROWS, dt, () -> be.copyRows(src, true, dst, 2));
          check(be, BackendOp.COPY_ROWS, dt, () -> be.copyRows(src, false, dst2, 1));
          float[] t = widen(be, dst);
          float[] s = widen(be, dst2);
          for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 4; j++) {
              assertThat(t[(2 + j) * 3 + i]).as("transposed %s", dt).isEqualTo(a[i * 4 + j]);
              assertThat(s[(1 + i) * 4 + j]).as("stacked %s", dt).isEqualTo(a[i * 4 + j]);
            }
          }
          assertThat(t[0]).isZero();
        }
      }
    }
  }

  /** A tensor's values as floats (through an f32 conversion on the backend for half types). */
  private static float[] widen(Backend be, Tensor t) {
    if (t.dtype() == DType.F32) {
      return be.download(t);
    }
    try (Tensor f = be.convert(t, DType.F32)) {
      return be.download(f);
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void convertRoundsToNearestEvenAndWidensExactly(String name) {
    try (Backend be = open(name)) {
      float[] a = gaussian(500);
      a[0] = 1.00390625f; // halfway between two bf16 values: to even (1.0)
      a[1] = 1.00048828125f; // halfway between two f16 values: to even (1.0)
      for (DType dt : FLOATS) {
        if (!be.supports(BackendOp.CONVERT, dt) && dt != DType.F32) {
          assertThatThrownBy(() -> {
            try (Tensor f = be.upload(a, 10, 50)) {
              be.convert(f, dt).close();
            }
          }).hasMessageContaining(dt.id());
          continue;
        }
        try (Tensor f = be.upload(a, 10, 50)) {
          Tensor[] narrow = new Tensor[1];
          check(be, BackendOp.CONVERT, dt, () -> narrow[0] = be.convert(f, dt));
          try (Tensor n = narrow[0]) {
            assertThat(n.dtype()).isEqualTo(dt);
            assertThat(n.bytes()).isEqualTo(500L * dt.size());
            float[] back = widen(be, n);
            for (int i = 0; i < a.length; i++) {
              assertThat((double) back[i]).as("%s of %s (seed %d)", dt, a[i], seed).isEqualTo(toDtype(a[i], dt));
            }
          }
        }
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void accumulateSumsHostBuffersInF32(String name) {
    try (Backend be = open(name)) {
      for (DType dt : FLOATS) {
        if (!be.supports(BackendOp.ACCUMULATE, dt)) {
          continue;
        }
        float[] acc = gaussian(37);
        float[] src = exact(40);
        ByteBuffer a = ByteBuffer.allocateDirect(37 * 4).order(ByteOrder.nativeOrder());
        a.asFloatBuffer().put(acc);
        ByteBuffer s = bytes(src, dt).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer sn = ByteBuffer.allocateDirect(s.remaining()).order(ByteOrder.nativeOrder()).put(s).flip();
        sn.position(3 * dt.size());
        be.accumulate(a, sn, dt, 37);
        for (int i = 0; i < 37; i++) {
          assertThat(a.getFloat(4 * i)).as("%s element %d", dt, i).isEqualTo(acc[i] + src[3 + i]);
        }
      }
    }
  }

  // ------------------------------------------------------------------------------------------ math

  private double[] gemmRef(boolean ta, boolean tb, double alpha, float[] a, float[] b, double beta, float[] c, int m,
      int n, int k) {
    double[] out = new double[m * n];
    for (int i = 0; i < m; i++) {
      for (int j = 0; j < n; j++) {
        double s = 0;
        for (int p = 0; p < k; p++) {
          s += (double) (ta ? a[p * m + i] : a[i * k + p]) * (tb ? b[j * k + p] : b[p * n + j]);
        }
        out[i * n + j] = alpha * s + beta * c[i * n + j];
      }
    }
    return out;
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void gemmInEveryTransposeAndDtypeMatchesFloat64(String name) {
    try (Backend be = open(name)) {
      int m = 9;
      int n = 13;
      int k = 70;
      for (DType dt : FLOATS) {
        if (!be.supports(BackendOp.GEMM, dt) || !makes(be, dt)) {
          continue;
        }
        for (boolean ta : new boolean[] {false, true}) {
          for (boolean tb : new boolean[] {false, true}) {
            float[] a = exact(m * k);
            float[] b = exact(k * n);
            float[] c = gaussian(m * n);
            double[] want = gemmRef(ta, tb, 0.5, a, b, 0.25, c, m, n, k);
            try (Tensor x = tensor(be, a, ta ? k : m, ta ? m : k, dt); Tensor w = tensor(be, b, tb ? n : k,
                tb ? k : n, dt); Tensor y = be.upload(c, m, n)) {
              check(be, BackendOp.GEMM, dt, () -> be.gemm(ta, tb, 0.5f, x, w, 0.25f, y));
              // inputs exact in every dtype, f32 accumulation: f32 rounding only
              assertThat(relErr(be.download(y), want)).as("%s gemm %b %b (seed %d)", dt, ta, tb, seed)
                  .isLessThan(1e-5);
            }
          }
        }
      }
      float[] c = gaussian(4 * 3);
      try (Tensor x = be.allocate(4, 0); Tensor w = be.allocate(0, 3); Tensor y = be.upload(c, 4, 3)) {
        be.gemm(false, false, 1f, x, w, 0.5f, y); // K = 0: C = beta * C
        assertThat(relErr(be.download(y), gemmRef(false, false, 1, new float[0], new float[0], 0.5, c, 4, 3, 0)))
            .isLessThan(1e-7);
        assertThatThrownBy(() -> be.gemm(false, false, 1f, y, y, 0f, y)).hasMessageContaining("GEMM shapes");
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void linearWithEveryStorageAndEpilogueMatchesFloat64(String name) {
    try (Backend be = open(name)) {
      int rows = 5;
      int in = 48;
      int out = 24;
      for (DType dt : List.of(DType.F32, DType.BF16, DType.F16, DType.I8, DType.I8_WO)) {
        if (!be.supports(BackendOp.LINEAR, dt) && !dt.isInt8()) { // int8: the generic path dequantizes, logged
          assertThatThrownBy(() -> be.prepareLinear(be.upload(new float[6], 2, 3), null, Activation.IDENTITY, dt)
              .close()).hasMessageContaining(dt.id());
          continue;
        }
        for (Activation act : Activation.values()) {
          if (act == Activation.SOFTMAX) {
            continue;
          }
          float[] w = gaussian(out * in);
          float[] bias = gaussian(out);
          float[] x = gaussian(rows * in);
          double[] wq = quantized(w, out, in, dt);
          // W8A8: the input rows quantized per row too (the same rule as the weights')
          double[] xq = dt == DType.I8 ? quantized(x, rows, in, dt) : null;
          PreparedCheck pc = new PreparedCheck();
          check(be, BackendOp.LINEAR, dt, () -> {
            try (Backend.PreparedLinear p = be.prepareLinear(be.upload(w, out, in), be.upload(bias, 1, out), act,
                dt); Tensor tx = be.upload(x, rows, in)) {
              assertThat(p.bytes()).isPositive();
              assertThat(p.kernel()).isNotBlank();
              try (Tensor y = p.apply(tx, true); Tensor y0 = p.apply(tx, false)) {
                pc.got = be.download(y);
                pc.noBias = be.download(y0);
              }
            }
          });
          double[] want = new double[rows * out];
          double[] want0 = new double[rows * out];
          for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
              double s = 0;
              for (int i = 0; i < in; i++) {
                s += (xq != null ? xq[r * in + i] : (double) toDtype(x[r * in + i], dt.isInt8() ? DType.F32 : dt))
                    * wq[o * in + i];
              }
              want[r * out + o] = Reference.act(act, s + bias[o]);
              want0[r * out + o] = Reference.act(act, s);
            }
          }
          // half storage may round the activations as well (oneDNN): a few units of bf16/f16 rounding
          double tol = dt == DType.F32 ? 1e-5 : dt == DType.F16 ? 2e-3 : 1e-2;
          assertThat(relErr(pc.got, want)).as("%s linear %s with bias (seed %d)", dt, act, seed).isLessThan(tol);
          assertThat(relErr(pc.noBias, want0)).as("%s linear %s without bias", dt, act).isLessThan(tol);
        }
        assertThat(be.kernel(dt)).isNotBlank();
      }
    }
  }

  private static final class PreparedCheck {
    float[] got;
    float[] noBias;
  }

  /** The weight as the storage holds it: rounded to bf16/f16, or int8 per output row (scale max|w| / 127). */
  private static double[] quantized(float[] w, int out, int in, DType dt) {
    double[] q = new double[w.length];
    for (int o = 0; o < out; o++) {
      float amax = 0;
      for (int i = 0; i < in; i++) {
        amax = Math.max(amax, Math.abs(w[o * in + i]));
      }
      float scale = amax / 127f;
      for (int i = 0; i < in; i++) {
        float v = w[o * in + i];
        q[o * in + i] = dt.isInt8() ? Math.max(-127, Math.min(127, Math.rint(v / scale))) * scale : toDtype(v, dt);
      }
    }
    return q;
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void elementwiseOpsAndNormsMatchFloat64(String name) {
    try (Backend be = open(name)) {
      int rows = 6;
      int cols = 33;
      float[] x = gaussian(rows * cols);
      float[] y = gaussian(rows * cols);
      float[] b = gaussian(cols);
      double[] want = new double[x.length];
      try (Tensor t = be.upload(x, rows, cols); Tensor s = be.upload(y, rows, cols); Tensor tb = be.upload(b, 1, cols)) {
        check(be, BackendOp.ADD, DType.F32, () -> be.add(t, s));
        check(be, BackendOp.ADD_BIAS, DType.F32, () -> be.addBias(t, tb));
        for (int i = 0; i < x.length; i++) {
          want[i] = (double) x[i] + y[i] + b[i % cols];
        }
        assertThat(relErr(be.download(t), want)).as("add, addBias (seed %d)", seed).isLessThan(1e-6);
      }
      for (Activation a : Activation.values()) {
        for (boolean withBias : new boolean[] {false, true}) {
          try (Tensor t = be.upload(x, rows, cols); Tensor tb = be.upload(b, 1, cols)) {
            check(be, BackendOp.ACTIVATE, DType.F32, () -> {
              if (withBias) {
                be.biasActivate(t, tb, a);
              } else {
                be.activate(t, a);
              }
            });
            for (int r = 0; r < rows; r++) {
              double max = Double.NEGATIVE_INFINITY;
              double sum = 0;
              for (int c = 0; c < cols; c++) {
                max = Math.max(max, x[r * cols + c] + (withBias ? b[c] : 0.0));
              }
              for (int c = 0; c < cols; c++) {
                sum += Math.exp(x[r * cols + c] + (withBias ? b[c] : 0.0) - max);
              }
              for (int c = 0; c < cols; c++) {
                double v = x[r * cols + c] + (withBias ? b[c] : 0.0);
                want[r * cols + c] = a == Activation.SOFTMAX ? Math.exp(v - max) / sum : Reference.act(a, v);
              }
            }
            assertThat(relErr(be.download(t), want)).as("%s, bias %b (seed %d)", a, withBias, seed)
                .isLessThan(1e-5);
          }
        }
      }
      float[] g = gaussian(cols);
      double[] ln = org.sparktp.testing.Reference.layerNorm(x, rows, cols, g, b, 1e-5);
      double[] rms = org.sparktp.testing.Reference.rmsNorm(x, rows, cols, g, 1e-6);
      try (Tensor t = be.upload(x, rows, cols); Tensor tg = be.upload(g, 1, cols); Tensor tb = be.upload(b, 1, cols)) {
        check(be, BackendOp.LAYER_NORM, DType.F32, () -> be.layerNorm(t, tg, tb, 1e-5f));
        assertThat(relErr(be.download(t), ln)).as("layerNorm (seed %d)", seed).isLessThan(1e-5);
      }
      try (Tensor t = be.upload(x, rows, cols); Tensor tg = be.upload(g, 1, cols)) {
        check(be, BackendOp.RMS_NORM, DType.F32, () -> be.rmsNorm(t, tg, 1e-6f));
        assertThat(relErr(be.download(t), rms)).as("rmsNorm (seed %d)", seed).isLessThan(1e-5);
      }
      int half = 16;
      float[] gu = gaussian(rows * 2 * half);
      double[] sw = new double[rows * half];
      for (int r = 0; r < rows; r++) {
        for (int j = 0; j < half; j++) {
          double gate = gu[r * 2 * half + j];
          sw[r * half + j] = gate / (1 + Math.exp(-gate)) * gu[r * 2 * half + half + j];
        }
      }
      try (Tensor t = be.upload(gu, rows, 2 * half); Tensor o = be.upload(gaussian(rows * half), rows, half)) {
        check(be, BackendOp.SWIGLU, DType.F32, () -> be.swiglu(t, o));
        assertThat(relErr(be.download(o), sw)).as("swiglu (seed %d)", seed).isLessThan(1e-5);
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void ropeOnAColumnRangeMatchesFloat64(String name) {
    try (Backend be = open(name)) {
      int rows = 5;
      int cols = 50; // heads 2..4 of 8 columns from column 10, others untouched
      int col = 10;
      int heads = 3;
      int hd = 8;
      float[] x = gaussian(rows * cols);
      int[] pos = {0, 1, 7, 100, 4095};
      float[] inv = new float[hd / 2];
      for (int i = 0; i < inv.length; i++) {
        inv[i] = (float) (Math.pow(10000.0, -2.0 * i / hd) * (i == 1 ? 0.25 : 1)); // a scaled frequency too
      }
      double[] want = doubles(x);
      for (int r = 0; r < rows; r++) {
        for (int h = 0; h < heads; h++) {
          for (int i = 0; i < hd / 2; i++) {
            double ang = pos[r] * (double) inv[i];
            int base = r * cols + col + h * hd;
            want[base + i] = x[base + i] * Math.cos(ang) - x[base + i + hd / 2] * Math.sin(ang);
            want[base + i + hd / 2] = x[base + i + hd / 2] * Math.cos(ang) + x[base + i] * Math.sin(ang);
          }
        }
      }
      try (Tensor t = be.upload(x, rows, cols)) {
        check(be, BackendOp.ROPE, DType.F32, () -> be.rope(t, col, heads, hd, pos, inv));
        assertThat(relErr(be.download(t), want)).as("rope (seed %d)", seed).isLessThan(1e-5);
        assertThatThrownBy(() -> be.rope(t, 45, 1, hd, pos, inv)).hasMessageContaining("RoPE");
      }
    }
  }

  /** softmax(q K^T * scale) V for one query against keys/values {@code [0, n)} of row stride {@code kvStride}. */
  private static void attendRef(float[] q, int qOff, float[] kv, int kOff, int vOff, int kvStride, int n, int hd,
      double scale, double[] out, int oOff) {
    double[] s = new double[n];
    double max = Double.NEGATIVE_INFINITY;
    for (int j = 0; j < n; j++) {
      double d = 0;
      for (int i = 0; i < hd; i++) {
        d += (double) q[qOff + i] * kv[j * kvStride + kOff + i];
      }
      s[j] = d * scale;
      max = Math.max(max, s[j]);
    }
    double sum = 0;
    for (int j = 0; j < n; j++) {
      s[j] = Math.exp(s[j] - max);
      sum += s[j];
    }
    for (int i = 0; i < hd; i++) {
      double o = 0;
      for (int j = 0; j < n; j++) {
        o += s[j] * kv[j * kvStride + vOff + i];
      }
      out[oOff + i] = o / sum;
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void raggedAttentionCausalAndNotWithGroupedKvMatchesFloat64(String name) {
    try (Backend be = open(name)) {
      int hd = 8;
      int[] kvOf = {0, 0, 1, 1}; // 4 query heads over 2 kv heads
      int qCol = 0;
      int kCol = 4 * hd;
      int vCol = kCol + 2 * hd;
      int cols = vCol + 2 * hd + 3; // 3 spare columns
      int[] offsets = {0, 3, 3, 8}; // sequences of 3, 0 and 5 tokens
      float[] x = gaussian(8 * cols);
      for (boolean causal : new boolean[] {false, true}) {
        double[] want = new double[8 * 4 * hd];
        for (int s = 0; s + 1 < offsets.length; s++) {
          for (int t = offsets[s]; t < offsets[s + 1]; t++) {
            for (int h = 0; h < 4; h++) {
              int n = causal ? t - offsets[s] + 1 : offsets[s + 1] - offsets[s];
              float[] seq = Arrays.copyOfRange(x, offsets[s] * cols, offsets[s + 1] * cols);
              attendRef(x, t * cols + qCol + h * hd, seq, kCol + kvOf[h] * hd, vCol + kvOf[h] * hd, cols, n, hd,
                  0.3, want, (t * 4 + h) * hd);
            }
          }
        }
        try (Tensor qkv = be.upload(x, 8, cols); Tensor out = be.upload(gaussian(8 * 4 * hd), 8, 4 * hd)) {
          check(be, BackendOp.ATTENTION, DType.F32, () -> be.attention(qkv, qCol, kCol, vCol, kvOf, hd, offsets,
              causal, 0.3f, out));
          assertThat(relErr(be.download(out), want)).as("attention causal %b (seed %d)", causal, seed)
              .isLessThan(1e-5);
        }
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void argMaxRowsGivesEachRowsLargestLogitAndItsFirstId(String name) {
    try (Backend be = open(name)) {
      int rows = 5;
      int cols = 301;
      float[] l = exact(rows * cols); // few distinct values: ties are common
      l[3 * cols + 7] = 100f; // row 3: a tie of two maxima, the first wins
      l[3 * cols + 200] = 100f;
      try (Tensor t = be.upload(l, rows, cols)) {
        float[] best = be.argMaxRows(t, 1000);
        for (int r = 0; r < rows; r++) {
          int first = 0;
          for (int j = 1; j < cols; j++) {
            if (l[r * cols + j] > l[r * cols + first]) {
              first = j;
            }
          }
          assertThat(best[2 * r]).as("max of row %d (seed %d)", r, seed).isEqualTo(l[r * cols + first]);
          assertThat(Float.floatToRawIntBits(best[2 * r + 1])).as("id of row %d", r).isEqualTo(1000 + first);
        }
        assertThat(Float.floatToRawIntBits(best[7])).isEqualTo(1007);
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void cachedAttentionWritesTheCacheAndAttendsInEveryCacheDtype(String name) {
    try (Backend be = open(name)) {
      int hd = 4;
      int kvHeads = 2;
      int[] kvOf = {0, 1, 1};
      int qCol = 0;
      int kvCol = 3 * hd;
      int cols = kvCol + 2 * kvHeads * hd;
      int kvw = 2 * kvHeads * hd;
      int[] offsets = {0, 2, 3}; // two sequences: 2 new tokens after 3 cached, 1 new after 0
      int[] past = {3, 0};
      for (DType dt : FLOATS) {
        if (!be.supports(BackendOp.ALLOCATE, dt)) {
          continue;
        }
        float[] x = exact(3 * cols); // exact in every cache dtype: storing the new K/V rounds nothing
        float[] old = exact(6 * kvw);
        Tensor[] cache = new Tensor[2];
        try (Tensor qkv = be.upload(x, 3, cols); Tensor out = be.upload(gaussian(3 * 3 * hd), 3, 3 * hd)) {
          cache[0] = tensor(be, old, 6, kvw, dt);
          cache[1] = tensor(be, new float[4 * kvw], 4, kvw, dt);
          check(be, BackendOp.CACHED_ATTENTION, dt, () -> be.cachedAttention(qkv, qCol, kvCol, kvHeads, kvOf, hd,
              offsets, cache, past, 0.5f, out));
          double[] want = new double[3 * 3 * hd];
          float[][] kv = new float[2][];
          kv[0] = old.clone();
          System.arraycopy(x, 0 * cols + kvCol, kv[0], 3 * kvw, kvw);
          System.arraycopy(x, 1 * cols + kvCol, kv[0], 4 * kvw, kvw);
          kv[1] = new float[4 * kvw];
          System.arraycopy(x, 2 * cols + kvCol, kv[1], 0, kvw);
          for (int s = 0; s < 2; s++) {
            for (int t = offsets[s]; t < offsets[s + 1]; t++) {
              int n = past[s] + t - offsets[s] + 1;
              for (int h = 0; h < 3; h++) {
                attendRef(x, t * cols + qCol + h * hd, kv[s], kvOf[h] * hd, (kvHeads + kvOf[h]) * hd, kvw, n, hd, 0.5,
                    want, (t * 3 + h) * hd);
              }
            }
          }
          assertThat(relErr(be.download(out), want)).as("cachedAttention, %s cache (seed %d)", dt, seed)
              .isLessThan(1e-5);
          float[] c0 = widen(be, cache[0]);
          assertThat(Arrays.copyOfRange(c0, 0, 5 * kvw)).as("%s cache holds the old and new K/V", dt)
              .containsExactly(Arrays.copyOfRange(kv[0], 0, 5 * kvw));
        } finally {
          for (Tensor c : cache) {
            if (c != null) {
              c.close();
            }
          }
        }
      }
    }
  }

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void embeddingAndBagsOverAShardInEveryTableDtype(String name) {
    try (Backend be = open(name)) {
      int rows = 7;
      int d = 5;
      int start = 10; // this shard holds ids [10, 17)
      int[] ids = {10, 3, 16, 12, 12, 40};
      int[] offsets = {0, 2, 2, 6};
      for (DType dt : FLOATS) {
        if (!be.supports(BackendOp.EMBEDDING, dt) || !makes(be, dt)) {
          continue;
        }
        float[] table = exact(rows * d);
        try (Tensor t = tensor(be, table, rows, d, dt); Tensor out = be.upload(gaussian(8 * d), 8, d);
            Tensor bag = be.upload(gaussian(3 * d), 3, d)) {
          check(be, BackendOp.EMBEDDING, dt, () -> be.embedding(t, start, ids, out));
          float[] got = be.download(out);
          for (int r = 0; r < 8; r++) {
            for (int c = 0; c < d; c++) {
              int local = r < ids.length ? ids[r] - start : -1;
              float want = local >= 0 && local < rows ? table[local * d + c] : 0f;
              assertThat(got[r * d + c]).as("%s embedding row %d", dt, r).isEqualTo(want);
            }
          }
          for (boolean mean : new boolean[] {false, true}) {
            check(be, BackendOp.EMBEDDING_BAG, dt, () -> be.embeddingBag(t, start, ids, offsets, mean, bag));
            double[] want = new double[3 * d];
            for (int b = 0; b < 3; b++) {
              for (int i = offsets[b]; i < offsets[b + 1]; i++) {
                int local = ids[i] - start;
                for (int c = 0; c < d && local >= 0 && local < rows; c++) {
                  want[b * d + c] += table[local * d + c];
                }
              }
              for (int c = 0; c < d && mean && offsets[b + 1] > offsets[b]; c++) {
                want[b * d + c] /= offsets[b + 1] - offsets[b];
              }
            }
            assertThat(relErr(be.download(bag), want)).as("%s bag mean %b", dt, mean).isLessThan(1e-6);
          }
        }
      }
    }
  }

  // ------------------------------------------------------------------------------------------ life cycle

  @ParameterizedTest(name = "{0}")
  @MethodSource("backends")
  void liveTensorsAreCountedAndALeakFailsClose(String name) {
    Backend be = open(name);
    assertThat(be.name()).isEqualTo(name);
    Tensor a = be.allocate(3, 4);
    Tensor b = be.empty(2, 2);
    assertThat(be.liveTensors()).isEqualTo(2);
    assertThat(be.liveBytes()).isGreaterThanOrEqualTo(4L * (12 + 4));
    b.close();
    b.close(); // harmless
    assertThat(be.liveTensors()).isEqualTo(1);
    assertThatThrownBy(be::close).isInstanceOf(IllegalStateException.class).hasMessageContaining("1 live tensor");
    be.close(); // closing twice is harmless
    assertThat(a.isClosed()).isFalse();
  }
}
