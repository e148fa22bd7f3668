package org.sparktp.examples;

import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.SparkSession;
import org.sparktp.spark.TensorParallelModel;

/**
 * A batch inference job on the DataFrame API: reads a table with a {@code features} column
 * ({@code array<float>}, {@code array<double>} or an ML vector), runs a model directory
 * ({@code config.json} + safetensors) split over {@code tp} ranks, and writes the table with a
 * {@code prediction} column.
 *
 * <pre>
 * spark-submit --class org.sparktp.examples.BatchInferenceJob \
 *   --jars spark-tp/target/spark-tp-0.1.0-SNAPSHOT-spark-submit.jar \
 *   examples/target/spark-tp-examples-0.1.0-SNAPSHOT.jar MODEL_DIR INPUT OUTPUT [TP]
 * </pre>
 */
public final class BatchInferenceJob {
  private BatchInferenceJob() {}

  public static void main(String[] args) throws Exception {
    if (args.length < 3) {
      throw new IllegalArgumentException("usage: BatchInferenceJob MODEL_DIR INPUT OUTPUT [TP]");
    }
    String modelDir = args[0];
    String input = args[1];
    String output = args[2];
    int tp = args.length > 3 ? Integer.parseInt(args[3]) : 2;

    SparkSession spark = SparkSession.builder().appName("spark-tp batch inference").getOrCreate();
    try {
      // validates every tensor against the config before any task runs; each rank reads only its shards
      TensorParallelModel model = TensorParallelModel.fromDirectory(modelDir)
          .setInputCol("features")
          .setOutputCol("prediction")
          .setTpSize(tp);
      System.out.println(model.plan(tp).explain());

      Dataset<Row> rows = spark.read().parquet(input);
      model.transform(rows).write().mode("errorifexists").parquet(output);
    } finally {
      spark.stop();
    }
  }
}
