package org.sparktp.backend.cuda;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.bytedeco.javacpp.BytePointer;
import org.bytedeco.javacpp.PointerPointer;
import org.bytedeco.javacpp.SizeTPointer;
import org.bytedeco.cuda.cudart.CUfunc_st;
import org.bytedeco.cuda.cudart.CUmod_st;
import org.bytedeco.cuda.global.cudart;
import org.bytedeco.cuda.global.nvrtc;
import org.bytedeco.cuda.nvrtc._nvrtcProgram;
import org.sparktp.backend.Activation;

/**
 * The engine's CUDA kernels: {@code kernels.cu} (a resource next to this class) compiled at run time by NVRTC to a
 * CUBIN for the device's compute capability, cached per JVM by (source hash, options, NVRTC version, compute
 * capability), loaded as a module per backend. CUBIN rather than PTX: NVRTC 13.1 writes PTX ISA 9.1, which an
 * older 13.0 driver could not JIT.
 */
public final class CudaKernels implements AutoCloseable {
  /** The resource holding every kernel. */
  public static final String SOURCE = "kernels.cu";

  /**
   * Each entry point of {@link #SOURCE} with its parameter kinds, one letter per parameter: {@code p} a device
   * pointer, {@code l} a 64-bit {@code long}, {@code i} an {@code int}, {@code f} a {@code float}. Every launch is
   * checked against it ({@link #checkArgs}); a test checks it against the source's signatures.
   */
  public static final Map<String, String> SIGNATURES = java.util.Collections.unmodifiableMap(new java.util.LinkedHashMap<>(
      Map.ofEntries(Map.entry("tp_bias_act", "ppiii"), Map.entry("tp_add", "ppl"), Map.entry("tp_scale", "plf"),
          Map.entry("tp_softmax_rows", "piifii"), Map.entry("tp_layer_norm", "pppiif"), Map.entry("tp_rms_norm", "ppiif"),
          Map.entry("tp_embedding", "piiipip"), Map.entry("tp_embedding_bf16", "piiipip"),
          Map.entry("tp_embedding_f16", "piiipip"), Map.entry("tp_embedding_bag", "piiippiip"),
          Map.entry("tp_embedding_bag_bf16", "piiippiip"), Map.entry("tp_embedding_bag_f16", "piiippiip"),
          Map.entry("tp_rope", "piiiiipp"),
          Map.entry("tp_cast_f32_bf16", "ppl"), Map.entry("tp_cast_bf16_f32", "ppl"), Map.entry("tp_cast_f32_f16", "ppl"),
          Map.entry("tp_cast_f16_f32", "ppl"), Map.entry("tp_swiglu", "piip"), Map.entry("tp_transpose_u8", "piip"),
          Map.entry("tp_transpose_u16", "piip"), Map.entry("tp_transpose_u32", "piip"),
          Map.entry("tp_attention", "piiiiiipiifp"),
          Map.entry("tp_kv_store_f32", "piiipiipi"), Map.entry("tp_kv_store_bf16", "piiipiipi"),
          Map.entry("tp_kv_store_f16", "piiipiipi"), Map.entry("tp_cached_attention_f32", "piiiiipipfp"),
          Map.entry("tp_cached_attention_bf16", "piiiiipipfp"), Map.entry("tp_cached_attention_f16", "piiiiipipfp"),
          Map.entry("tp_row_max_lse", "piiip"))));

  /** The entry points of {@link #SOURCE}. */
  public static final List<String> ENTRY_POINTS = List.copyOf(new java.util.TreeSet<>(SIGNATURES.keySet()));

  /**
   * Checks a launch's Java arguments against {@link #SIGNATURES}: pointers and longs are {@code Long}, ints
   * {@code Integer}, floats {@code Float}; throws naming the kernel, the expected and the given kinds.
   */
  /** The kind of a launch argument: {@code 'l'} Long (pointer or 64-bit), {@code 'i'} Integer, {@code 'f'} Float, else '?'. */
  static char kind(Object a) {
    return a instanceof Long ? 'l' : a instanceof Integer ? 'i' : a instanceof Float ? 'f' : '?';
  }

  public static void checkArgs(String name, Object... args) {
    String sig = SIGNATURES.get(name);
    if (sig == null) {
      throw new IllegalArgumentException("No kernel '" + name + "' in " + SOURCE);
    }
    StringBuilder got = new StringBuilder();
    boolean ok = args.length == sig.length();
    for (int i = 0; i < args.length; i++) {
      Object a = args[i];
      char k = kind(a);
      got.append(k);
      if (i < sig.length()) {
        char want = sig.charAt(i);
        ok &= (want == 'p' || want == 'l') ? k == 'l' : k == want;
      }
    }
    if (!ok) {
      throw new IllegalArgumentException("Kernel " + name + " takes (" + sig + ") but the launch passes (" + got
          + "); p = pointer (Long), l = Long, i = Integer, f = Float");
    }
  }

