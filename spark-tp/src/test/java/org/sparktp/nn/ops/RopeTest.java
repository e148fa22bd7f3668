package org.sparktp.nn.ops;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import org.junit.jupiter.api.Test;
import org.sparktp.backend.Backend;
import org.sparktp.backend.TransformerMath;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.backend.Tensor;
import org.sparktp.testing.HfFixtures;

/**
 * Rotary embeddings against HF's float64 references (hf/rope_reference.json: no scaling, linear, llama3
 * with all three frequency bands): the frequencies, and the rotation through the CPU backend and the
 * generic implementation every backend inherits.
 */
class RopeTest {
  @Test
  void frequenciesAndRotationsMatchHuggingFace() {
    for (HfFixtures.RopeCase c : HfFixtures.rope()) {
      JsonNode s = c.ropeScaling();
      Rope rope = s == null || s.isNull() ? Rope.plain(c.headDim(), c.ropeTheta())
          : s.get("rope_type").asText().equals("linear")
              ? new Rope(c.headDim(), c.ropeTheta(), "linear", s.get("factor").asDouble(), 0, 0, 0)
              : new Rope(c.headDim(), c.ropeTheta(), "llama3", s.get("factor").asDouble(),
                  s.get("low_freq_factor").asDouble(), s.get("high_freq_factor").asDouble(),
                  s.get("original_max_position_embeddings").asInt());
      float[] f = rope.invFreq();
      assertThat(f).hasSize(c.invFreq().length);
      for (int i = 0; i < f.length; i++) {
        assertThat((double) f[i]).as("inv_freq[%d] of %s", i, s).isCloseTo(c.invFreq()[i],
            org.assertj.core.data.Offset.offset(1e-6 * Math.max(1, c.invFreq()[0])));
      }
      int n = c.positions().length;
      int d = c.headDim();
      float[] x = new float[n * d];
      for (int t = 0; t < n; t++) {
        for (int j = 0; j < d; j++) {
          x[t * d + j] = (float) c.x()[t][j];
        }
      }
      float[] generic = x.clone();
      TransformerMath.rope(generic, d, 0, 1, d, c.positions(), f);
      float[] cpu;
      try (Backend be = new CpuBackend()) {
        try (Tensor t = be.upload(x, n, d)) {
          be.rope(t, 0, 1, d, c.positions(), f);
          cpu = be.download(t);
        }
      }
      double err = 0;
      double max = 0;
      for (int t = 0; t < n; t++) {
        if (c.positions()[t] > 1000) {
          continue; // float32 inv_freq (as HF keeps it) moves angles past ~1e3 by more than 1e-5 of a radian
        }
        for (int j = 0; j < d; j++) {
          err = Math.max(err, Math.abs(cpu[t * d + j] - c.rotated()[t][j]));
          err = Math.max(err, Math.abs(generic[t * d + j] - c.rotated()[t][j]));
          max = Math.max(max, Math.abs(c.rotated()[t][j]));
        }
      }
      assertThat(err / max).as("rotation error, scaling %s", s).isLessThanOrEqualTo(1e-5);
    }
  }
}
