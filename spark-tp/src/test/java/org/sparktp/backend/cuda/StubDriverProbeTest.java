package org.sparktp.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * With a real {@code libcudart.so.13} (the local CUDA toolkit's) and an empty stand-in for the driver
 * ({@code libcuda.so.1} built here by gcc), JavaCPP's CUDA glue loads, makes a real runtime call and the probe
 * reports the runtime's own error: the bindings work on this machine up to the missing GPU. Skipped without gcc or
 * a CUDA 13 runtime.
 */
class StubDriverProbeTest {

  private static Path cudart() {
    for (String d : new String[] {"/usr/local/cuda/lib64", "/usr/local/cuda-13.0/lib64", "/usr/local/cuda/lib"}) {
      if (Files.exists(Paths.get(d, CudaLibraries.CUDART))) {
        return Paths.get(d);
      }
    }
    return null;
  }

  @Test
  void withAStubDriverTheRuntimeAnswersAndTheProbeSaysWhy(@TempDir Path dir) throws Exception {
    Path rt = cudart();
    assumeTrue(rt != null, "no CUDA 13 runtime (libcudart.so.13) on this machine");
    assumeTrue(Files.isExecutable(Paths.get("/usr/bin/gcc")), "no gcc");
    assumeTrue(!CudaProbe.status().available(), "a real GPU is usable here");
    Path src = dir.resolve("empty.c");
    Files.writeString(src, "int spark_tp_stub;\n");
    Process gcc = new ProcessBuilder("/usr/bin/gcc", "-shared", "-fPIC", "-o", dir.resolve("libcuda.so.1").toString(),
        src.toString()).redirectErrorStream(true).start();
    assertThat(gcc.waitFor(60, TimeUnit.SECONDS)).isTrue();
    assertThat(gcc.exitValue()).isZero();
    ProcessBuilder pb = new ProcessBuilder(Paths.get(System.getProperty("java.home"), "bin", "java").toString(), "-cp",
        System.getProperty("java.class.path"), CudaProbe.class.getName()).redirectErrorStream(true);
    pb.environment().put("LD_LIBRARY_PATH", dir + ":" + rt);
    Process p = pb.start();
    String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
    assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
    assertThat(out).contains("CUDA backend: unavailable: cudaGetDeviceCount failed: CUDA driver version is"
        + " insufficient for CUDA runtime version (35): no GPU or no/too old NVIDIA driver");
    assertThat(out).contains("NCCL: unavailable: needs the CUDA backend");
    assertThat(p.exitValue()).isEqualTo(2);
  }
}
