package org.sparktp.comm.tcp;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.OutputStreamWriter;
import java.io.Writer;
import java.nio.charset.StandardCharsets;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import java.util.Set;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Ranks as separate JVM processes ({@link RankProcess}) on loopback. */
class TcpProcessTest {

  /** Child processes of one group, with their stdout lines. */
  private static final class Ranks implements AutoCloseable {
    final List<Process> procs = new ArrayList<>();
    final List<BlockingQueue<String>> lines = new ArrayList<>();
    final List<String> addrs = new ArrayList<>();

    Ranks(int p, String scenario) throws Exception {
      this(p, scenario, "auto");
    }

    Ranks(int p, String scenario, String shm) throws Exception {
      String cp = System.getProperty("surefire.test.class.path", System.getProperty("java.class.path"));
      String java = System.getProperty("java.home") + File.separator + "bin" + File.separator + "java";
      for (int r = 0; r < p; r++) {
        ProcessBuilder pb = new ProcessBuilder(java, "-Xmx256m", "-Djava.net.preferIPv4Stack=true", "-cp", cp,
            RankProcess.class.getName(), "" + r, "" + p, scenario, shm).redirectError(ProcessBuilder.Redirect.INHERIT);
        pb.environment().put("OPENBLAS_NUM_THREADS", "1");
        Process proc = pb.start();
        procs.add(proc);
        BlockingQueue<String> q = new LinkedBlockingQueue<>();
        lines.add(q);
        Thread t = new Thread(() -> {
          try (BufferedReader in = new BufferedReader(new InputStreamReader(proc.getInputStream(), StandardCharsets.UTF_8))) {
            String l;
            while ((l = in.readLine()) != null) {
              q.add(l);
            }
          } catch (Exception e) {
            q.add("EOF " + e);
          }
          q.add("EOF");
        });
        t.setDaemon(true);
        t.start();
      }
      for (int r = 0; r < p; r++) {
        String a = next(r, 60);
        assertThat(a).as("rank " + r + " prints its address").startsWith("ADDR ");
        addrs.add(a.substring(5));
      }
      byte[] secret = new byte[32];
      new SecureRandom().nextBytes(secret);
      long seed = ThreadLocalRandom.current().nextLong();
      for (Process proc : procs) {
        Writer w = new OutputStreamWriter(proc.getOutputStream(), StandardCharsets.UTF_8);
        w.write("SECRET " + HexFormat.of().formatHex(secret) + "\nPEERS " + String.join(",", addrs) + "\nSEED " + seed
            + "\n");
        w.flush();
      }
    }

    String next(int r, int seconds) throws InterruptedException {
      String l = lines.get(r).poll(seconds, TimeUnit.SECONDS);
      if (l == null) {
        throw new AssertionError("rank " + r + " printed nothing within " + seconds + " s");
      }
      return l;
    }

    @Override
    public void close() throws InterruptedException {
      for (Process p : procs) {
        p.destroyForcibly();
      }
      for (Process p : procs) {
        p.waitFor(10, TimeUnit.SECONDS);
      }
    }
  }

  @ParameterizedTest(name = "shm={0}")
  @ValueSource(strings = {"auto", "off"})
  void everyCollectiveAcrossThreeProcessesMatchesAFloat64Reference(String shm) throws Exception {
    Set<String> before = ShmCommunicatorTest.segmentFiles();
    try (Ranks ranks = new Ranks(3, "check", shm)) {
      for (int r = 0; r < 3; r++) {
        assertThat(ranks.next(r, 120)).as("rank " + r).isEqualTo("PASS " + (shm.equals("off") ? "tcp" : "shm"));
      }
      for (Process p : ranks.procs) {
        assertThat(p.waitFor(30, TimeUnit.SECONDS)).isTrue();
        assertThat(p.exitValue()).isZero();
      }
    }
    Set<String> after = ShmCommunicatorTest.segmentFiles();
    after.removeAll(before);
    assertThat(after).as("no shared-memory file is left behind").isEmpty();
  }

  @ParameterizedTest(name = "shm={0}")
  @ValueSource(strings = {"auto", "off"})
  void aPeerKilledInTheMiddleOfAnAllReduceMakesTheOthersFailWithinSeconds(String shm) throws Exception {
    Set<String> before = ShmCommunicatorTest.segmentFiles();
    try (Ranks ranks = new Ranks(3, "loop", shm)) {
      for (int r = 0; r < 3; r++) {
        assertThat(ranks.next(r, 120)).as("rank " + r).isEqualTo("RUNNING " + (shm.equals("off") ? "tcp" : "shm"));
      }
      Thread.sleep(200);
      long start = System.nanoTime();
      ranks.procs.get(1).destroyForcibly();
      String f0 = ranks.next(0, 10);
      String f2 = ranks.next(2, 10);
      long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
      // The timeout is 60 s: failing within a few seconds means the closed connection was noticed.
      assertThat(ms).isLessThan(10_000);
      assertThat(f0).startsWith("FAILED allReduce on rank 0");
      assertThat(f2).startsWith("FAILED allReduce on rank 2");
      // Rank 2 receives from rank 1 and rank 0 sends to it: the first to notice names rank 1 and its
      // address; the other may instead name the survivor that aborted because of it.
      assertThat(f0 + " | " + f2).contains("rank 1 at " + ranks.addrs.get(1));
      assertThat(f0).containsAnyOf("rank 1 at " + ranks.addrs.get(1), "rank 2 at " + ranks.addrs.get(2));
      assertThat(f2).containsAnyOf("rank 1 at " + ranks.addrs.get(1), "rank 0 at " + ranks.addrs.get(0));
    }
    Set<String> after = ShmCommunicatorTest.segmentFiles();
    after.removeAll(before);
    assertThat(after).as("no shared-memory file is left behind by a killed rank").isEmpty();
  }
}
