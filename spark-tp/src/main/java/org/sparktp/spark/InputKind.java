package org.sparktp.spark;

import java.util.Locale;
import org.apache.spark.ml.linalg.VectorUDT;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.plan.ModelPlan;

/**
 * How the input column is read: dense vectors from {@code array<float>}, {@code array<double>} or an ML
 * {@code Vector} (dense or sparse), one id per row from {@code int}/{@code long}, a list of ids per row
 * from {@code array<int>}/{@code array<long>}. Reads straight from Spark's internal rows.
 */
enum InputKind {
  FLOAT_ARRAY, DOUBLE_ARRAY, VECTOR, INT, LONG, INT_ARRAY, LONG_ARRAY;

  boolean dense() {
    return this == FLOAT_ARRAY || this == DOUBLE_ARRAY || this == VECTOR;
  }

  boolean bags() {
    return this == INT_ARRAY || this == LONG_ARRAY;
  }

  /**
   * The kind of {@code col} in {@code schema} for a model that takes what {@code plan} takes; errors say what is
   * accepted, {@code string} too with {@code text} (the model has a tokenizer: text is tokenized before the job).
   */
  static InputKind of(StructType schema, String col, ModelPlan plan, boolean text) {
    boolean takesIds = plan.inputKind() != InputBatch.Kind.DENSE;
    boolean takesBags = plan.inputKind() == InputBatch.Kind.BAGS;
    String[] names = schema.fieldNames();
    StructField f = null;
    for (StructField x : schema.fields()) {
      if (x.name().equals(col)) {
        f = x;
      }
    }
    if (f == null) {
      throw new IllegalArgumentException("Input column '" + col + "' does not exist; the columns are "
          + String.join(", ", names) + " (set inputCol)");
    }
    DataType t = f.dataType();
    String want;
    if (takesBags) {
      want = "array<int> or array<long> (a list of ids per row)";
      if (t instanceof ArrayType a) {
        if (a.elementType().equals(DataTypes.IntegerType)) {
          return INT_ARRAY;
        }
        if (a.elementType().equals(DataTypes.LongType)) {
          return LONG_ARRAY;
        }
      }
    } else if (takesIds) {
      want = "int or long (one id per row)";
      if (t.equals(DataTypes.IntegerType)) {
        return INT;
      }
      if (t.equals(DataTypes.LongType)) {
        return LONG;
      }
    } else {
      want = "array<float>, array<double> or vector";
      if (t instanceof VectorUDT) {
        return VECTOR;
      }
      if (t instanceof ArrayType a) {
        if (a.elementType().equals(DataTypes.FloatType)) {
          return FLOAT_ARRAY;
        }
        if (a.elementType().equals(DataTypes.DoubleType)) {
          return DOUBLE_ARRAY;
        }
      }
    }
    throw new IllegalArgumentException("Input column '" + col + "' has type " + t.simpleString()
        + "; the model takes " + (text ? "string (text, tokenized with the model's "
            + org.sparktp.model.TextTokenizer.FILE_NAME + "), " : "") + want);
  }

  String describe() {
    return name().toLowerCase(Locale.ROOT);
  }

  /**
   * Checks the (non-null) value at {@code ord}: its width against {@code width} for dense input, ids
   * against the vocabulary {@code [0, width)} otherwise; null elements are rejected. Returns null when
   * fine, else the problem.
   */
  String check(InternalRow row, int ord, int width) {
    switch (this) {
      case FLOAT_ARRAY, DOUBLE_ARRAY -> {
        ArrayData a = row.getArray(ord);
        if (a.numElements() != width) {
          return "has width " + a.numElements() + ", the model expects width " + width;
        }
        return nullElement(a);
      }
      case VECTOR -> {
        InternalRow v = row.getStruct(ord, 4);
        int size = v.getByte(0) == 1 ? v.getArray(3).numElements() : v.getInt(1);
        if (size != width) {
          return "is a vector of size " + size + ", the model expects width " + width;
        }
        return null;
      }
      case INT, LONG -> {
        long id = this == INT ? row.getInt(ord) : row.getLong(ord);
        return id < 0 || id >= width ? "holds id " + id + ", outside the vocabulary [0, " + width + ")" : null;
      }
      case INT_ARRAY, LONG_ARRAY -> {
        ArrayData a = row.getArray(ord);
        String ne = nullElement(a);
        if (ne != null) {
          return ne;
        }
        for (int i = 0; i < a.numElements(); i++) {
          long id = this == INT_ARRAY ? a.getInt(i) : a.getLong(i);
          if (id < 0 || id >= width) {
            return "holds id " + id + " at position " + i + ", outside the vocabulary [0, " + width + ")";
          }
        }
        return null;
      }
      default -> throw new IllegalStateException();
    }
  }

  private static String nullElement(ArrayData a) {
    for (int i = 0; i < a.numElements(); i++) {
      if (a.isNullAt(i)) {
        return "has a null element at position " + i + " (a missing value, or in CSV text one that is not a number)";
      }
    }
    return null;
  }

  /** Writes the dense vector at {@code ord} into {@code dst[off .. off + width)}. */
  void readDense(InternalRow row, int ord, float[] dst, int off, int width) {
    switch (this) {
      case FLOAT_ARRAY -> {
        ArrayData a = row.getArray(ord);
        for (int i = 0; i < width; i++) {
          dst[off + i] = a.getFloat(i);
        }
      }
      case DOUBLE_ARRAY -> {
        ArrayData a = row.getArray(ord);
        for (int i = 0; i < width; i++) {
          dst[off + i] = (float) a.getDouble(i);
        }
      }
      case VECTOR -> {
        InternalRow v = row.getStruct(ord, 4);
        ArrayData values = v.getArray(3);
        if (v.getByte(0) == 1) {
          for (int i = 0; i < width; i++) {
            dst[off + i] = (float) values.getDouble(i);
          }
        } else {
          ArrayData idx = v.getArray(2);
          java.util.Arrays.fill(dst, off, off + width, 0f);
          for (int i = 0; i < idx.numElements(); i++) {
            dst[off + idx.getInt(i)] = (float) values.getDouble(i);
          }
        }
      }
      default -> throw new IllegalStateException(this + " is not dense input");
    }
  }

  /** The id at {@code ord} (one id per row). */
  int readId(InternalRow row, int ord) {
    return this == INT ? row.getInt(ord) : (int) row.getLong(ord);
  }

  /** Number of ids in the bag at {@code ord}. */
  int bagLength(InternalRow row, int ord) {
    return row.getArray(ord).numElements();
  }

  /** Writes the bag at {@code ord} into {@code dst} from {@code off}. */
  void readBag(InternalRow row, int ord, int[] dst, int off) {
    ArrayData a = row.getArray(ord);
    for (int i = 0; i < a.numElements(); i++) {
      dst[off + i] = this == INT_ARRAY ? a.getInt(i) : (int) a.getLong(i);
    }
  }
}
