package org.sparktp.kernel;

import com.google.gson.GsonBuilder;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * Writes the Jupyter kernel spec of {@link SparkTpKernel}: {@code <data dir>/kernels/spark-tp/kernel.json},
 * where the data dir is the user's, as {@code jupyter kernelspec install --user} picks it ({@code
 * JUPYTER_DATA_DIR}, else {@code ~/Library/Jupyter} on macOS, {@code %APPDATA%\jupyter} on Windows,
 * {@code $XDG_DATA_HOME/jupyter} or {@code ~/.local/share/jupyter} elsewhere). Jupyter, JupyterLab and VS
 * Code then list the kernel "spark-tp (Java)".
 *
 * <p>{@code java -cp CP org.sparktp.kernel.KernelSpec --install --classpath CP [--log4j FILE] [--java JAVA]
 * [--data-dir DIR]} (run by {@code bin/spark-tp notebook-kernel --install}).
 */
public final class KernelSpec {
  public static final String NAME = "spark-tp";

  /** The module options Spark's launcher gives the JVMs it starts on Java 17 (an embedded Spark needs them too). */
  static final List<String> SPARK_JAVA_OPTIONS = List.of("-XX:+IgnoreUnrecognizedVMOptions",
      "--add-opens=java.base/java.lang=ALL-UNNAMED", "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
      "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED", "--add-opens=java.base/java.io=ALL-UNNAMED",
      "--add-opens=java.base/java.net=ALL-UNNAMED", "--add-opens=java.base/java.nio=ALL-UNNAMED",
      "--add-opens=java.base/java.util=ALL-UNNAMED", "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
      "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED", "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
      "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED", "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED",
      "--add-opens=java.base/sun.security.action=ALL-UNNAMED", "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
      "-Djdk.reflect.useDirectMethodHandle=false", "-Dio.netty.tryReflectionSetAccessible=true");

  private KernelSpec() {}

  /** The user's Jupyter data directory. */
  static Path userDataDir(Map<String, String> env, String osName, Path home) {
    String dir = env.get("JUPYTER_DATA_DIR");
    if (dir != null && !dir.isBlank()) {
      return Path.of(dir);
    }
    String os = osName.toLowerCase(Locale.ROOT);
    if (os.contains("mac")) {
      return home.resolve("Library").resolve("Jupyter");
    }
    if (os.contains("win") && env.get("APPDATA") != null) {
      return Path.of(env.get("APPDATA"), "jupyter");
    }
    String xdg = env.get("XDG_DATA_HOME");
    return xdg != null && !xdg.isBlank() ? Path.of(xdg, "jupyter") : home.resolve(".local/share/jupyter");
  }

  /** Writes {@code dataDir/kernels/spark-tp/kernel.json}; returns the kernel's folder. */
  static Path write(Path dataDir, String java, String classpath, String log4j) throws IOException {
    if (classpath == null || classpath.isBlank()) {
      throw new IllegalArgumentException("The kernel needs a class path (spark-tp, Spark and the kernel)");
    }
    List<String> entries = new ArrayList<>();
    for (String e : classpath.split(File.pathSeparator)) {
      if (!e.isBlank()) {
        entries.add(Path.of(e).toAbsolutePath().normalize().toString()); // Jupyter starts kernels in the notebook's folder
      }
    }
    classpath = String.join(File.pathSeparator, entries);
    List<String> argv = new ArrayList<>(List.of(java, "-Xmx4g", "-Djava.awt.headless=true"));
    argv.addAll(SPARK_JAVA_OPTIONS);
    if (log4j != null) {
      argv.add("-Dlog4j2.configurationFile=" + log4j);
    }
    argv.addAll(List.of("-cp", classpath, SparkTpKernel.class.getName(), "{connection_file}"));
    Map<String, Object> spec = new LinkedHashMap<>();
    spec.put("argv", argv);
    spec.put("display_name", "spark-tp (Java)");
    spec.put("language", "java");
    spec.put("interrupt_mode", "message");
    spec.put("env", Map.of("SPARK_LOCAL_IP", "127.0.0.1", "OPENBLAS_NUM_THREADS", "1"));
    Path dir = dataDir.resolve("kernels").resolve(NAME);
    Files.createDirectories(dir);
    Path tmp = dir.resolve("kernel.json.tmp");
    Files.writeString(tmp, new GsonBuilder().setPrettyPrinting().disableHtmlEscaping().create().toJson(spec) + "\n",
        StandardCharsets.UTF_8);
    Files.move(tmp, dir.resolve("kernel.json"), StandardCopyOption.REPLACE_EXISTING,
        StandardCopyOption.ATOMIC_MOVE);
    return dir;
  }

  public static void main(String[] args) throws IOException {
    Map<String, String> flags = new LinkedHashMap<>();
    boolean install = false;
    for (int i = 0; i < args.length; i++) {
      if (args[i].equals("--install")) {
        install = true;
      } else if (args[i].startsWith("--") && i + 1 < args.length) {
        flags.put(args[i].substring(2), args[++i]);
      } else {
        System.err.println("spark-tp notebook-kernel: unexpected argument '" + args[i] + "'");
        System.exit(2); // the entry point only
      }
    }
    if (!install) {
      System.err.println("usage: spark-tp notebook-kernel --install   (writes the kernel spec into the user's Jupyter"
          + " data directory; JUPYTER_DATA_DIR wins)");
      System.exit(2);
    }
    Path data = flags.containsKey("data-dir") ? Path.of(flags.get("data-dir"))
        : userDataDir(System.getenv(), System.getProperty("os.name"), Path.of(System.getProperty("user.home")));
    String java = flags.getOrDefault("java", Path.of(System.getProperty("java.home"), "bin", "java").toString());
    Path dir = write(data, java, flags.getOrDefault("classpath", System.getProperty("java.class.path")),
        flags.get("log4j"));
    System.out.println("Installed the Jupyter kernel '" + NAME + "' (spark-tp (Java)) in " + dir);
    System.out.println("Start Jupyter (jupyter lab, jupyter notebook, or VS Code) and pick the kernel \"spark-tp"
        + " (Java)\"; the notebooks are in notebooks/.");
  }
}
