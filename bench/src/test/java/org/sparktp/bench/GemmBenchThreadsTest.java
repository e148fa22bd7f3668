package org.sparktp.bench;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.Test;

/** GemmBench's thread count: OpenBLAS gets oneDNN's (OMP_NUM_THREADS, else every core), with a warning line. */
class GemmBenchThreadsTest {
  private String out;

  private int threads(int t, boolean given, String omp, int cores) {
    ByteArrayOutputStream b = new ByteArrayOutputStream();
    int r = GemmBench.comparableThreads(t, given, omp, cores, new PrintStream(b, true, StandardCharsets.UTF_8));
    out = b.toString(StandardCharsets.UTF_8);
    return r;
  }

  @Test
  void unsetOmpGivesOpenBlasEveryCoreAndWarns() {
    assertThat(threads(1, false, null, 6)).isEqualTo(6);
    assertThat(out).startsWith("warning: OMP_NUM_THREADS is unset, so oneDNN's OpenMP uses every core (6); "
        + "OpenBLAS is set to 6 thread(s) too");
  }

  @Test
  void ompOfOneIsQuiet() {
    assertThat(threads(1, false, "1", 6)).isEqualTo(1);
    assertThat(out).isEmpty();
  }

  @Test
  void explicitThreadsThatDifferAreWarnedAbout() {
    assertThat(threads(2, true, null, 4)).isEqualTo(2);
    assertThat(out).contains("--threads 2 gives OpenBLAS 2: the oneDNN rows are not comparable");
    assertThat(threads(3, true, "3", 4)).isEqualTo(3);
    assertThat(out).isEmpty();
  }
}
