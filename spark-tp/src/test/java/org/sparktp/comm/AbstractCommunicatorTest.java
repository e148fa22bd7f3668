package org.sparktp.comm;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * What the base class does once for every communicator: argument checks, the one-rank shortcut, half-precision
 * reductions widened to f32, and the stats of each call. A recording transport shows what reaches it.
 */
class AbstractCommunicatorTest {
  private CpuBackend cpu;
  private final Random rnd = new Random();

  @BeforeEach
  void open() {
    cpu = new CpuBackend();
  }

  @AfterEach
  void close() {
    cpu.close(); // fails on a leaked tensor
  }

  /** Records each call that reaches the transport and reports 10 bytes sent, 20 received per call. */
  static final class Recording extends AbstractCommunicator {
    final List<String> calls = new ArrayList<>();

    Recording(int rank, int size) {
      super(rank, size, 1_000);
    }

    private void called(String what) {
      calls.add(what);
      traffic(10, 20);
    }

    @Override
    protected void doAllReduce(Tensor buf) {
      called("allReduce " + buf.dtype().id());
    }

    @Override
    protected void doAllGather(Tensor send, Tensor recv, int[] counts, long[] offsets) {
      called("allGather " + java.util.Arrays.toString(offsets));
    }

    @Override
    protected void doReduceScatter(Tensor send, int[] counts, long[] offsets, Tensor recv) {
      called("reduceScatter " + send.dtype().id() + " " + java.util.Arrays.toString(offsets));
    }

    @Override
    protected void doAllToAll(Tensor send, int[] sendCounts, long[] sendOffsets, Tensor recv, int[] recvCounts,
        long[] recvOffsets) {
      called("allToAll " + java.util.Arrays.toString(sendOffsets) + " " + java.util.Arrays.toString(recvOffsets));
    }

    @Override
    protected void doBroadcast(Tensor buf, int root) {
      called("broadcast " + root);
    }

    @Override
    protected long[] doAllGatherLong(long value) {
      called("allGatherLong");
      return new long[] {value, value};
    }

    @Override
    protected void doBarrier() {
      called("barrier");
    }

    @Override
    public void abort(Throwable cause) {}

    @Override
    public void close() {}
  }

  private float[] random(int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  @Test
  void aOneRankGroupCommunicatesNothingAndCopiesOutOfPlaceBlocks() {
    Recording c = new Recording(0, 1);
    float[] data = random(6);
    try (Tensor send = cpu.upload(data, 2, 3); Tensor recv = cpu.allocate(2, 3)) {
      c.allReduce(send);
      c.broadcast(send, 0);
      c.barrier();
      assertThat(c.allGatherLong(-7)).containsExactly(-7);
      c.allGather(send, recv, new int[] {6});
      assertThat(cpu.download(recv)).containsExactly(data);
      cpu.zero(recv);
      c.reduceScatter(send, new int[] {4}, recv);
      assertThat(cpu.download(recv)).containsExactly(data[0], data[1], data[2], data[3], 0, 0);
      cpu.zero(recv);
      c.allToAll(send, new int[] {5}, recv, new int[] {5});
      assertThat(cpu.download(recv)).containsExactly(data[0], data[1], data[2], data[3], data[4], 0);
    }
    assertThat(c.calls).isEmpty();
    assertThat(c.stats().calls()).isZero();
  }

  @Test
  void argumentsAreCheckedBeforeTheTransportWithTheSameErrors() {
    Recording c = new Recording(1, 3);
    try (Tensor send = cpu.upload(random(6), 1, 6); Tensor recv = cpu.allocate(1, 6);
        Tensor half = cpu.allocate(1, 6, DType.BF16)) {
      assertThatThrownBy(() -> c.allGather(send, recv, new int[] {2, 2}))
          .hasMessage("allGather: expected 3 counts (one per rank), got 2");
      assertThatThrownBy(() -> c.allGather(send, recv, new int[] {3, 3, 3}))
          .hasMessage("allGather: receive buffer [1, 6] holds 6 elements, needs 9");
      assertThatThrownBy(() -> c.reduceScatter(send, new int[] {1, 7, 1}, recv))
          .hasMessage("reduceScatter: send buffer [1, 6] holds 6 elements, needs 9");
      assertThatThrownBy(() -> c.reduceScatter(send, new int[] {1, -1, 1}, recv))
          .hasMessage("Element counts must be non-negative, got -1");
      assertThatThrownBy(() -> c.allToAll(send, new int[] {1, 2, 3}, recv, new int[] {3, 0, 2}))
          .hasMessage("allToAll: rank 1 sends 2 elements to itself but expects 0");
      assertThatThrownBy(() -> c.allGather(send, half, new int[] {2, 2, 2}))
          .hasMessage("allGather: send and receive tensors differ in dtype (f32 vs bf16)");
      assertThatThrownBy(() -> c.broadcast(send, 3)).hasMessage("broadcast: root 3 outside [0, 3)");
    }
    assertThat(c.calls).isEmpty();
    assertThatThrownBy(() -> new Recording(2, 2)).hasMessage("Rank 2 outside a group of 2");
  }

  @Test
  void eachCollectiveReachesTheTransportOnceWithOffsetsAndIsCountedOnce() {
    Recording c = new Recording(0, 2);
    try (Tensor send = cpu.upload(random(6), 1, 6); Tensor recv = cpu.allocate(1, 6)) {
      c.allReduce(send);
      c.allGather(send, recv, new int[] {2, 4});
      c.reduceScatter(send, new int[] {5, 1}, recv);
      c.allToAll(send, new int[] {1, 5}, recv, new int[] {1, 3});
      c.broadcast(send, 1);
      assertThat(c.allGatherLong(4)).containsExactly(4, 4);
      c.barrier();
    }
    assertThat(c.calls).containsExactly("allReduce f32", "allGather [0, 2, 6]", "reduceScatter f32 [0, 5, 6]",
        "allToAll [0, 1, 6] [0, 1, 4]", "broadcast 1", "allGatherLong", "barrier");
    assertThat(c.stats().calls()).isEqualTo(7);
    assertThat(c.stats().bytesSent()).isEqualTo(70);
    assertThat(c.stats().bytesReceived()).isEqualTo(140);
  }

  @Test
  void halfPrecisionReductionsReachTheTransportWidenedToF32() {
    Recording c = new Recording(0, 2);
    try (Tensor f = cpu.upload(random(4), 1, 4); Tensor h = cpu.convert(f, DType.BF16);
        Tensor r = cpu.allocate(1, 2, DType.BF16)) {
      c.allReduce(h);
      c.reduceScatter(h, new int[] {2, 2}, r);
      c.allGather(h, h, new int[] {2, 2}); // moves elements: stays bf16 (in place)
    }
    assertThat(c.calls).containsExactly("allReduce f32", "reduceScatter f32 [0, 2, 4]", "allGather [0, 2, 4]");
    assertThat(c.stats().calls()).isEqualTo(3);
  }
}
