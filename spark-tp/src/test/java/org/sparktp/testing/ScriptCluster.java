package org.sparktp.testing;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Assumptions;

/**
 * A cluster started by {@code bin/spark-tp-cluster up --netns} for a test: a standalone master on the host and
 * workers in network namespaces (hosts {@code A.B.C.11}, {@code .12}, ...), with this JVM's class path. Its name
 * and subnet are fresh for each run; {@link #close()} runs {@code down} (every process it started, by pid, and the
 * namespaces), and a shutdown hook does the same if the JVM ends first.
 */
public final class ScriptCluster implements AutoCloseable {
  private final String name;
  private final String subnet;
  private final String url;
  private final Thread hook;
  private boolean closed;

  private ScriptCluster(String name, String subnet, String url, Thread hook) {
    this.name = name;
    this.subnet = subnet;
    this.url = url;
    this.hook = hook;
  }

  /** Skips the calling test (with the reason) unless it runs as root with network namespaces and iproute2. */
  public static void assumeNetns() {
    Assumptions.assumeFalse("skip".equals(System.getProperty("sparktp.cluster")),
        "cluster tests skipped by -Dsparktp.cluster=skip");
    Assumptions.assumeTrue("root".equals(System.getProperty("user.name")),
        "cluster tests need root (network namespaces for bin/spark-tp-cluster up --netns); running as "
            + System.getProperty("user.name"));
    String probe = "tp-probe-" + ProcessHandle.current().pid() % 100000;
    boolean ok = exec(List.of("ip", "netns", "add", probe)).code == 0;
    if (ok) {
      exec(List.of("ip", "netns", "del", probe));
    }
    Assumptions.assumeTrue(ok, "cluster tests need network namespaces ('ip netns add' fails here: no iproute2, "
        + "or no CAP_SYS_ADMIN in this container)");
    boolean links = exec(List.of("ip", "link", "add", probe, "type", "bridge")).code == 0;
    if (links) {
      exec(List.of("ip", "link", "del", probe));
    }
    Assumptions.assumeTrue(links, "cluster tests need to create a bridge ('ip link add ... type bridge' fails here: "
        + "no CAP_NET_ADMIN in this container)");
  }

  /** Starts {@code workers} workers of 1 core each in their own namespaces; waits until they registered. */
  public static ScriptCluster up(int workers) {
    String name = "it" + (ProcessHandle.current().pid() % 100000);
    String subnet = "10.213." + (100 + ThreadLocalRandom.current().nextInt(150));
    Thread hook = new Thread(() -> script(name, List.of("down")));
    Runtime.getRuntime().addShutdownHook(hook);
    Result r = script(name, List.of("up", "--workers", Integer.toString(workers), "--cores", "1", "--memory", "1g",
        "--netns", "--subnet", subnet));
    if (r.code != 0) {
      script(name, List.of("down"));
      Runtime.getRuntime().removeShutdownHook(hook);
      throw new AssertionError("bin/spark-tp-cluster up failed (" + r.code + "):\n" + r.output);
    }
    String url = r.output.lines().filter(l -> l.startsWith("spark://")).findFirst()
        .orElseThrow(() -> new AssertionError("bin/spark-tp-cluster up printed no spark:// URL:\n" + r.output));
    return new ScriptCluster(name, subnet, url, hook);
  }

  /** The master URL. */
  public String url() {
    return url;
  }

  /** The host's address on the cluster's bridge: the driver binds it. */
  public String hostAddress() {
    return subnet + ".1";
  }

  /** The worker number (1..N) of an executor host. */
  public int workerOf(String host) {
    assertThat(host).as("an executor host of this cluster").startsWith(subnet + ".");
    return Integer.parseInt(host.substring(subnet.length() + 1)) - 10;
  }

  /** Runs a verb ({@code kill-worker 2}, {@code delay 5}, ...) and asserts that it succeeded; returns its output. */
  public String run(String... verb) {
    Result r = script(name, List.of(verb));
    assertThat(r.code).as("bin/spark-tp-cluster %s: %s", String.join(" ", verb), r.output).isZero();
    return r.output;
  }

  /** The class path the cluster runs with (this JVM's: the test classes, the library and its dependencies). */
  public static String classPath() {
    return System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
  }

  @Override
  public void close() {
    if (closed) {
      return;
    }
    closed = true;
    Result r = script(name, List.of("down"));
    try {
      Runtime.getRuntime().removeShutdownHook(hook);
    } catch (IllegalStateException e) {
      // the JVM is shutting down: the hook runs (down is idempotent)
    }
    assertThat(r.code).as("bin/spark-tp-cluster down: %s", r.output).isZero();
  }

  private record Result(int code, String output) {}

  private static Path repo() {
    Path dir = Path.of(System.getProperty("basedir", ".")).toAbsolutePath();
    while (dir != null && !Files.isRegularFile(dir.resolve("bin/spark-tp-cluster"))) {
      dir = dir.getParent();
    }
    assertThat(dir).as("bin/spark-tp-cluster above %s", System.getProperty("basedir", ".")).isNotNull();
    return dir;
  }

  private static Result script(String name, List<String> args) {
    List<String> cmd = new ArrayList<>();
    cmd.add(repo().resolve("bin/spark-tp-cluster").toString());
    cmd.addAll(args);
    cmd.add("--name");
    cmd.add(name);
    return exec(cmd);
  }

  private static Result exec(List<String> cmd) {
    try {
      ProcessBuilder pb = new ProcessBuilder(cmd).redirectErrorStream(true);
      pb.environment().put("SPARK_TP_CLASSPATH", classPath());
      Path state = Path.of(System.getProperty("basedir", "."), "target", "spark-tp-cluster").toAbsolutePath();
      pb.environment().put("SPARK_TP_CLUSTER_DIR", state.toString());
      Process p = pb.start();
      byte[] out = p.getInputStream().readAllBytes();
      if (!p.waitFor(300, TimeUnit.SECONDS)) {
        p.destroyForcibly();
      }
      return new Result(p.exitValue(), new String(out, StandardCharsets.UTF_8));
    } catch (IOException e) {
      return new Result(127, cmd.get(0) + ": " + e.getMessage());
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      return new Result(130, "interrupted");
    }
  }
}
