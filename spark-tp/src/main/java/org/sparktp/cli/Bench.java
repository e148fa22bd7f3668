package org.sparktp.cli;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.util.Arrays;
import java.util.List;

/**
 * {@code spark-tp bench gemm|comm|spark|peer|transformer|gpu|generate|large [flags]}: runs one of the benchmark programs.
 * They live in their own module and jar (spark-tp-bench, {@code bench/}); the library does not depend on it, so
 * the entry point {@value #ENTRY} is looked up by name on the class path ({@code bin/spark-tp} puts it there).
 */
final class Bench {
  /** The bench module's entry point: {@code public static int run(String name, String[] args)}. */
  static final String ENTRY = "org.sparktp.bench.Benchmarks";
  static final List<String> NAMES = List.of("gemm", "comm", "spark", "peer", "transformer", "gpu", "generate", "large");

  private Bench() {}

  static void run(String[] args) throws Exception {
    if (args.length == 0) {
      throw new UsageException("'bench' needs one of: " + String.join(", ", NAMES));
    }
    if (!NAMES.contains(args[0])) {
      throw new UsageException("unknown benchmark '" + args[0]
          + "'; use gemm, comm, spark, peer, transformer, gpu, generate or large");
    }
    String[] rest = Arrays.copyOfRange(args, 1, args.length);
    int rc;
    try {
      rc = (Integer) entryPoint().invoke(null, args[0], rest);
    } catch (InvocationTargetException e) {
      if (e.getCause() instanceof Exception ex) {
        throw ex;
      }
      throw e;
    }
    if (rc != 0) {
      throw new UsageException("the GPU benchmark needs a GPU (see the reason above)");
    }
  }

  /** {@value #ENTRY}'s {@code run}, or a one-line error saying which jar to add. */
  static Method entryPoint() {
    Class<?> c;
    try {
      c = Class.forName(ENTRY, true, Bench.class.getClassLoader());
    } catch (ClassNotFoundException e) {
      throw new IllegalStateException("the benchmarks are not on the class path: add the spark-tp-bench jar"
          + " (bench/target/spark-tp-bench-*.jar, built by 'mvn -pl bench -am install'), or run bin/spark-tp bench",
          e);
    }
    try {
      return c.getMethod("run", String.class, String[].class);
    } catch (NoSuchMethodException e) {
      throw new IllegalStateException(ENTRY + " has no run(String, String[]): the spark-tp-bench jar on the class"
          + " path is not from this spark-tp version", e);
    }
  }
}
