package org.sparktp.backend.cuda;

import java.io.File;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Where the host-provided CUDA libraries are. JavaCPP's CUDA preset ships only JNI glue: the driver
 * ({@code libcuda.so.1}), cudart, cuBLAS/cuBLASLt, NVRTC and NCCL come from the GPU host (a CUDA toolkit, the
 * driver's folder, or the {@code nvidia-*} wheels of a PyTorch install). This class only looks for the files, to
 * say exactly what is missing and where it looked; whether a library loads is decided by loading it.
 */
public final class CudaLibraries {
  private CudaLibraries() {}

  /** The driver. */
  public static final String DRIVER = "libcuda.so.1";
  public static final String CUDART = "libcudart.so.13";
  public static final String CUBLASLT = "libcublasLt.so.13";
  public static final String CUBLAS = "libcublas.so.13";
  public static final String NVRTC = "libnvrtc.so.13";
  public static final String NCCL = "libnccl.so.2";

  /** What the CUDA backend needs. */
  public static final List<String> BACKEND = List.of(DRIVER, CUDART, CUBLASLT, CUBLAS, NVRTC);

  /**
   * The folders searched, in order: {@code java.library.path}, {@code LD_LIBRARY_PATH}, the CUDA toolkits under
   * {@code /usr/local}, the system library folders, and NVIDIA's pip wheels under the Python site-packages found.
   */
  public static List<Path> searchPath() {
    Set<Path> dirs = new LinkedHashSet<>();
    addPathList(dirs, System.getProperty("java.library.path"));
    addPathList(dirs, System.getenv("LD_LIBRARY_PATH"));
    addIfDir(dirs, Paths.get("/usr/local/cuda/lib64"));
    addIfDir(dirs, Paths.get("/usr/local/cuda/targets/x86_64-linux/lib"));
    for (Path p : children(Paths.get("/usr/local"), "cuda-*")) {
      addIfDir(dirs, p.resolve("lib64"));
      addIfDir(dirs, p.resolve("lib"));
      addIfDir(dirs, p.resolve("targets/x86_64-linux/lib"));
    }
    for (String d : new String[] {"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu",
        "/usr/lib/wsl/lib"}) {
      addIfDir(dirs, Paths.get(d));
    }
    // pip wheels: site-packages/nvidia/<pkg>/lib (nvidia-cublas, nvidia-nccl-cu13, ...)
    for (String root : new String[] {"/usr/local/lib", "/usr/lib", System.getProperty("user.home") + "/.local/lib"}) {
      for (Path py : children(Paths.get(root), "python3*")) {
        for (String sp : new String[] {"site-packages", "dist-packages"}) {
          for (Path pkg : children(py.resolve(sp).resolve("nvidia"), "*")) {
            addIfDir(dirs, pkg.resolve("lib"));
          }
        }
      }
    }
    return new ArrayList<>(dirs);
  }

  /** For each name, the first folder of {@code dirs} that holds it, or null. */
  public static Map<String, Path> locate(List<String> names, List<Path> dirs) {
    Map<String, Path> out = new LinkedHashMap<>();
    for (String n : names) {
      Path found = null;
      for (Path d : dirs) {
        Path f = d.resolve(n);
        if (Files.exists(f)) {
          found = f;
          break;
        }
      }
      out.put(n, found);
    }
    return out;
  }

  /**
   * "libX, libY not found in [dirs]" for the names that {@link #locate} did not find, or null when all were
   * found (they may still be loadable through the dynamic loader's cache).
   */
  public static String missing(List<String> names, List<Path> dirs) {
    List<String> miss = new ArrayList<>();
    for (Map.Entry<String, Path> e : locate(names, dirs).entrySet()) {
      if (e.getValue() == null) {
        miss.add(e.getKey());
      }
    }
    if (miss.isEmpty()) {
      return null;
    }
    return String.join(", ", miss) + " not found in " + dirs
        + " (install the CUDA 13 toolkit or the nvidia-* pip wheels, and put their lib folders on LD_LIBRARY_PATH)";
  }

  private static void addPathList(Set<Path> dirs, String list) {
    if (list == null || list.isBlank()) {
      return;
    }
    for (String p : list.split(File.pathSeparator)) {
      if (!p.isBlank()) {
        addIfDir(dirs, Paths.get(p.trim()));
      }
    }
  }

  private static void addIfDir(Set<Path> dirs, Path p) {
    if (Files.isDirectory(p)) {
      dirs.add(p.normalize());
    }
  }

  private static List<Path> children(Path dir, String glob) {
    List<Path> out = new ArrayList<>();
    if (!Files.isDirectory(dir)) {
      return out;
    }
    try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, glob)) {
      for (Path p : ds) {
        out.add(p);
      }
    } catch (java.io.IOException | SecurityException e) {
      // an unreadable folder is one place fewer to look; the report lists the folders searched
    }
    out.sort(null);
    return out;
  }
}
