package org.sparktp.model;

import java.io.IOException;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparktp.tensor.DType;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;

/**
 * Writes a {@link ModelSpec} as a model directory that {@link ModelDirectory} reads back unchanged:
 * {@code config.json} (from {@link ModelConfig#of}) and {@code model.safetensors} with every weight as
 * {@code F32} in PyTorch's layout, named {@code <layer name>.weight} and {@code <layer name>.bias}.
 * Two layers with the same name must hold the same values (tied weights), which are stored once.
 */
public final class ModelWriter {
  private ModelWriter() {}

  /** Writes {@code spec} into {@code dir} (created if needed; existing model files are replaced). */
  public static void write(ModelSpec spec, Path dir, Configuration conf) throws IOException {
    write(spec, dir, conf, DType.F32);
  }

  /** Writes {@code spec} with every tensor stored as {@code dtype} (F32, BF16 or F16; rounded to nearest even). */
  public static void write(ModelSpec spec, Path dir, Configuration conf, DType dtype) throws IOException {
    ModelConfig config = ModelConfig.of(spec);
    SafetensorsWriter weights = new SafetensorsWriter().metadata("format", "pt").metadata("writer", "spark-tp");
    add(weights, new HashMap<>(), spec.layers(), dtype);
    FileSystem fs = dir.getFileSystem(conf);
    fs.mkdirs(dir);
    Path index = new Path(dir, ModelDirectory.INDEX_FILE);
    if (fs.exists(index) && !fs.delete(index, false)) {
      throw new IOException("Cannot replace the model in " + dir + ": cannot delete the old " + index);
    }
    weights.write(new Path(dir, ModelDirectory.WEIGHTS_FILE), conf);
    config.write(new Path(dir, ModelConfig.FILE_NAME), conf);
  }

  /** Writes {@code spec} into a local or Hadoop directory given as a string, with a default configuration. */
  public static void write(ModelSpec spec, String dir) throws IOException {
    write(spec, new Path(dir), new Configuration());
  }

  private static void add(SafetensorsWriter w, Map<String, float[]> written, List<LayerSpec> layers, DType dt) {
    for (LayerSpec l : layers) {
      l.tensors((name, shape, data) -> put(w, written, name, shape, data, dt));
    }
  }

  private static void put(SafetensorsWriter w, Map<String, float[]> written, String name, long[] shape, float[] data,
      DType dt) {
    float[] prev = written.get(name);
    if (prev == null) {
      w.add(name, dt, shape, data);
      written.put(name, data);
    } else if (prev.length != data.length || !Arrays.equals(prev, data)) {
      throw new IllegalArgumentException("Cannot save the model: two layers store different values as '" + name
          + "'; give them different names, or the same values to tie them");
    }
  }
}
