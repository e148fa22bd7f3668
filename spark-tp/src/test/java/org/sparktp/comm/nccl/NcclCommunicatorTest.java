package org.sparktp.comm.nccl;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.List;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.backend.cpu.CpuTensor;
import org.sparktp.comm.CommunicatorException;

/** The NCCL communicator's state machine on a CPU, with a scripted NCCL ({@link FakeNccl}). */
class NcclCommunicatorTest {
  private CpuBackend cpu;
  private FakeNccl nccl;
  private FakeNccl.HostBuffers buffers;
  private final byte[] id = new FakeNccl().uniqueId();

  @BeforeEach
  void setUp() {
    cpu = new CpuBackend();
    nccl = new FakeNccl();
    buffers = new FakeNccl.HostBuffers();
  }

  @AfterEach
  void tearDown() {
    cpu.close(); // fails the test on a leaked tensor
  }

  private static float[] random(int n, long seed) {
    Random r = new Random(seed);
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) r.nextGaussian();
    }
    return a;
  }

  @Test
  void successPathInitsRunsCollectivesAndFinalizes() {
    float[] data = random(6, 1);
    try (NcclCommunicator c = NcclCommunicator.connect(nccl, buffers, id, 0, 1, 0, 5_000);
        CpuTensor send = cpu.upload(data, 0, 2, 3); CpuTensor recv = cpu.allocate(2, 3)) {
      assertThat(nccl.calls).containsExactly("init 1 0");
      c.allReduce(send);
      c.allGather(send, recv, new int[] {6});
      assertThat(cpu.download(recv)).containsExactly(data);
      assertThat(c.allGatherLong(-1234567890123L)).containsExactly(-1234567890123L);
      assertThat(c.stats().calls()).isEqualTo(3);
      assertThat(nccl.calls.get(1)).isEqualTo("allReduce " + send.address() + " " + send.address() + " 6 7");
      assertThat(nccl.calls.get(2)).isEqualTo("allGather " + send.address() + " " + recv.address() + " 6 7");
    }
    assertThat(nccl.finalizes.get()).isEqualTo(1);
    assertThat(nccl.destroys.get()).isEqualTo(1);
    assertThat(nccl.aborts.get()).isZero();
    assertThat(nccl.liveEvents.get()).isZero();
    assertThat(buffers.closes.get()).isEqualTo(1);
  }

  @Test
  void initThatNeverFinishesAbortsAtTheDeadline() {
    nccl.initPolls = -1; // a peer never joins
    long t0 = System.nanoTime();
    assertThatThrownBy(() -> NcclCommunicator.connect(nccl, buffers, id, 0, 2, 0, 300))
        .isInstanceOf(CommunicatorException.class)
        .hasMessageContaining("NCCL init on rank 0 of 2 (device 0) failed: did not finish within 300 ms"
            + " (spark.tp.comm.timeout): not every rank joined");
    long ms = (System.nanoTime() - t0) / 1_000_000;
    assertThat(ms).isBetween(250L, 5_000L);
    assertThat(nccl.aborts.get()).isEqualTo(1);
    assertThat(nccl.finalizes.get()).isZero();
    assertThat(buffers.closes.get()).isEqualTo(1);
  }

  @Test
  void asyncErrorDuringACollectiveFailsAbortsAndRejectsLaterCalls() {
    nccl.eventPolls = -1; // the collective never completes: a peer died
    nccl.asyncErrorAfter = 3;
    NcclCommunicator c = NcclCommunicator.connect(nccl, buffers, id, 1, 2, 0, 30_000);
    try (CpuTensor buf = cpu.upload(random(4, 2), 0, 1, 4)) {
      assertThatThrownBy(() -> c.allReduce(buf))
          .isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("NCCL allReduce on rank 1 of 2 (device 0) failed: NCCL reports remote process exited"
              + " or there was a network error (ncclResult 6)");
      assertThat(nccl.aborts.get()).isEqualTo(1);
      assertThatThrownBy(() -> c.barrier())
          .isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("the communicator was aborted");
    }
    c.close();
    c.close();
    assertThat(nccl.aborts.get()).isEqualTo(1);
    assertThat(nccl.finalizes.get()).isZero();
    assertThat(nccl.liveEvents.get()).isZero();
    assertThat(buffers.closes.get()).isEqualTo(1);
  }

  @Test
  void collectiveThatHangsFailsWithinTheTimeout() {
    nccl.eventPolls = -1;
    NcclCommunicator c = NcclCommunicator.connect(nccl, buffers, id, 0, 2, 0, 400);
    try (CpuTensor buf = cpu.upload(random(4, 3), 0, 1, 4)) {
      long t0 = System.nanoTime();
      assertThatThrownBy(() -> c.broadcast(buf, 1))
          .isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("NCCL broadcast on rank 0 of 2 (device 0) failed: did not finish within 400 ms"
              + " (spark.tp.comm.timeout): a peer did not take part");
      assertThat((System.nanoTime() - t0) / 1_000_000).isBetween(350L, 5_000L);
    } finally {
      c.close();
    }
    assertThat(nccl.aborts.get()).isEqualTo(1);
  }

  @Test
  void abortFromAnotherThreadUnblocksAWaitingCollective() throws Exception {
    nccl.eventPolls = -1;
    NcclCommunicator c = NcclCommunicator.connect(nccl, buffers, id, 0, 2, 0, 60_000);
    try (CpuTensor buf = cpu.upload(random(8, 4), 0, 2, 4)) {
      CompletableFuture<Void> killer = CompletableFuture.runAsync(() -> {
        try {
          Thread.sleep(150);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
        c.abort(new IllegalStateException("task killed by Spark"));
      });
      long t0 = System.nanoTime();
      assertThatThrownBy(() -> c.allReduce(buf))
          .isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("was aborted: task killed by Spark");
      assertThat((System.nanoTime() - t0) / 1_000_000).isLessThan(5_000L);
      killer.get(5, TimeUnit.SECONDS);
      c.abort(new IllegalStateException("again")); // harmless
    } finally {
      c.close();
    }
    assertThat(nccl.aborts.get()).isEqualTo(1);
    assertThat(nccl.finalizes.get()).isZero();
  }

  @Test
  void abortFromAnotherThreadUnblocksAWaitingInit() throws Exception {
    nccl.initPolls = -1;
    NcclCommunicator c = new NcclCommunicator(nccl, buffers, id, 0, 2, 0, 60_000);
    try {
      assertThatThrownBy(() -> c.barrier()).hasMessageContaining("init has not finished");
      CompletableFuture<Void> killer = CompletableFuture.runAsync(() -> {
        try {
          Thread.sleep(150);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
        c.abort(new IllegalStateException("stage cancelled"));
      });
      long t0 = System.nanoTime();
      assertThatThrownBy(c::awaitInit)
          .isInstanceOf(CommunicatorException.class)
          .hasMessageContaining("NCCL init on rank 0 of 2 (device 0) was aborted: stage cancelled");
      assertThat((System.nanoTime() - t0) / 1_000_000).isLessThan(5_000L);
      killer.get(5, TimeUnit.SECONDS);
    } finally {
      c.close();
    }
    assertThat(nccl.aborts.get()).isEqualTo(1);
    assertThat(nccl.finalizes.get()).isZero();
    assertThat(buffers.closes.get()).isEqualTo(1);
  }

  @Test
  void unevenCountsBecomeGroupsOfBroadcastsReducesAndSendRecvs() {
    NcclCommunicator c = NcclCommunicator.connect(nccl, buffers, id, 1, 3, 0, 5_000);
    try (CpuTensor send = cpu.upload(random(6, 5), 0, 1, 6); CpuTensor recv = cpu.allocate(1, 6)) {
      long s = send.address();
      long r = recv.address();
      nccl.calls.clear();
      c.allGather(send, recv, new int[] {2, 3, 1});
      assertThat(nccl.calls).containsExactly("groupStart",
          "broadcast " + s + " " + r + " 2 7 root 0",
          "broadcast " + s + " " + (r + 8) + " 3 7 root 1",
          "broadcast " + s + " " + (r + 20) + " 1 7 root 2",
          "groupEnd");
      nccl.calls.clear();
      c.reduceScatter(send, new int[] {2, 0, 4}, recv);
      // rank 1's count is 0: no reduce rooted at 1; non-roots pass their own block as the (unused) receive buffer
      assertThat(nccl.calls).containsExactly("groupStart",
          "reduce " + s + " " + s + " 2 7 root 0",
          "reduce " + (s + 8) + " " + (s + 8) + " 4 7 root 2",
          "groupEnd");
      nccl.calls.clear();
      // rank 1 receives from itself what it sends itself (2), and nothing from rank 2: no recv from 2
      c.allToAll(send, new int[] {1, 2, 3}, recv, new int[] {3, 2, 0});
      assertThat(nccl.calls).containsExactly("groupStart",
          "send " + s + " 1 to 0", "recv " + r + " 3 from 0",
          "send " + (s + 4) + " 2 to 1", "recv " + (r + 12) + " 2 from 1",
          "send " + (s + 12) + " 3 to 2",
          "groupEnd");
      nccl.calls.clear();
      assertThatThrownBy(() -> c.allToAll(send, new int[] {1, 2, 3}, recv, new int[] {3, 0, 2}))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("allToAll: rank 1 sends 2 elements to itself but expects 0");
      assertThat(nccl.calls).isEmpty();
      nccl.calls.clear();
      c.allGather(send, recv, new int[] {2, 2, 2});
      assertThat(nccl.calls).containsExactly("allGather " + s + " " + r + " 2 7");
      assertThatThrownBy(() -> c.allGather(send, recv, new int[] {2, 2}))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("allGather: expected 3 counts (one per rank), got 2");
      assertThatThrownBy(() -> c.allGather(send, recv, new int[] {3, 3, 3}))
          .isInstanceOf(IllegalArgumentException.class)
          .hasMessage("allGather: receive buffer [1, 6] holds 6 elements, needs 9");
    } finally {
      c.close();
    }
    assertThat(nccl.liveEvents.get()).isZero();
  }

  @Test
  void uniqueIdRoundTripsThroughBase64AndBadIdsFailClearly() {
    byte[] raw = new FakeNccl().uniqueId();
    assertThat(NcclCommunicator.decodeId(NcclCommunicator.encodeId(raw))).containsExactly(raw);
    assertThatThrownBy(() -> NcclCommunicator.decodeId("not base64!"))
        .hasMessageContaining("Rank 0 sent an NCCL unique id that is not Base64");
    assertThatThrownBy(() -> NcclCommunicator.decodeId(NcclCommunicator.encodeId(new byte[5])))
        .hasMessage("Rank 0 sent an NCCL unique id of 5 bytes, expected 128");
    assertThatThrownBy(() -> NcclCommunicator.connect(nccl, buffers, new byte[3], 0, 1, 0, 1000))
        .hasMessage("An ncclUniqueId has 128 bytes, got 3");
    assertThat(List.of(nccl.calls.toArray())).isEmpty();
  }
}
