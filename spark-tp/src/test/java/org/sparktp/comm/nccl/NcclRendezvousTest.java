package org.sparktp.comm.nccl;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The NCCL rendezvous of a barrier stage without Spark or a GPU: every task's one all-gather message, each group
 * taking its own rank 0's unique id (two groups of three ranks in one stage), the communicator initialized with
 * that id through a scripted NCCL; two ranks of a group on one GPU and malformed messages refused with what to
 * change.
 */
class NcclRendezvousTest {
  private final long seed = System.nanoTime();

  @Test
  void eachGroupTakesItsRankZerosIdThroughTheStagesAllGather() {
    int groups = 2;
    int tp = 3;
    Random rnd = new Random(seed);
    byte[][] ids = new byte[groups][NcclApi.UNIQUE_ID_BYTES];
    String[] all = new String[groups * tp];
    for (int g = 0; g < groups; g++) {
      rnd.nextBytes(ids[g]);
      for (int r = 0; r < tp; r++) {
        all[g * tp + r] = NcclRendezvous.message(r == 0 ? ids[g] : null, "host" + g, "GPU-" + g + "-" + r);
      }
    }
    for (int g = 0; g < groups; g++) {
      for (int r = 0; r < tp; r++) {
        byte[] got = NcclRendezvous.groupId(all, g, tp);
        assertThat(got).as("group %d rank %d (seed %d)", g, r, seed).containsExactly(ids[g]);
        FakeNccl nccl = new FakeNccl();
        try (NcclCommunicator c = NcclCommunicator.connect(nccl, new FakeNccl.HostBuffers(), got, r, tp, r, 5_000)) {
          assertThat(nccl.calls.get(0)).isEqualTo("init " + tp + " " + r);
          assertThat(nccl.initId).containsExactly(ids[g]);
        }
      }
    }
  }

  @Test
  void twoRanksOfAGroupOnOneGpuAndBadMessagesAreRefused() {
    byte[] id = new byte[NcclApi.UNIQUE_ID_BYTES];
    String[] dup = {NcclRendezvous.message(id, "h", "GPU-a"), NcclRendezvous.message(null, "h", "GPU-a")};
    assertThatThrownBy(() -> NcclRendezvous.groupId(dup, 0, 2))
        .hasMessageStartingWith("Ranks 0 and 1 of a tensor-parallel group got the same GPU (h/GPU-a)");
    String[] bad = {NcclRendezvous.message(id, "h", "GPU-a"), "hello"};
    assertThatThrownBy(() -> NcclRendezvous.groupId(bad, 0, 2))
        .hasMessage("Rank 1 of group 0 sent 'hello', not an NCCL rendezvous message (id;host/gpu)");
    assertThatThrownBy(() -> NcclRendezvous.groupId(bad, 1, 2))
        .hasMessageStartingWith("The barrier stage gathered 2 messages: group 1 of 2 ranks is not among them");
    String[] noId = {NcclRendezvous.message(null, "h", "GPU-a"), NcclRendezvous.message(null, "h", "GPU-b")};
    assertThatThrownBy(() -> NcclRendezvous.groupId(noId, 0, 2))
        .hasMessage("Rank 0 sent an NCCL unique id of 0 bytes, expected 128");
  }
}
