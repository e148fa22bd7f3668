package org.sparktp.backend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.tensor.DType;
import org.sparktp.tensor.HalfFloats;
import org.sparktp.tensor.Tensor;
import org.sparktp.testing.Rand;

/**
 * {@link Backend#gatherRows}: the generic default (run through a proxy whose only own code is the default method;
 * every other call goes to a CPU backend) and the CPU backend's fast path both give, for f32 and bf16 tables,
 * the table's rows widened to f32 (bf16: the f32 value rounded to nearest even, written out here) and zeros for
 * negative ids.
 */
class GatherRowsTest {
  final Rand rnd = new Rand();

  static Backend generic(CpuBackend cpu) {
    InvocationHandler h = (proxy, m, args) -> {
      if (m.getName().equals("gatherRows")) {
        return InvocationHandler.invokeDefault(proxy, m, args);
      }
      try {
        return m.invoke(cpu, args);
      } catch (InvocationTargetException e) {
        throw e.getCause();
      }
    };
    return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class}, h);
  }

  @Test
  void genericAndCpuGatherWidenRowsAndZeroOtherShardsIds() {
    int rows = 13;
    int d = 7;
    float[] t = rnd.floats(rows * d, 3);
    int[] ids = {3, -1, 12, 0, 3, -1};
    try (CpuBackend cpu = new CpuBackend()) {
      Backend gen = generic(cpu);
      for (DType dt : new DType[] {DType.F32, DType.BF16}) {
        try (Tensor f = cpu.upload(t, rows, d); Tensor table = cpu.convert(f, dt)) {
          for (Backend be : new Backend[] {cpu, gen}) {
            try (Tensor out = cpu.upload(rnd.floats(ids.length * d, 1), ids.length, d)) { // not zeros before
              be.gatherRows(table, ids, out);
              float[] y = cpu.download(out);
              for (int r = 0; r < ids.length; r++) {
                for (int c = 0; c < d; c++) {
                  float want = ids[r] < 0 ? 0f : t[ids[r] * d + c];
                  if (dt == DType.BF16) {
                    int bits = Float.floatToRawIntBits(want);
                    want = Float.intBitsToFloat(((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) << 16);
                  }
                  assertThat(y[r * d + c]).as("%s table, %s, row %d col %d", dt, be == cpu ? "cpu" : "generic", r, c)
                      .isEqualTo(want);
                }
              }
            }
          }
          try (Tensor bad = cpu.allocate(ids.length, d + 1)) {
            assertThatThrownBy(() -> gen.gatherRows(table, ids, bad)).hasMessageContaining(
                "gatherRows: the output [6, 8] f32 cannot hold 6 f32 rows of width 7");
          }
        }
      }
      assertThat(HalfFloats.bf16ToFloat(HalfFloats.floatToBf16(1f + 0x1p-8f))).isEqualTo(1f); // the tie rule used
    }
  }
}
