package org.sparktp.model;

import java.io.IOException;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.sparktp.tensor.DType;

/**
 * Writes a {@link LayerModel} as a model directory that {@link ModelDirectory} reads back unchanged:
 * {@code config.json} (its {@link LayerModel#config()}) and {@code model.safetensors} with every tensor in PyTorch's
 * layout, named as the config names it (a tensor two layers share, tied weights, is stored once).
 */
public final class ModelWriter {
  private ModelWriter() {}

  /** Writes {@code model} into {@code dir} (created if needed; existing model files are replaced), in f32. */
  public static void write(LayerModel model, Path dir, Configuration conf) throws IOException {
    write(model, dir, conf, DType.F32);
  }

  /** Writes {@code model} with every tensor stored as {@code dtype} (F32, BF16 or F16; rounded to nearest even). */
  public static void write(LayerModel model, Path dir, Configuration conf, DType dtype) throws IOException {
    SafetensorsWriter weights = new SafetensorsWriter().metadata("format", "pt").metadata("writer", "spark-tp");
    for (String t : model.tensorNames()) {
      weights.add(t, dtype, model.shape(t), model.tensor(t));
    }
    FileSystem fs = dir.getFileSystem(conf);
    fs.mkdirs(dir);
    Path index = new Path(dir, ModelDirectory.INDEX_FILE);
    if (fs.exists(index) && !fs.delete(index, false)) {
      throw new IOException("Cannot replace the model in " + dir + ": cannot delete the old " + index);
    }
    weights.write(new Path(dir, ModelDirectory.WEIGHTS_FILE), conf);
    model.config().write(new Path(dir, ModelConfig.FILE_NAME), conf);
  }

  /** Writes {@code model} into a local or Hadoop directory given as a string, with a default configuration. */
  public static void write(LayerModel model, String dir) throws IOException {
    write(model, new Path(dir), new Configuration());
  }
}
