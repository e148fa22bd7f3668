package org.sparktp.nn;

import org.sparktp.backend.Backend;
import org.sparktp.tensor.DType;
import org.sparktp.backend.Tensor;

/**
 * Where a rank reads its weight shards from: whole tensors held in memory ({@code LayerModel.weights()}), or
 * byte ranges of a checkpoint. Tensors are named {@code <layer>.weight} and {@code <layer>.bias}; a 2-D
 * tensor is {@code [rows, cols]} row-major, a 1-D tensor {@code [n]} is read with {@link #rows}.
 */
public interface WeightSource {

  /** Rows {@code [start, start + count)} of a tensor (elements, for a 1-D tensor). */
  float[] rows(String tensor, int start, int count);

  /** Columns {@code [start, start + count)} of every row of a 2-D tensor. */
  float[] columns(String tensor, int start, int count);

  /** A whole tensor. */
  float[] all(String tensor);

  /** The dtype a tensor is stored in (the type of a typed read without conversion); F32 unless overridden. */
  default DType dtype(String tensor) {
    return DType.F32;
  }

  /**
   * Rows {@code [start, start + count)} of a {@code [*, cols]} tensor as a new {@code dtype} tensor on
   * {@code be}. This default reads float32 ({@link #rows}) and converts; a checkpoint overrides it to read
   * its bytes straight into the backend's memory.
   */
  default Tensor rows(String tensor, int start, int count, int cols, DType dtype, Backend be) {
    return typed(be, rows(tensor, start, count), count, cols, dtype);
  }

  /** Columns {@code [start, start + count)} of every one of the {@code rows} rows, as a new {@code dtype} tensor. */
  default Tensor columns(String tensor, int start, int count, int rows, DType dtype, Backend be) {
    return typed(be, columns(tensor, start, count), rows, count, dtype);
  }

  /** {@code data} ({@code [rows, cols]} float32) as a new {@code dtype} tensor on {@code be}. */
  static Tensor typed(Backend be, float[] data, int rows, int cols, DType dtype) {
    Tensor f = be.upload(data, rows, cols);
    if (dtype.weightTensorType(DType.F32) == DType.F32) { // f32, or int8 (quantized from f32 later)
      return f;
    }
    try (f) {
      return be.convert(f, dtype);
    }
  }
}
