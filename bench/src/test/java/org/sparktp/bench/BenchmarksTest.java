package org.sparktp.bench;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;
import org.sparktp.cli.SparkTpCli;

/** The library's CLI finds the benchmarks of this module by name; PeerBench's Python peer is packed next to it. */
class BenchmarksTest {
  @Test
  void theCliRunsABenchmarkOfThisModuleByName() {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    ByteArrayOutputStream err = new ByteArrayOutputStream();
    // a wrong flag: GemmBench itself answers (so the CLI reached it) before any work starts
    int code = SparkTpCli.run(new String[] {"bench", "gemm", "--nope", "1"},
        new PrintStream(out, true, StandardCharsets.UTF_8), new PrintStream(err, true, StandardCharsets.UTF_8));
    assertThat(code).isEqualTo(1);
    assertThat(err.toString(StandardCharsets.UTF_8))
        .startsWith("spark-tp bench failed: Unknown flag --nope; use --m, --k, --n, --reps, --threads, --json");
  }

  @Test
  void everyNameTheCliListsIsABenchmark() throws Exception {
    assertThat(Benchmarks.NAMES).containsExactly("gemm", "comm", "spark", "peer", "transformer", "gpu", "generate",
        "large");
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> Benchmarks.run("nope", new String[0]))
        .hasMessage("unknown benchmark 'nope'; use gemm, comm, spark, peer, transformer, gpu, generate, large");
  }

  @Test
  void thePyTorchPeerOfPeerBenchIsPackedNextToIt() throws Exception {
    try (var in = PeerBench.class.getResourceAsStream("torch_mlp_peer.py")) {
      assertThat(in).as("tools/torch_mlp_peer.py packed into the bench jar").isNotNull();
      assertThat(new String(in.readAllBytes(), StandardCharsets.UTF_8)).contains("torch.distributed");
    }
  }
}
