package org.sparktp.nn.ops;

import java.io.Serializable;

/**
 * Rotary position embedding's frequencies, as Hugging Face computes them:
 * {@code inv_freq[i] = theta^(-2i/d)} for {@code i < d/2}, then {@code rope_scaling}: {@code linear}
 * divides every frequency by {@code factor}; {@code llama3} divides the low frequencies (wavelength
 * {@code > original_max_position_embeddings / low_freq_factor}) by {@code factor}, keeps the high ones
 * (wavelength {@code < original / high_freq_factor}) and interpolates smoothly in between.
 *
 * @param type {@code default}, {@code linear} or {@code llama3}
 */
public record Rope(int headDim, double theta, String type, double factor, double lowFreqFactor,
    double highFreqFactor, int originalMaxPositions) implements Serializable {

  public static Rope plain(int headDim, double theta) {
    return new Rope(headDim, theta, "default", 1, 0, 0, 0);
  }

  /** The frequencies, float32 as in HF. */
  public float[] invFreq() {
    int half = headDim / 2;
    float[] f = new float[half];
    for (int i = 0; i < half; i++) {
      // HF: 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)), in float32
      float expo = (float) (2 * i) / headDim;
      f[i] = 1f / (float) Math.pow(theta, expo);
    }
    switch (type) {
      case "default" -> { }
      case "linear" -> {
        for (int i = 0; i < half; i++) {
          f[i] = (float) (f[i] / factor);
        }
      }
      case "llama3" -> {
        double lowWavelen = originalMaxPositions / lowFreqFactor;
        double highWavelen = originalMaxPositions / highFreqFactor;
        for (int i = 0; i < half; i++) {
          double wavelen = 2 * Math.PI / f[i];
          double v = wavelen > lowWavelen ? f[i] / factor : f[i];
          if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
            double smooth = (originalMaxPositions / wavelen - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
            v = (1 - smooth) * v / factor + smooth * v;
          }
          f[i] = (float) v;
        }
      }
      default -> throw new IllegalArgumentException("Unsupported rope_scaling type '" + type
          + "': spark-tp supports default, linear and llama3");
    }
    return f;
  }
}
