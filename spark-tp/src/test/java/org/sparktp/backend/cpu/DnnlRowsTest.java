package org.sparktp.backend.cpu;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import org.bytedeco.javacpp.FloatPointer;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Tensor;
import org.sparktp.testing.Rand;
import org.sparktp.testing.Reference;

/**
 * oneDNN's row ops ({@link DnnlRows}): layer norm and RMSNorm with and without weight and bias, through the backend
 * and in Java (the fallback), at 1 and 2 threads, rows of 531 and 4096 (a width past 512); attention's softmax and the
 * prefill attention built on it
 * ({@link CpuTransformer#attentionBlocks}) against float64 math written plainly, on fresh random data: rows with
 * {@code -inf} entries (the mask) and odd lengths; prefill attention with sequences of 600 tokens (blocks past 512),
 * 17, 0 and 128 tokens (padding to 16 and none), GQA 3:1, causal and not, at 1 and 2 threads, with every head's block
 * in one buffer and with one head at a time (a budget of one block); the Java path on the same data. Tolerance 1e-5
 * absolute on outputs of order one. Every oneDNN handle is destroyed by {@code close}, also after primitives were
 * evicted from the cache. Skipped where oneDNN does not load.
 */
class DnnlRowsTest {
  @BeforeEach
  void needsOneDnn() {
    assumeTrue(Dnnl.loadError() == null, () -> "oneDNN does not load here: " + Dnnl.loadError());
  }

  @Test
  void softmaxOfRowsWithMaskedEntriesMatchesFloat64() {
    Rand rnd = new Rand();
    int rows = 37;
    int len = 531;
    float[] x = rnd.floats(rows * len, 4);
    for (int r = 0; r < rows; r++) {
      for (int j = r + 5; j < len; j += 3) {
        x[r * len + j] = Float.NEGATIVE_INFINITY;
      }
    }
    double[] want = new double[rows * len];
    for (int r = 0; r < rows; r++) {
      double max = Double.NEGATIVE_INFINITY;
      for (int j = 0; j < len; j++) {
        max = Math.max(max, x[r * len + j]);
      }
      double sum = 0;
      for (int j = 0; j < len; j++) {
        sum += Math.exp(x[r * len + j] - max);
      }
      for (int j = 0; j < len; j++) {
        want[r * len + j] = Math.exp(x[r * len + j] - max) / sum;
      }
    }
    try (Dnnl d = new Dnnl(); DnnlRows sm = new DnnlRows(d); FloatPointer p = new FloatPointer(x)) {
      sm.softmax(p, rows, len);
      float[] got = new float[rows * len];
      p.get(got);
      ParallelKernelsTest.assertClose(got, want, 1e-6, rnd.toString());
      sm.close();
      assertThat(d.liveHandles()).as("oneDNN handles left after close").isZero();
    }
  }

  @Test
  void primitivesBeyondTheCacheAreDestroyedAndAClosedSoftmaxSaysSo() {
    try (Dnnl d = new Dnnl(); FloatPointer p = new FloatPointer(64 * 64)) {
      DnnlRows sm = new DnnlRows(d);
      for (int len = 1; len <= DnnlRows.MAX_CACHED + 5; len++) {
        sm.softmax(p, 2, len);
      }
      assertThat(sm.cached()).isEqualTo(DnnlRows.MAX_CACHED);
      assertThat(d.liveHandles()).as("handles of the cached primitives only").isPositive();
      sm.close();
      sm.close();
      assertThat(d.liveHandles()).as("oneDNN handles left after close").isZero();
      assertThatThrownBy(() -> sm.softmax(p, 2, 3)).isInstanceOf(IllegalStateException.class)
          .hasMessage("oneDNN's row ops were used after their backend was closed");
    }
  }

