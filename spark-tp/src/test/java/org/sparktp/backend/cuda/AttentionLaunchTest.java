package org.sparktp.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The attention kernels' launch worked out without a GPU ({@link AttentionLaunch}): replaying the grid the way the
 * kernels walk it (one block per token and KV head, the block's query heads in passes of at most
 * {@link AttentionLaunch#MAX_GROUP}) computes every (token, query head) exactly once, against its own sequence's keys;
 * the metadata layout; and the shape checks' messages.
 */
class AttentionLaunchTest {
  private final long seed = System.nanoTime();
  private final Random rnd = new Random(seed);

  /** Replays the grid: counts how often each (token, head) is written, and checks each block's key range. */
  private static int[][] replay(AttentionLaunch l, int heads, boolean causal, int[] past) {
    int[][] writes = new int[l.tokens()][heads];
    for (int t = 0; t < l.tokens(); t++) {
      int s = AttentionLaunch.sequenceOf(l.offsets(), t);
      assertThat(t).as("token %d in sequence %d", t, s).isBetween(l.offsets()[s], l.offsets()[s + 1] - 1);
      int i = t - l.offsets()[s];
      int keys = past != null ? past[s] + i + 1 : causal ? i + 1 : l.offsets()[s + 1] - l.offsets()[s];
      assertThat(keys).isPositive();
      for (int g = 0; g < l.kvHeads(); g++) {
        for (int[] pass : AttentionLaunch.group(l.kvOf(), g)) {
          assertThat(pass.length).isBetween(1, AttentionLaunch.MAX_GROUP);
          for (int h : pass) {
            assertThat(l.kvOf()[h]).isEqualTo(g);
            writes[t][h]++;
          }
        }
      }
    }
    return writes;
  }

  @Test
  void everyTokenAndQueryHeadIsComputedOnceWithGroupsLargerThanABlockTakes() {
    for (int trial = 0; trial < 50; trial++) {
      int nseq = 1 + rnd.nextInt(6);
      int[] offsets = new int[nseq + 1];
      for (int s = 0; s < nseq; s++) {
        offsets[s + 1] = offsets[s] + rnd.nextInt(5); // empty sequences too
      }
      int kvHeads = 1 + rnd.nextInt(4);
      int heads = kvHeads * (1 + rnd.nextInt(12)); // groups up to 12 > MAX_GROUP
      int[] kvOf = new int[heads];
      for (int h = 0; h < heads; h++) {
        kvOf[h] = rnd.nextInt(kvHeads);
      }
      int hd = 8;
      int cols = (heads + 2 * kvHeads) * hd;
      AttentionLaunch l = AttentionLaunch.prefill(offsets[nseq], cols, 0, heads * hd, (heads + kvHeads) * hd, kvOf,
          hd, offsets, offsets[nseq], heads * hd);
      boolean causal = rnd.nextBoolean();
      int[][] w = replay(l, heads, causal, null);
      for (int[] row : w) {
        assertThat(row).as("seed %d, kvOf %s, offsets %s", seed, Arrays.toString(kvOf), Arrays.toString(offsets))
            .containsOnly(1);
      }
      int[] past = new int[nseq];
      int[] cap = new int[nseq];
      for (int s = 0; s < nseq; s++) {
        past[s] = rnd.nextInt(9);
        cap[s] = past[s] + offsets[s + 1] - offsets[s] + rnd.nextInt(3);
      }
      AttentionLaunch d = AttentionLaunch.decode(offsets[nseq], heads * hd + 2 * kvHeads * hd, 0, heads * hd,
          kvHeads, kvOf, hd, offsets, cap, past, offsets[nseq], heads * hd);
      assertThat(d.kvHeads()).isEqualTo(kvHeads);
      for (int[] row : replay(d, heads, true, past)) {
        assertThat(row).containsOnly(1);
      }
      int[] meta = d.meta(past);
      assertThat(meta).hasSize(nseq + 1 + heads + nseq);
      assertThat(Arrays.copyOfRange(meta, nseq + 1, nseq + 1 + heads)).containsExactly(kvOf);
      assertThat(Arrays.copyOfRange(meta, nseq + 1 + heads, meta.length)).containsExactly(past);
    }
  }

  @Test
  void theCacheAddressesFollowTheMetadataOnAnEightByteBoundary() {
    assertThat(AttentionLaunch.alignedIntBytes(0)).isZero();
    assertThat(AttentionLaunch.alignedIntBytes(1)).isEqualTo(8);
    assertThat(AttentionLaunch.alignedIntBytes(2)).isEqualTo(8);
    assertThat(AttentionLaunch.alignedIntBytes(7)).isEqualTo(32);
  }

  @Test
  void badShapesAreRefusedWithWhatToChange() {
    int[] kvOf = {0, 0};
    assertThatThrownBy(() -> AttentionLaunch.prefill(4, 64, 0, 16, 24, kvOf, 512, new int[] {0, 4}, 4, 1024))
        .hasMessage("attention on the CUDA backend takes head sizes 1..256, got 512");
    assertThatThrownBy(() -> AttentionLaunch.prefill(4, 32, 0, 16, 24, kvOf, 8, new int[] {0, 3, 2}, 4, 16))
        .hasMessage("attention: offsets must not fall, got 3 then 2 at sequence 1");
    assertThatThrownBy(() -> AttentionLaunch.prefill(4, 32, 0, 16, 30, kvOf, 8, new int[] {0, 4}, 4, 16))
        .hasMessage("attention: K at column 16 and V at column 30 with 1 KV heads of 8 do not fit in 32 columns");
    assertThatThrownBy(() -> AttentionLaunch.prefill(4, 32, 0, 16, 24, kvOf, 8, new int[] {0, 5}, 5, 16))
        .hasMessage("attention: offsets cover 5 tokens, the batch has 4");
    assertThatThrownBy(() -> AttentionLaunch.decode(2, 32, 0, 16, 1, kvOf, 8, new int[] {0, 2}, new int[] {4},
        new int[] {3}, 2, 16)).hasMessage("cachedAttention: cache of sequence 0 holds 4 tokens, cannot take 2 after 3");
    assertThatThrownBy(() -> AttentionLaunch.decode(2, 32, 0, 16, 1, new int[] {0, 1}, 8, new int[] {0, 2},
        new int[] {4}, new int[] {0}, 2, 16)).hasMessage("cachedAttention: query head 1 reads KV head 1 of 1");
  }
}
