package org.sparktp.comm.nccl;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.util.Map;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Tag;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.cuda.CudaBackend;
import org.sparktp.backend.cuda.CudaProbe;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * Real NCCL on one GPU: every collective with one rank, the unique id round trip, and the failure paths (a group of
 * two whose second rank never comes: init times out; abort from another thread). Two ranks on one GPU are not
 * supported by NCCL, so multi-rank data paths are not run here.
 */
@Tag("gpu")
class NcclGpuTest {
  private CudaBackend gpu;
  private final Random rnd = new Random(99);

  @BeforeEach
  void setUp() {
    CudaProbe.Status st = CudaProbe.status();
    assumeTrue(st.ncclAvailable(), () -> "no GPU or no NCCL: " + st.backendReason() + " / " + st.ncclReason());
    gpu = new CudaBackend(Map.of(), 0);
  }

  @AfterEach
  void tearDown() {
    if (gpu != null) {
      gpu.close();
    }
  }

  private float[] random(int n) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      a[i] = (float) rnd.nextGaussian();
    }
    return a;
  }

  @Test
  void everyCollectiveWithOneRank() {
    NcclApi api = new JavacppNcclApi();
    byte[] id = NcclCommunicator.decodeId(NcclCommunicator.encodeId(api.uniqueId()));
    float[] a = random(1000);
    try (NcclCommunicator c = NcclCommunicator.connect(api, new CudaDeviceBuffers(0), id, 0, 1, 0, 30_000);
        Tensor t = gpu.upload(a, 0, 10, 100); Tensor r = gpu.upload(random(1000), 0, 10, 100);
        Tensor b = gpu.upload(a, 0, 10, 100, DType.BF16)) {
      c.allReduce(t);
      assertThat(gpu.download(t)).containsExactly(a);
      c.allGather(t, r, new int[] {1000});
      assertThat(gpu.download(r)).containsExactly(a);
      gpu.zero(r);
      c.reduceScatter(t, new int[] {1000}, r);
      assertThat(gpu.download(r)).containsExactly(a);
      gpu.zero(r);
      c.allToAll(t, new int[] {1000}, r, new int[] {1000});
      assertThat(gpu.download(r)).containsExactly(a);
      c.broadcast(t, 0);
      float[] before = gpu.download(b);
      c.allReduce(b); // bf16 buffers sum in bf16 (one rank: unchanged)
      assertThat(gpu.download(b)).containsExactly(before);
      assertThat(c.allGatherLong(Long.MIN_VALUE + 5)).containsExactly(Long.MIN_VALUE + 5);
      c.barrier();
      assertThat(c.stats().calls()).isEqualTo(8);
    }
  }

  @Test
  void aMissingPeerFailsInitAtTheDeadline() {
    NcclApi api = new JavacppNcclApi();
    long t0 = System.nanoTime();
    assertThatThrownBy(() -> NcclCommunicator.connect(api, new CudaDeviceBuffers(0), api.uniqueId(), 0, 2, 0, 3_000))
        .isInstanceOf(CommunicatorException.class)
        .hasMessageContaining("did not finish within 3000 ms (spark.tp.comm.timeout): not every rank joined");
    assertThat((System.nanoTime() - t0) / 1_000_000).isBetween(2_900L, 20_000L);
  }

  @Test
  void abortFromAnotherThreadStopsAWaitingInit() throws Exception {
    NcclApi api = new JavacppNcclApi();
    NcclCommunicator c = new NcclCommunicator(api, new CudaDeviceBuffers(0), api.uniqueId(), 0, 2, 0, 120_000);
    try {
      CompletableFuture<Void> killer = CompletableFuture.runAsync(() -> {
        try {
          Thread.sleep(500);
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
        }
        c.abort(new IllegalStateException("task killed"));
      });
      long t0 = System.nanoTime();
      assertThatThrownBy(c::awaitInit).isInstanceOf(CommunicatorException.class).hasMessageContaining("task killed");
      assertThat((System.nanoTime() - t0) / 1_000_000).isLessThan(20_000L);
      killer.get(20, TimeUnit.SECONDS);
      assertThat(c.aborted()).isTrue();
    } finally {
      c.close();
    }
  }
}
