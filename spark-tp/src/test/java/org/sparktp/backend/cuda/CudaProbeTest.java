package org.sparktp.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.backend.BackendProvider;
import org.sparktp.backend.Backends;

/** Without a GPU the CUDA backend reports why it is unavailable, and auto falls back to the CPU. */
class CudaProbeTest {

  @Test
  void missingLibrariesAreNamedWithTheFoldersSearched(@TempDir Path dir) throws Exception {
    Path a = Files.createDirectory(dir.resolve("a"));
    Path b = Files.createDirectory(dir.resolve("b"));
    Files.createFile(b.resolve(CudaLibraries.CUDART));
    Files.createFile(a.resolve(CudaLibraries.NVRTC));
    java.util.Map<String, Path> found = CudaLibraries.locate(
        List.of(CudaLibraries.CUDART, CudaLibraries.NVRTC, CudaLibraries.NCCL), List.of(a, b));
    assertThat(found.get(CudaLibraries.CUDART)).isEqualTo(b.resolve(CudaLibraries.CUDART));
    assertThat(found.get(CudaLibraries.NVRTC)).isEqualTo(a.resolve(CudaLibraries.NVRTC));
    assertThat(found).containsKey(CudaLibraries.NCCL);
    assertThat(found.get(CudaLibraries.NCCL)).isNull();
    assertThat(CudaLibraries.missing(List.of(CudaLibraries.CUDART, CudaLibraries.CUBLASLT, CudaLibraries.NCCL),
        List.of(a, b)))
        .startsWith("libcublasLt.so.13, libnccl.so.2 not found in [" + a + ", " + b + "]")
        .contains("LD_LIBRARY_PATH");
    assertThat(CudaLibraries.missing(List.of(CudaLibraries.CUDART), List.of(a, b))).isNull();
  }

  @Test
  void withoutADriverTheBackendIsUnavailableWithTheReasonAndAutoPicksTheCpu() {
    CudaProbe.Status st = CudaProbe.status();
    assumeTrue(!st.available(), "a GPU is usable here; this test is for machines without one");
    assertThat(CudaProbe.status()).isSameAs(st); // computed once
    assertThat(st.devices()).isZero();
    if (CudaLibraries.locate(List.of(CudaLibraries.DRIVER), CudaLibraries.searchPath()).get(CudaLibraries.DRIVER)
        == null) {
      // no libcuda.so.1 anywhere: cudart's glue cannot load, and the reason says which library and where it looked
      assertThat(st.backendReason()).startsWith("cudart does not load (").contains("libcuda.so.1")
          .contains("not found in [");
    } else {
      assertThat(st.backendReason()).isNotBlank();
    }
    assertThat(st.ncclReason()).isNotBlank();
    System.out.println("CUDA backend here: " + st.backendReason());
    BackendProvider cuda = Backends.pick("cuda");
    assertThat(cuda.unavailableReason()).isEqualTo(st.backendReason());
    assertThat(Backends.pick("auto").name()).isEqualTo("cpu");
    // a task without a GPU never gets CUDA, and asking for it says what to set
    assertThat(Backends.pick("auto", -1).name()).isEqualTo("cpu");
    assertThat(cuda.unavailableReason(-1)).isEqualTo(st.backendReason());
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> Backends.create("cuda", java.util.Map.of(), 0))
        .hasMessage("Backend 'cuda' is unavailable: " + st.backendReason());
    org.assertj.core.api.Assertions.assertThatThrownBy(() -> Backends.pick("tpu"))
        .hasMessage("Unknown backend 'tpu' (spark.tp.backend / backend param): use auto, cpu or cuda");
  }
}
