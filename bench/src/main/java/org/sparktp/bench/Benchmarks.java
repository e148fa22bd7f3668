package org.sparktp.bench;

import java.util.List;

/**
 * The benchmark programs by name: {@code spark-tp bench NAME [flags]}. The CLI in the library looks this class up
 * by name ({@link #run}) when the spark-tp-bench jar is on the class path; the library does not depend on this
 * module. {@code bin/spark-tp} puts it on the class path.
 */
public final class Benchmarks {
  /** The benchmark names, in the order the usage lists them. */
  public static final List<String> NAMES = List.of("gemm", "comm", "spark", "peer", "transformer", "gpu", "generate");

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
      case "generate" -> GenerateBench.main(args);
      default -> throw new IllegalArgumentException("unknown benchmark '" + name + "'; use " + String.join(", ", NAMES));
    }
    return 0;
  }
}
