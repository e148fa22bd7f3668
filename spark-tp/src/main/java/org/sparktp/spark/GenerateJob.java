package org.sparktp.spark;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.TreeSet;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.deploy.SparkHadoopUtil;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.sparktp.model.TextTokenizer;
import org.sparktp.nn.gen.GenerateParams;
import org.sparktp.nn.gen.StopCheck;

/**
 * What the ranks of a {@code task=generate} job need besides the plan: the decoding parameters, the
 * stop strings with the tokenizer directory that spells the new tokens, and where a row's seed is (the
 * ordinal of the {@code seedCol} column, -1 for the {@code seed} param).
 */
record GenerateJob(GenerateParams params, List<String> stopStrings, String tokenizerDir, int seedOrdinal,
    boolean seedIsInt) implements Serializable {

  GenerateJob(GenerateParams params, List<String> stopStrings, String tokenizerDir) {
    this(params, stopStrings, tokenizerDir, -1, false);
  }

  /** Row {@code row}'s seed: its seed column (when set and not null), else the {@code seed} param. */
  long seedOf(org.apache.spark.sql.catalyst.InternalRow row) {
    if (seedOrdinal < 0 || row.isNullAt(seedOrdinal)) {
      return params.seed();
    }
    return seedIsInt ? row.getInt(seedOrdinal) : row.getLong(seedOrdinal);
  }

  GenerateJob withSeedColumn(int ordinal, boolean isInt) {
    return new GenerateJob(params, stopStrings, tokenizerDir, ordinal, isInt);
  }

  /** A stop check for one task (opens the tokenizer lazily; close it with the task), or null. */
  TextStop stopCheck() {
    return stopStrings == null || stopStrings.isEmpty() ? null : new TextStop(tokenizerDir, stopStrings);
  }

  /**
   * The model's end-of-sequence ids: {@code eos_token_id} (a number or a list) of {@code config.json} and of
   * {@code generation_config.json} when it exists.
   */
  static int[] eosIds(String dir, Configuration conf) {
    TreeSet<Integer> ids = new TreeSet<>();
    for (String f : List.of("config.json", "generation_config.json")) {
      Path path = new Path(dir, f);
      try {
        FileSystem fs = path.getFileSystem(conf);
        if (!fs.exists(path)) {
          continue;
        }
        JsonNode eos;
        try (InputStream in = fs.open(path)) {
          eos = new ObjectMapper().readTree(in).get("eos_token_id");
        }
        if (eos != null && eos.isIntegralNumber()) {
          ids.add(eos.asInt());
        } else if (eos != null && eos.isArray()) {
          eos.forEach(e -> ids.add(e.asInt()));
        }
      } catch (IOException e) {
        throw new UncheckedIOException("Cannot read " + path + " for the model's eos_token_id: " + e.getMessage(), e);
      }
    }
    return ids.stream().mapToInt(Integer::intValue).toArray();
  }

  /** {@code df} with {@code generated_text} (the new tokens' text, special tokens left out) before {@code finish_reason}. */
  static Dataset<Row> withText(Dataset<Row> df, String dir) {
    StructType in = df.schema();
    List<StructField> fields = new ArrayList<>();
    for (StructField f : in.fields()) {
      if (f.name().equals(TensorParallelModel.FINISH_REASON)) {
        fields.add(DataTypes.createStructField(TensorParallelModel.GENERATED_TEXT, DataTypes.StringType, true));
      }
      fields.add(f);
    }
    StructType out = DataTypes.createStructType(fields);
    return df.mapPartitions(new Detokenize(dir, in.fieldIndex(TensorParallelModel.GENERATED_IDS),
        in.fieldIndex(TensorParallelModel.FINISH_REASON)), Encoders.row(out));
  }

  /** Decodes {@code generated_ids} per partition (one tokenizer per task). */
  static final class Detokenize implements MapPartitionsFunction<Row, Row> {
    private static final long serialVersionUID = 1L;
    private final String dir;
    private final int idsOrd;
    private final int finishOrd;

    Detokenize(String dir, int idsOrd, int finishOrd) {
      this.dir = dir;
      this.idsOrd = idsOrd;
      this.finishOrd = finishOrd;
    }

    @Override
    public Iterator<Row> call(Iterator<Row> rows) {
      return Tokenize.mapRows(rows, dir, 0, false, (tok, r) -> {
        Object[] v = new Object[r.length() + 1];
        int j = 0;
        for (int i = 0; i < r.length(); i++) {
          if (i == finishOrd) {
            String text = null;
            if (!r.isNullAt(idsOrd)) {
              List<Integer> ids = r.getList(idsOrd);
              int[] a = new int[ids.size()];
              for (int k = 0; k < a.length; k++) {
                a[k] = ids.get(k);
              }
              text = tok.decode(a, true);
            }
            v[j++] = text;
          }
          v[j++] = r.get(i);
        }
        return RowFactory.create(v);
      });
    }
  }

  /** Stops a row once the text of its new tokens contains one of the stop strings. */
  static final class TextStop implements StopCheck, AutoCloseable {
    private static final long serialVersionUID = 1L;
    private final String dir;
    private final List<String> stops;
    private transient TextTokenizer tok;

    TextStop(String dir, List<String> stops) {
      this.dir = dir;
      this.stops = List.copyOf(stops);
    }

    @Override
    public boolean stops(int[] generated, int count) {
      if (tok == null) {
        try {
          tok = TextTokenizer.open(new Path(dir), SparkHadoopUtil.get().conf(), 0, false);
        } catch (IOException e) {
          throw new UncheckedIOException("Cannot open the tokenizer of " + dir + " for the stop strings: "
              + e.getMessage(), e);
        }
      }
      String text = tok.decode(java.util.Arrays.copyOf(generated, count), true);
      for (String s : stops) {
        if (text.contains(s)) {
          return true;
        }
      }
      return false;
    }

    @Override
    public void close() {
      if (tok != null) {
        tok.close();
        tok = null;
      }
    }
  }
}
