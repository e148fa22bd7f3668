package org.sparktp.model;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.OutputStream;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.RankWeights;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/** bf16 checkpoints load into off-heap bf16 tensors without widening to float32 on the heap. */
class TypedLoadTest {
  @TempDir Path tmp;

  static final int OUT = 8192;
  static final int IN = 16384; // 8192 x 16384 bf16 = 256 MiB

  /** A one-linear model directory of 256 MiB of bf16 weights, written in chunks (the test holds no copy). */
  private Path writeBf16Model(long seed) throws Exception {
    Path dir = tmp.resolve("m");
    Files.createDirectories(dir);
    Files.writeString(dir.resolve("config.json"), "{\"spark_tp\": 1, \"input_dim\": " + IN
        + ", \"layers\": [{\"type\": \"linear\", \"weight\": \"fc.weight\"}]}", StandardCharsets.UTF_8);
    long bytes = 2L * OUT * IN;
    String header = "{\"fc.weight\":{\"dtype\":\"BF16\",\"shape\":[" + OUT + "," + IN + "],\"data_offsets\":[0,"
        + bytes + "]}}";
    while (header.length() % 8 != 0) {
      header += " ";
    }
    Random rnd = new Random(seed);
    try (OutputStream out = Files.newOutputStream(dir.resolve("model.safetensors"))) {
      ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(header.length());
      out.write(len.array());
      out.write(header.getBytes(StandardCharsets.US_ASCII));
      byte[] chunk = new byte[1 << 20];
      for (long done = 0; done < bytes; done += chunk.length) {
        for (int i = 0; i < chunk.length; i += 2) {
          int r = rnd.nextInt();
          int v = 0x3C00 | (r & 0x807F) | ((r >>> 8 & 7) << 7); // +-[2^-7, 2^-3): finite, non-zero bf16
          chunk[i] = (byte) v;
          chunk[i + 1] = (byte) (v >> 8);
        }
        out.write(chunk);
      }
    }
    return dir;
  }

  private static long heapPeakSinceReset(List<MemoryPoolMXBean> pools) {
    long peak = 0;
    for (MemoryPoolMXBean p : pools) {
      peak += p.getPeakUsage().getUsed();
    }
    return peak;
  }

  @Test
  void a256MiBBf16CheckpointLoadsWithTheHeapStayingBelowItsSize() throws Exception {
    Path dir = writeBf16Model(3);
    long checkpoint = 2L * OUT * IN;
    List<MemoryPoolMXBean> heap = ManagementFactory.getMemoryPoolMXBeans().stream()
        .filter(p -> p.getType() == MemoryType.HEAP).toList();
    try (ModelDirectory m = ModelDirectory.open(dir.toString()); CpuBackend be = new CpuBackend(1, "onednn", 64)) {
      assertThat(m.weightDtype()).isEqualTo(DType.BF16);
      Plan plan = Plan.build(m.graph(), 1);
      System.gc();
      heap.forEach(MemoryPoolMXBean::resetPeakUsage);
      long before = heapPeakSinceReset(heap);
      try (RankWeights w = plan.shard(m.weightSource(), 0, be, DType.BF16)) {
        long peak = heapPeakSinceReset(heap);
        assertThat(peak - before).as("heap growth while loading a %d-byte bf16 checkpoint", checkpoint)
            .isLessThan(checkpoint / 4);
        assertThat(be.liveBytes()).as("off-heap bytes: bf16, not widened").isEqualTo(checkpoint);
        Tensor t = w.take("fc.weight");
        try (t) {
          assertThat(t.dtype()).isEqualTo(DType.BF16);
          assertThat(t.rows()).isEqualTo(OUT);
          // rows 100..101 through the float path of the file, against the bf16 tensor's values
          float[] expect = m.readRows("fc.weight", 100, 2);
          try (Tensor rows = t.rows(100, 2)) {
            float[] got = be.download(rows);
            assertThat(got).containsExactly(expect);
          }
        }
      }
    }
  }
}
