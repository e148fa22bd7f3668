package org.sparktp.comm.tcp;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparktp.backend.Tensor;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import org.sparktp.testing.Rand;

/**
 * The one-shot all-reduce of small payloads ({@link TcpOptions#withOneShotBytes}: every rank sends its buffer to all
 * and sums locally in rank order) over TCP and shared memory, and the in-process communicator's, for p = 2, 3, 4 and
 * sizes around the threshold (4096 bytes here: 1023, 1024 elements go one-shot, 1025 and 5000 take the ring or the
 * rounds), in f32 and bf16 (reduced in f32, rounded once). Against a float64 sum of fresh random inputs: f32 within
 * 1e-5 absolute (inputs in [-1, 1)), bf16 within one bf16 rounding of the exact sum (2^-8 relative) plus 1e-6; every
 * rank bitwise identical; the bytes each rank sends show which algorithm ran ({@code (p-1) x} the buffer in one shot).
 */
class OneShotAllReduceTest {
  static final int THRESHOLD = 4096;
  @AfterEach
  void noThreadsLeft() throws InterruptedException {
    TcpGroup.assertNoCommThreads();
  }

  @ParameterizedTest(name = "p={0} {1}")
  @CsvSource({"2,tcp", "3,tcp", "4,tcp", "2,shm", "3,shm", "4,shm", "2,local", "3,local", "4,local"})
  void oneShotAllReduceEqualsFloat64Sum(int p, String transport) throws Exception {
    Rand rnd = new Rand();
    for (int n : new int[] {3, 1023, 1024, 1025, 5000}) {
      for (DType dt : new DType[] {DType.F32, DType.BF16}) {
        float[][] in = new float[p][];
        for (int r = 0; r < p; r++) {
          in[r] = rnd.floats(n, 1);
          if (dt == DType.BF16) {
            for (int i = 0; i < n; i++) {
              in[r][i] = HalfFloats.bf16ToFloat(HalfFloats.floatToBf16(in[r][i]));
            }
          }
        }
        List<float[]> got = run(p, transport, in, dt);
        String what = rnd + " p=" + p + " " + transport + " n=" + n + " " + dt.id();
        for (int i = 0; i < n; i++) {
          double want = 0;
          for (int r = 0; r < p; r++) {
            want += in[r][i];
          }
          double tol = dt == DType.F32 ? 1e-5 : Math.abs(want) / 256 + 1e-6;
          assertThat(Math.abs(got.get(0)[i] - want)).as("%s element %d", what, i).isLessThanOrEqualTo(tol);
        }
        for (int r = 1; r < p; r++) {
          assertThat(got.get(r)).as("%s rank %d equals rank 0", what, r).isEqualTo(got.get(0));
        }
        if (!transport.equals("local") && dt == DType.F32 && p > 2) {
          long sent = (long) got.get(p)[0];
          long bytes = 4L * n;
          if (bytes <= THRESHOLD) {
            assertThat(sent).as("%s: one shot sends the buffer to each peer", what).isEqualTo((p - 1) * bytes);
          } else {
            assertThat(sent).as("%s: the ring sends 2(p-1)/p of the buffer", what).isLessThan((p - 1) * bytes);
          }
        }
      }
    }
  }

  /** Runs one all-reduce per rank; returns each rank's result, then (last) rank 0's bytes sent. */
  private List<float[]> run(int p, String transport, float[][] in, DType dt) throws Exception {
    List<float[]> out = new ArrayList<>();
    long[] sent = new long[1];
    if (transport.equals("local")) {
      List<float[]> r = LocalCommunicator.run(p, 20_000, rank -> comm -> reduce(comm, in[rank], dt, sent));
      out.addAll(r);
    } else {
      TcpOptions o = TcpGroup.options().withShm(transport.equals("shm")).withOneShotBytes(THRESHOLD);
      try (TcpGroup g = TcpGroup.connect(p, o)) {
        assertThat(g.comms.get(0).transport()).isEqualTo(transport);
        out.addAll(g.run(comm -> reduce(comm, in[comm.rank()], dt, sent)));
      }
    }
    out.add(new float[] {sent[0]});
    return out;
  }

  private static float[] reduce(org.sparktp.comm.Communicator comm, float[] mine, DType dt, long[] sent) {
    try (CpuBackend be = new CpuBackend(); Tensor f = be.upload(mine, 0, 1, mine.length);
        Tensor t = dt == DType.F32 ? be.upload(mine, 0, 1, mine.length) : be.convert(f, dt)) {
      long before = comm.stats().bytesSent();
      comm.allReduce(t);
      if (comm.rank() == 0) {
        sent[0] = comm.stats().bytesSent() - before;
      }
      if (dt == DType.F32) {
        return be.download(t);
      }
      try (Tensor w = be.convert(t, DType.F32)) {
        return be.download(w);
      }
    }
  }
}
