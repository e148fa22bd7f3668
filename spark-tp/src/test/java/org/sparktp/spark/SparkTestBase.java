package org.sparktp.spark;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.apache.spark.api.java.JavaSparkContext;
import org.apache.spark.ml.linalg.Vectors;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.ml.linalg.SQLDataTypes;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;

/**
 * A local Spark session for the tests of a class ({@code local[4,2]}: 4 task slots, a failed task may be
 * retried once so the retry test can run; loopback host, UI off, few shuffle partitions), stopped after
 * the class so that classes which need another master ({@code local-cluster}) can start theirs; plus data
 * helpers.
 */
public abstract class SparkTestBase {
  protected static SparkSession spark;
  protected static JavaSparkContext jsc;

  @BeforeAll
  static void startSpark() {
    spark = session();
    jsc = JavaSparkContext.fromSparkContext(spark.sparkContext());
  }

  @AfterAll
  static void stopSpark() {
    if (spark != null) {
      spark.stop();
      spark = null;
      jsc = null;
    }
  }

  static synchronized SparkSession session() {
    return SparkSession.builder()
        .master("local[4,2]")
        .appName("spark-tp-tests")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.tp.comm.timeout", "30s")
        .getOrCreate();
  }

  /** The input column types the tests cover. */
  enum Input { FLOATS, DOUBLES, DENSE_VECTOR, SPARSE_VECTOR }

  static DataType type(Input in) {
    return switch (in) {
      case FLOATS -> DataTypes.createArrayType(DataTypes.FloatType, false);
      case DOUBLES -> DataTypes.createArrayType(DataTypes.DoubleType, false);
      case DENSE_VECTOR, SPARSE_VECTOR -> SQLDataTypes.VectorType();
    };
  }

  static Object value(Input in, float[] x) {
    return switch (in) {
      case FLOATS -> {
        Float[] b = new Float[x.length];
        for (int i = 0; i < x.length; i++) {
          b[i] = x[i];
        }
        yield b;
      }
      case DOUBLES -> {
        Double[] b = new Double[x.length];
        for (int i = 0; i < x.length; i++) {
          b[i] = (double) x[i];
        }
        yield b;
      }
      case DENSE_VECTOR -> Vectors.dense(toDouble(x));
      case SPARSE_VECTOR -> Vectors.dense(toDouble(x)).toSparse();
    };
  }

  static double[] toDouble(float[] x) {
    double[] d = new double[x.length];
    for (int i = 0; i < x.length; i++) {
      d[i] = x[i];
    }
    return d;
  }

  /** Random inputs of width {@code w}; for sparse input about a third of the entries are exactly 0. */
  static float[][] inputs(Random rng, int n, int w, boolean sparse) {
    float[][] x = new float[n][w];
    for (int i = 0; i < n; i++) {
      for (int j = 0; j < w; j++) {
        x[i][j] = sparse && rng.nextInt(3) == 0 ? 0f : (float) (rng.nextGaussian());
      }
    }
    return x;
  }

  /**
   * A DataFrame (id long, features, tag string) with {@code partitions} partitions whose sizes differ;
   * row {@code i} holds {@code x[i]}.
   */
  static Dataset<Row> frame(Input in, float[][] x, int partitions) {
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < x.length; i++) {
      rows.add(RowFactory.create((long) i, value(in, x[i]), "row-" + i));
    }
    StructType schema = new StructType()
        .add("id", DataTypes.LongType, false)
        .add("features", type(in), false)
        .add("tag", DataTypes.StringType, false);
    return spark.createDataFrame(jsc.parallelize(rows, partitions), schema);
  }

  /** The ids of each partition, in order. */
  static List<List<Long>> idsByPartition(Dataset<Row> df) {
    List<List<Long>> out = new ArrayList<>();
    for (List<Row> part : df.javaRDD().glom().collect()) {
      List<Long> ids = new ArrayList<>();
      for (Row r : part) {
        ids.add(r.getLong(r.fieldIndex("id")));
      }
      out.add(ids);
    }
    return out;
  }

  /** Output rows by id. */
  static float[][] outputsById(Dataset<Row> out, int n, String col) {
    float[][] y = new float[n][];
    for (Row r : out.collectAsList()) {
      int id = (int) r.getLong(r.fieldIndex("id"));
      assertThat(y[id]).as("row %d appears once", id).isNull();
      List<Float> v = r.getList(r.fieldIndex(col));
      y[id] = new float[v.size()];
      for (int j = 0; j < v.size(); j++) {
        y[id][j] = v.get(j);
      }
    }
    return y;
  }

  /** Asserts max|y - ref| <= 1e-5 * max|ref| over all rows. */
  static void assertClose(float[][] y, double[][] ref) {
    assertClose(y, ref, 1e-5);
  }

  /** Asserts max|y - ref| <= tolerance * max|ref| over all rows. */
  static void assertClose(float[][] y, double[][] ref, double tolerance) {
    double maxRef = 0;
    double maxErr = 0;
    assertThat(y.length).isEqualTo(ref.length);
    for (int i = 0; i < ref.length; i++) {
      assertThat(y[i]).as("row %d", i).isNotNull().hasSize(ref[i].length);
      for (int j = 0; j < ref[i].length; j++) {
        maxRef = Math.max(maxRef, Math.abs(ref[i][j]));
        maxErr = Math.max(maxErr, Math.abs(y[i][j] - ref[i][j]));
      }
    }
    assertThat(maxRef).isGreaterThan(0);
    assertThat(maxErr).as("max |y - ref| (max |ref| = %s)", maxRef).isLessThanOrEqualTo(tolerance * maxRef);
  }
}
