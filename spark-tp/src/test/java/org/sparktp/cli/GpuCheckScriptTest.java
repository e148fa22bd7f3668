package org.sparktp.cli;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code bin/spark-tp gpu-check} without a GPU ends within seconds, says "no GPU" and why, and exits 2. */
class GpuCheckScriptTest {
  private static final Path SCRIPT = Paths.get("..", "bin", "gpu-check").toAbsolutePath().normalize();

  /** A wrapper in {@code dir} that runs {@code /usr/bin/<tool>} (the script sees only {@code dir} on its PATH). */
  private static void tool(Path dir, String tool) throws Exception {
    Path w = dir.resolve(tool);
    Files.writeString(w, "#!/bin/bash\nexec /usr/bin/" + tool + " \"$@\"\n");
    w.toFile().setExecutable(true);
  }

  private static String[] run(Path pathDir) throws Exception {
    ProcessBuilder pb = new ProcessBuilder("/bin/bash", SCRIPT.toString(), "--out", pathDir.resolve("out").toString())
        .redirectErrorStream(true);
    pb.environment().put("PATH", pathDir.toString());
    long t0 = System.nanoTime();
    Process p = pb.start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
    long ms = (System.nanoTime() - t0) / 1_000_000;
    return new String[] {out, Integer.toString(p.exitValue()), Long.toString(ms)};
  }

  @Test
  void withoutNvidiaSmiItSaysNoGpuAndWhy(@TempDir Path dir) throws Exception {
    tool(dir, "dirname");
    String[] r = run(dir);
    assertThat(r[0]).startsWith("gpu-check: no GPU: nvidia-smi not found on PATH");
    assertThat(r[1]).isEqualTo("2");
    assertThat(Long.parseLong(r[2])).isLessThan(10_000L);
    assertThat(dir.resolve("out")).doesNotExist(); // nothing built, nothing written
  }

  @Test
  void whenNvidiaSmiListsNoGpuItSaysSo(@TempDir Path dir) throws Exception {
    for (String t : new String[] {"dirname", "timeout", "grep", "head"}) {
      tool(dir, t);
    }
    Path smi = dir.resolve("nvidia-smi");
    Files.writeString(smi, "#!/bin/bash\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA"
        + " driver.'\nexit 9\n");
    smi.toFile().setExecutable(true);
    String[] r = run(dir);
    assertThat(r[0]).startsWith("gpu-check: no GPU: nvidia-smi lists no GPU: NVIDIA-SMI has failed because it could"
        + " not communicate with the NVIDIA driver.");
    assertThat(r[1]).isEqualTo("2");
    assertThat(Long.parseLong(r[2])).isLessThan(10_000L);
  }
}