  @ParameterizedTest(name = "threads={0}")
  @ValueSource(ints = {1, 2})
  void layerNormAndRmsNormMatchFloat64OnOneDnnAndInJava(int threads) {
    Rand rnd = new Rand();
    for (int[] shape : new int[][] {{37, 531}, {5, 4096}}) {
      int rows = shape[0];
      int cols = shape[1];
      float[] x = rnd.floats(rows * cols, 3);
      for (int i = 0; i < x.length; i++) {
        x[i] += 0.5f; // a mean away from zero
      }
      float[] gamma = rnd.floats(cols, 1);
      float[] beta = rnd.floats(cols, 1);
      float eps = 1e-5f;
      for (int variant = 0; variant < 4; variant++) {
        boolean withGamma = (variant & 1) == 0;
        boolean withBeta = (variant & 2) == 0;
        double[] ln = Reference.layerNorm(x, rows, cols, withGamma ? gamma : null, withBeta ? beta : null, eps);
        double[] rms = Reference.rmsNorm(x, rows, cols, gamma, eps);
        String what = rnd + " [" + rows + ", " + cols + "] gamma " + withGamma + " beta " + withBeta + " threads "
            + threads;
        try (CpuBackend be = new CpuBackend(threads); Tensor t = be.upload(x, 0, rows, cols);
            Tensor g = be.upload(gamma, 0, 1, cols); Tensor b = be.upload(beta, 0, 1, cols)) {
          be.layerNorm(t, withGamma ? g : null, withBeta ? b : null, eps);
          ParallelKernelsTest.assertClose(be.download(t), ln, 1e-5, what + " layer norm");
          CpuTensor ct = CpuBackend.cpu(t);
          ct.buffer().put(x);
          Elementwise.layerNorm(ct.buffer(), rows, cols, withGamma ? gamma : null, withBeta ? beta : null, eps);
          ParallelKernelsTest.assertClose(be.download(t), ln, 1e-5, what + " layer norm (Java)");
          if (withGamma) {
            ct.buffer().put(x);
            be.rmsNorm(t, g, eps);
            ParallelKernelsTest.assertClose(be.download(t), rms, 1e-5, what + " rms norm");
            ct.buffer().put(x);
            CpuTransformer.rmsNorm(be.pool(), ct, gamma, eps);
            ParallelKernelsTest.assertClose(be.download(t), rms, 1e-5, what + " rms norm (Java)");
          }
        }
      }
    }
  }

  @Test
  void aNormWeightOfTheWrongLengthIsRejectedWithItsName() {
    try (CpuBackend be = new CpuBackend(1); Tensor t = be.upload(new float[6], 0, 2, 3);
        Tensor g = be.upload(new float[4], 0, 1, 4)) {
      assertThatThrownBy(() -> be.layerNorm(t, g, null, 1e-5f)).isInstanceOf(IllegalArgumentException.class)
          .hasMessage("layer_norm weight has 4 f32 elements, expected 3 f32");
      assertThatThrownBy(() -> be.rmsNorm(t, g, 1e-5f)).isInstanceOf(IllegalArgumentException.class)
          .hasMessage("rms_norm weight has 4 f32 elements, expected 3 f32");
    }
  }

  @ParameterizedTest(name = "threads={0}")
  @ValueSource(ints = {1, 2})
  void prefillAttentionOnOneDnnMatchesFloat64AndTheJavaPath(int threads) {
    Rand rnd = new Rand();
    int heads = 6;
    int kv = 2;
    int hd = 64;
    int[] offsets = {0, 600, 617, 617, 745}; // lengths 600, 17, 0, 128
    int maxN = 600;
    int tokens = offsets[offsets.length - 1];
    int qCol = 5;
    int kCol = qCol + heads * hd;
    int vCol = kCol + kv * hd;
    int cols = vCol + kv * hd + 3;
    int[] kvOf = ParallelKernelsTest.kvOf(heads, kv);
    float scale = (float) (1 / Math.sqrt(hd));
    for (boolean causal : new boolean[] {true, false}) {
      float[] x = rnd.floats(tokens * cols, 1);
      double[] want = ParallelKernelsTest.prefillReference(x, cols, qCol, kCol, vCol, kvOf, hd, offsets, causal,
          scale);
      String what = rnd + " causal " + causal + " threads " + threads;
      try (CpuBackend be = new CpuBackend(threads); Dnnl d = new Dnnl(); DnnlRows sm = new DnnlRows(d);
          Tensor t = be.upload(x, 0, tokens, cols); Tensor out = be.empty(tokens, heads * hd)) {
        CpuTensor ct = CpuBackend.cpu(t);
        CpuTensor co = CpuBackend.cpu(out);
        for (long budget : new long[] {CpuTransformer.BLOCK_BUDGET, 1}) {
          be.zero(out);
          CpuTransformer.attentionBlocks(be.pool(), sm, ct, qCol, kCol, vCol, kvOf, hd, offsets, causal, scale, co,
              maxN, budget);
          ParallelKernelsTest.assertClose(be.download(out), want, 1e-5, what + " budget " + budget);
        }
        be.zero(out);
        CpuTransformer.attention(be.pool(), null, ct, qCol, kCol, vCol, kvOf, hd, offsets, causal, scale, co);
        ParallelKernelsTest.assertClose(be.download(out), want, 1e-5, what + " (Java softmax)");
        be.zero(out);
        be.attention(t, qCol, kCol, vCol, kvOf, hd, offsets, causal, scale, out);
        ParallelKernelsTest.assertClose(be.download(out), want, 1e-5, what + " (the backend)");
        sm.close();
        assertThat(d.liveHandles()).as("oneDNN handles left after close").isZero();
      }
    }
  }
}
