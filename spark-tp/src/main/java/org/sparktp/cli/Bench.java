package org.sparktp.cli;

import java.util.Arrays;

/** {@code spark-tp bench gemm|comm|spark|peer|transformer|gpu|generate [flags]}: runs one of the benchmark programs. */
final class Bench {
  private Bench() {}

  static void run(String[] args) throws Exception {
    if (args.length == 0) {
      throw new UsageException("'bench' needs one of: gemm, comm, spark, peer, transformer, gpu, generate");
    }
    String[] rest = Arrays.copyOfRange(args, 1, args.length);
    switch (args[0]) {
      case "gemm" -> org.sparktp.bench.GemmBench.main(rest);
      case "comm" -> org.sparktp.bench.CommBench.main(rest);
      case "spark" -> org.sparktp.bench.SparkBench.main(rest);
      case "transformer" -> org.sparktp.bench.TransformerBench.main(rest);
      case "peer" -> org.sparktp.bench.PeerBench.main(rest);
      case "gpu" -> {
        if (org.sparktp.bench.GpuBench.run(rest, System.out) != 0) {
          throw new UsageException("the GPU benchmark needs a GPU (see the reason above)");
        }
      }
      case "generate" -> org.sparktp.bench.GenerateBench.main(rest);
      default -> throw new UsageException("unknown benchmark '" + args[0]
          + "'; use gemm, comm, spark, peer, transformer, gpu or generate");
    }
  }
}