  private static final Map<String, byte[]> CUBINS = new ConcurrentHashMap<>();

  private final CUmod_st module;
  private final Map<String, CUfunc_st> functions = new ConcurrentHashMap<>();
  private boolean closed;

  /** Compiles (or takes from the cache) and loads the kernels for compute capability {@code major.minor}. */
  CudaKernels(int major, int minor) {
    byte[] cubin = cubin(major, minor);
    CUmod_st m = new CUmod_st();
    try (BytePointer image = new BytePointer(cubin)) {
      CudaCheck.cu(cudart.cuModuleLoadData(m, image), "cuModuleLoadData(" + SOURCE + ", sm_" + major + minor + ")");
    }
    this.module = m;
  }

  /** The text of {@link #SOURCE}. */
  public static String source() {
    try (InputStream in = CudaKernels.class.getResourceAsStream(SOURCE)) {
      if (in == null) {
        throw new IllegalStateException("Kernel source " + SOURCE + " is missing from the class path (next to "
            + CudaKernels.class.getName() + ")");
      }
      return new String(in.readAllBytes(), StandardCharsets.UTF_8);
    } catch (IOException e) {
      throw new IllegalStateException("Cannot read kernel source " + SOURCE + ": " + e, e);
    }
  }

  /** The kernel's activation code ({@code tp_act} in the source); softmax has its own kernel. */
  static int actCode(Activation a) {
    return switch (a) {
      case GELU -> 0;
      case GELU_TANH -> 1;
      case RELU -> 2;
      case SILU -> 3;
      case TANH -> 4;
      case SIGMOID -> 5;
      case IDENTITY -> 7;
      case SOFTMAX -> throw new IllegalArgumentException("softmax is a row operation, not an elementwise code");
    };
  }

  static byte[] cubin(int major, int minor) {
    String src = source();
    String arch = "--gpu-architecture=sm_" + major + minor;
    int[] maj = {0};
    int[] min = {0};
    nvrtc.nvrtcVersion(maj, min);
    String key = sha256(src) + "|" + arch + "|nvrtc " + maj[0] + "." + min[0];
    return CUBINS.computeIfAbsent(key, k -> compile(src, arch));
  }

  private static byte[] compile(String src, String arch) {
    _nvrtcProgram prog = new _nvrtcProgram();
    nvrtcCheck(nvrtc.nvrtcCreateProgram(prog, new BytePointer(src), new BytePointer(SOURCE), 0,
        (PointerPointer<?>) null, (PointerPointer<?>) null), "nvrtcCreateProgram", null);
    try {
      String[] opts = {arch, "-default-device", "--std=c++17"};
      try (PointerPointer<BytePointer> o = new PointerPointer<>(opts)) {
        int rc = nvrtc.nvrtcCompileProgram(prog, opts.length, o);
        if (rc != 0) {
          nvrtcCheck(rc, "nvrtcCompileProgram(" + SOURCE + ", " + String.join(" ", opts) + ")", log(prog));
        }
      }
      try (SizeTPointer size = new SizeTPointer(1)) {
        nvrtcCheck(nvrtc.nvrtcGetCUBINSize(prog, size), "nvrtcGetCUBINSize", null);
        byte[] out = new byte[(int) size.get()];
        try (BytePointer buf = new BytePointer(size.get())) {
          nvrtcCheck(nvrtc.nvrtcGetCUBIN(prog, buf), "nvrtcGetCUBIN", null);
          buf.get(out);
        }
        return out;
      }
    } finally {
      nvrtc.nvrtcDestroyProgram(prog);
    }
  }

  private static String log(_nvrtcProgram prog) {
    try (SizeTPointer size = new SizeTPointer(1)) {
      if (nvrtc.nvrtcGetProgramLogSize(prog, size) != 0 || size.get() <= 1) {
        return "";
      }
      try (BytePointer buf = new BytePointer(size.get())) {
        nvrtc.nvrtcGetProgramLog(prog, buf);
        return buf.getString();
      }
    }
  }

  private static void nvrtcCheck(int rc, String call, String log) {
    if (rc != 0) {
      String text = nvrtc.nvrtcGetErrorString(rc).getString();
      throw new CudaException(call, rc, text + (log == null || log.isEmpty() ? "" : "; NVRTC log:\n" + log));
    }
  }

  private static String sha256(String s) {
    try {
      return HexFormat.of().formatHex(MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8)));
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException(e);
    }
  }

  /** The loaded kernel {@code name}. */
  CUfunc_st function(String name) {
    return functions.computeIfAbsent(name, n -> {
      CUfunc_st f = new CUfunc_st();
      CudaCheck.cu(cudart.cuModuleGetFunction(f, module, n), "cuModuleGetFunction(" + n + ")");
      return f;
    });
  }

  @Override
  public synchronized void close() {
    if (!closed) {
      closed = true;
      CudaCheck.cu(cudart.cuModuleUnload(module), "cuModuleUnload(" + SOURCE + ")");
    }
  }
}
