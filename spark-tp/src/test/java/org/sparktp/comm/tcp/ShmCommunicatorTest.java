package org.sparktp.comm.tcp;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.List;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ThreadLocalRandom;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.sparktp.TpConf;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.backend.Tensor;

/**
 * Every collective of {@link TcpCommunicatorTest} again with the shared-memory data path (all ranks are on
 * loopback, so {@code spark.tp.comm.shm=auto} uses it), plus the segment's life cycle.
 */
class ShmCommunicatorTest extends TcpCommunicatorTest {

  @Override
  TcpOptions opts() {
    return conf("auto");
  }

  /** {@link TcpGroup#options()} read from the {@code spark.tp.comm.*} settings, with {@code spark.tp.comm.shm}. */
  static TcpOptions conf(String shm) {
    return TpConf.tcpOptions(TcpGroup.SECRET, java.util.Map.of(TpConf.COMM_SHM, shm, TpConf.COMM_TIMEOUT, "20s",
        TpConf.COMM_CHUNK_BYTES, "4k"));
  }

  @Override
  String transport() {
    return "shm";
  }

  static Set<String> segmentFiles() throws Exception {
    Set<String> out = new HashSet<>();
    try (Stream<Path> s = Files.list(ShmSegment.directory())) {
      s.map(p -> p.getFileName().toString()).filter(n -> n.startsWith(ShmSegment.PREFIX)).forEach(out::add);
    }
    return out;
  }

  @Test
  void noSegmentFileIsLeftBehindAndOffMeansTcp() throws Exception {
    Set<String> before = segmentFiles();
    try (CpuBackend backend = new CpuBackend(); TcpGroup g = TcpGroup.connect(3, opts())) {
      assertThat(g.comms).allSatisfy(c -> assertThat(c.transport()).isEqualTo("shm"));
      Set<String> during = segmentFiles();
      during.removeAll(before);
      assertThat(during).as("the segment is unlinked once every rank mapped it").isEmpty();
      Random rnd = ThreadLocalRandom.current();
      List<float[]> res = g.run(c -> {
        float[] a = new float[50_000];
        for (int i = 0; i < a.length; i++) {
          a[i] = rnd.nextFloat() + 0.5f;
        }
        try (Tensor t = backend.upload(a, 1, a.length)) {
          c.allReduce(t);
          return backend.download(t);
        }
      });
      assertThat(res.get(1)).isEqualTo(res.get(0));
      assertThat(res.get(2)).isEqualTo(res.get(0));
    }
    Set<String> after = segmentFiles();
    after.removeAll(before);
    assertThat(after).isEmpty();
    try (TcpGroup g = TcpGroup.connect(2, conf("off"))) {
      assertThat(g.comms).allSatisfy(c -> assertThat(c.transport()).isEqualTo("tcp"));
      assertThat(g.run(c -> c.allGatherLong(c.rank() + 5)[1])).containsOnly(6L);
    }
    // Ranks configured differently agree on TCP.
    List<TcpOptions> mixed = List.of(TcpGroup.options().withShm(true), TcpGroup.options().withShm(false));
    try (TcpGroup g = TcpGroup.connect(2, mixed)) {
      assertThat(g.comms).allSatisfy(c -> assertThat(c.transport()).isEqualTo("tcp"));
      assertThat(g.run(c -> c.allGatherLong(c.rank() + 5)[0])).containsOnly(5L);
    }
  }
}
