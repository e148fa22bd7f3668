package org.sparktp.sql;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.backend.Activation;
import org.sparktp.model.ModelWriter;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.Parallel;

/** Data and model helpers of the SQL tests: a random MLP written as a model directory, random rows, the float64 reference. */
abstract class SqlTestBase {
  static float[] randoms(Random rng, int n, double scale) {
    float[] a = new float[n];
    for (int i = 0; i < n; i++) {
      float v;
      do {
        v = (float) ((rng.nextDouble() * 2 - 1) * scale);
      } while (v == 0f);
      a[i] = v;
    }
    return a;
  }

  static LayerSpec.Linear linear(Random rng, String name, int in, int out) {
    double s = 1 / Math.sqrt(in);
    return new LayerSpec.Linear(name, in, out, randoms(rng, out * in, s), randoms(rng, out, s), Parallel.AUTO);
  }

  /** in -> hidden (gelu) -> out, written to {@code dir}. */
  static ModelSpec writeMlp(Random rng, Path dir, int in, int hidden, int out) throws Exception {
    ModelSpec spec = new ModelSpec(in, List.of(linear(rng, "fc1", in, hidden),
        new LayerSpec.Act(Activation.GELU, hidden), linear(rng, "fc2", hidden, out)));
    ModelWriter.write(spec.model(), dir.toString());
    return spec;
  }

  static float[][] inputs(Random rng, int n, int w) {
    float[][] x = new float[n][];
    for (int i = 0; i < n; i++) {
      x[i] = randoms(rng, w, 1.5);
    }
    return x;
  }

  /** A table (id long, features array&lt;float&gt;, tag string) in {@code partitions} partitions. */
  static Dataset<Row> frame(SparkSession spark, float[][] x, int partitions) {
    List<Row> rows = new ArrayList<>();
    for (int i = 0; i < x.length; i++) {
      Float[] b = new Float[x[i].length];
      for (int j = 0; j < b.length; j++) {
        b[j] = x[i][j];
      }
      rows.add(RowFactory.create((long) i, b, "row-" + i));
    }
    StructType schema = new StructType()
        .add("id", DataTypes.LongType, false)
        .add("features", DataTypes.createArrayType(DataTypes.FloatType, false), false)
        .add("tag", DataTypes.StringType, false);
    return spark.createDataFrame(
        org.apache.spark.api.java.JavaSparkContext.fromSparkContext(spark.sparkContext()).parallelize(rows, partitions),
        schema);
  }

  static double[][] reference(ModelSpec spec, float[][] x, double scale) {
    double[][] h = new double[x.length][];
    for (int i = 0; i < x.length; i++) {
      h[i] = new double[x[i].length];
      for (int j = 0; j < h[i].length; j++) {
        h[i][j] = (double) (float) (x[i][j] * scale);
      }
    }
    return org.sparktp.testing.Reference.forward(spec, h);
  }

  /** Column {@code col} of each row, by the row's id. */
  static float[][] byId(List<Row> rows, int n, String col) {
    float[][] y = new float[n][];
    for (Row r : rows) {
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

  /** max |y - ref| <= 1e-5 max |ref| over the rows that are present. */
  static void assertClose(float[][] y, double[][] ref, Object what) {
    double maxRef = 0;
    double maxErr = 0;
    int seen = 0;
    for (int i = 0; i < ref.length; i++) {
      if (y[i] == null) {
        continue;
      }
      seen++;
      assertThat(y[i]).as("%s row %d", what, i).hasSize(ref[i].length);
      for (int j = 0; j < ref[i].length; j++) {
        maxRef = Math.max(maxRef, Math.abs(ref[i][j]));
        maxErr = Math.max(maxErr, Math.abs(y[i][j] - ref[i][j]));
      }
    }
    assertThat(seen).as("%s: rows compared", what).isPositive();
    assertThat(maxRef).isGreaterThan(0);
    assertThat(maxErr).as("%s: max |y - ref| (max |ref| = %s)", what, maxRef).isLessThanOrEqualTo(1e-5 * maxRef);
  }

  /** An embedded local[4] session with the extension loaded (loopback host, UI off, 4 shuffle partitions). */
  static SparkSession session(String app) {
    stopAnySession();
    return SparkSession.builder()
        .master("local[4]")
        .appName(app)
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.tp.comm.timeout", "30s")
        .config("spark.sql.extensions", TensorParallelExtensions.class.getName())
        .getOrCreate();
  }

  static void stopAnySession() {
    if (SparkSession.getDefaultSession().isDefined()) {
      SparkSession.getDefaultSession().get().stop();
    }
    SparkSession.clearActiveSession();
    SparkSession.clearDefaultSession();
  }
}
