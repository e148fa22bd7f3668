package org.sparktp.bench;

import java.util.List;

/**
 * The benchmark programs by name: {@code spark-tp bench NAME [flags]}. The CLI in the library looks this class up
 * by name ({@link #run}) when the spark-tp-bench jar is on the class path; the library does not depend on this
 * module. {@code bin/spark-tp} puts it on the class path.
 */
public final class Benchmarks {
  /** The benchmark names, in the order the usage lists them. */
  public static final List<String> NAMES = List.of("gemm", "comm", "spark", "peer", "transformer", "gpu", "generate",
      "large");

  private Benchmarks() {}

  /**
   * Runs the benchmark {@code name} with its flags; returns 0, or 2 where the GPU benchmark found no GPU (it has
   * printed the reason).
   */
  public static int run(String name, String[] args) throws Exception {
    switch (name) {
      case "gemm" -> GemmBench.main(args);
      case "comm" -> CommBench.main(args);
      case "spark" -> SparkBench.main(args);
      case "transformer" -> TransformerBench.main(args);
      case "peer" -> PeerBench.main(args);
      case "gpu" -> {
        return GpuBench.run(args, System.out);
      }
      case "generate" -> {
        if (java.util.Arrays.asList(args).contains("--master")) {
          SparkGenerateBench.main(args); // through Spark on a cluster; without --master, ranks in this process
        } else {
          GenerateBench.main(args);
        }
      }
      case "large" -> LargeModelBench.main(args);
      default -> throw new IllegalArgumentException("unknown benchmark '" + name + "'; use " + String.join(", ", NAMES));
    }
    return 0;
  }

  /** The CPU's model name ({@code /proc/cpuinfo}, with lscpu's flags of note), for the tables. */
  static String cpuName() {
    try {
      String info = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/cpuinfo"));
      java.util.regex.Matcher m = java.util.regex.Pattern.compile("model name\\s*: (.*)").matcher(info);
      String name = m.find() ? m.group(1).trim() : "unknown CPU";
      StringBuilder f = new StringBuilder();
      for (String flag : new String[] {"amx_tile", "amx_int8", "amx_bf16", "avx512_bf16", "avx512_vnni", "avx512f",
          "avx2"}) {
        if (info.contains(" " + flag + " ") || info.contains(" " + flag + "\n")) {
          f.append(f.length() == 0 ? "" : " ").append(flag);
        }
      }
      return name + ", " + Runtime.getRuntime().availableProcessors() + " CPUs (" + f + ")";
    } catch (java.io.IOException e) {
      return "unknown CPU (" + e.getMessage() + ")";
    }
  }

  /** The 1, 5 and 15 minute load averages ({@code /proc/loadavg}): the machine may be shared. */
  static String loadAverage() {
    try {
      String[] v = java.nio.file.Files.readString(java.nio.file.Path.of("/proc/loadavg")).trim().split("\\s+");
      return v[0] + " " + v[1] + " " + v[2];
    } catch (java.io.IOException e) {
      return "unknown";
    }
  }

  /**
   * A nominal peak of one core in GFLOP/s (int8: GOP/s) for a GEMM in {@code dtype}: cpu MHz x ops per cycle of two
   * 512-bit pipes (f32 FMA 64, bf16 dot products 128, int8 VNNI 256; int8-wo computes in f32). An estimate to
   * place a measurement, not a measured roofline.
   */
  static double nominalPeakGflops(org.sparktp.tensor.DType dtype) {
    double mhz = 2000;
    try {
      java.util.regex.Matcher m = java.util.regex.Pattern.compile("cpu MHz\\s*: ([0-9.]+)")
          .matcher(java.nio.file.Files.readString(java.nio.file.Path.of("/proc/cpuinfo")));
      if (m.find()) {
        mhz = Double.parseDouble(m.group(1));
      }
    } catch (java.io.IOException e) {
      // keep 2 GHz
    }
    int ops = dtype == org.sparktp.tensor.DType.I8 ? 256 : dtype.isHalf() ? 128 : 64;
    return mhz / 1000 * ops;
  }
}
