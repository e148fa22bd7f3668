package org.sparktp.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Every kernel source compiles to a CUBIN for sm_90 (the H200) with the machine's {@code nvcc} (skipped where
 * there is none), and every entry point the backend launches is in it. This is the CPU-side proof that the kernels
 * are valid CUDA; NVRTC compiles the same text at run time.
 */
class KernelCompileTest {

  static Path nvcc() {
    List<Path> c = new ArrayList<>();
    String home = System.getenv("CUDA_HOME");
    if (home != null) {
      c.add(Paths.get(home, "bin", "nvcc"));
    }
    String path = System.getenv("PATH");
    if (path != null) {
      for (String p : path.split(File.pathSeparator)) {
        c.add(Paths.get(p, "nvcc"));
      }
    }
    c.add(Paths.get("/usr/local/cuda/bin/nvcc"));
    c.add(Paths.get("/usr/local/cuda-13.0/bin/nvcc"));
    for (Path p : c) {
      if (Files.isExecutable(p)) {
        return p;
      }
    }
    return null;
  }

  @Test
  void everyKernelCompilesToASm90CubinWithNvcc(@TempDir Path dir) throws Exception {
    Path nvcc = nvcc();
    assumeTrue(nvcc != null, "nvcc not found (PATH, CUDA_HOME, /usr/local/cuda)");
    Path src = dir.resolve(CudaKernels.SOURCE);
    Files.writeString(src, CudaKernels.source(), StandardCharsets.UTF_8);
    Path cubin = dir.resolve("kernels.cubin");
    Process p = new ProcessBuilder(nvcc.toString(), "-arch=sm_90", "-cubin", "-Werror", "all-warnings", "-o",
        cubin.toString(), src.toString()).redirectErrorStream(true).start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
    assertThat(p.exitValue()).as("nvcc output:\n%s", out).isZero();
    byte[] bin = Files.readAllBytes(cubin);
    assertThat(bin).startsWith(0x7f, 'E', 'L', 'F'); // a CUBIN is an ELF image
    String symbols = new String(bin, StandardCharsets.ISO_8859_1);
    for (String k : CudaKernels.ENTRY_POINTS) {
      assertThat(symbols).as("entry point %s in the CUBIN", k).contains(k + "\0");
    }
  }

  @Test
  void theLaunchSignaturesMatchTheKernelSource() {
    java.util.regex.Matcher m = java.util.regex.Pattern
        .compile("extern \"C\" __global__ void (\\w+)\\(([^)]*)\\)").matcher(CudaKernels.source());
    java.util.Map<String, String> fromSource = new java.util.TreeMap<>();
    while (m.find()) {
      StringBuilder kinds = new StringBuilder();
      for (String param : m.group(2).split(",")) {
        String p = param.trim();
        kinds.append(p.contains("*") ? 'p' : p.startsWith("long") ? 'l' : p.startsWith("int") ? 'i'
            : p.startsWith("float") ? 'f' : '?');
      }
      fromSource.put(m.group(1), kinds.toString());
    }
    assertThat(fromSource).isEqualTo(new java.util.TreeMap<>(CudaKernels.SIGNATURES));
    CudaKernels.checkArgs("tp_add", 1L, 2L, 3L);
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> CudaKernels.checkArgs("tp_add", 1L, 2L, 3))
        .hasMessage("Kernel tp_add takes (ppl) but the launch passes (lli); p = pointer (Long), l = Long,"
            + " i = Integer, f = Float");
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> CudaKernels.checkArgs("tp_scale", 1L, 2L))
        .hasMessageStartingWith("Kernel tp_scale takes (plf) but the launch passes (ll)");
  }
}
