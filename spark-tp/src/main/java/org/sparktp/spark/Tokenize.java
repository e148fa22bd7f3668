package org.sparktp.spark;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.function.BiFunction;
import org.apache.hadoop.fs.Path;
import org.apache.spark.TaskContext;
import org.apache.spark.api.java.function.MapPartitionsFunction;
import org.apache.spark.deploy.SparkHadoopUtil;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Encoders;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.model.TextTokenizer;
import org.sparktp.model.hf.ChatTemplate;

/**
 * Text to token ids with the model directory's {@code tokenizer.json}, per input partition and before the
 * barrier stage (so a failure is retried with its own task, not the whole group): appends an
 * {@code array<int>} column; a null text gives a null. A messages column ({@link ChatInput}) is rendered with the
 * directory's chat template first (the template is read on the driver, so a directory without one fails before
 * the job).
 */
final class Tokenize implements MapPartitionsFunction<Row, Row> {
  private static final long serialVersionUID = 1L;
  private final int textOrdinal;
  private final String dir;
  private final int maxLength;
  private final ChatTemplate chat; // null: the column holds text
  private final boolean addGenerationPrompt;
  private final java.util.HashMap<String, Object> variables; // the chat template's extra variables
  private final int errorOrdinal; // spark.tp.on-error's helper column (a row whose template fails), or -1: fail
  private final String column;

  private Tokenize(int textOrdinal, String dir, int maxLength, ChatTemplate chat, boolean addGenerationPrompt,
      java.util.Map<String, Object> variables, int errorOrdinal, String column) {
    this.variables = new java.util.HashMap<>(variables);
    this.errorOrdinal = errorOrdinal;
    this.column = column;
    this.textOrdinal = textOrdinal;
    this.dir = dir;
    this.maxLength = maxLength;
    this.chat = chat;
    this.addGenerationPrompt = addGenerationPrompt;
  }

  static Dataset<Row> apply(Dataset<Row> df, String textCol, String idsCol, String dir, int maxLength) {
    return apply(df, textCol, idsCol, dir, maxLength, true, java.util.Map.of());
  }

  /**
   * With a messages column, {@code addGenerationPrompt} ends each prompt with the assistant's turn (generation); when
   * {@code df} has {@code spark.tp.on-error}'s helper column, a conversation the template cannot render gets null ids
   * and its cause there (the tag stage passes it on), else it fails the task. {@code variables} are the template's
   * extra variables ({@code chatTemplateKwargs}).
   */
  static Dataset<Row> apply(Dataset<Row> df, String textCol, String idsCol, String dir, int maxLength,
      boolean addGenerationPrompt, java.util.Map<String, Object> variables) {
    StructType out = df.schema().add(idsCol, DataTypes.createArrayType(DataTypes.IntegerType, false), true);
    int ord = df.schema().fieldIndex(textCol);
    ChatTemplate chat = ChatInput.isMessages(df.schema().fields()[ord].dataType()) ? ChatInput.template(dir) : null;
    int err = java.util.Arrays.asList(df.schema().fieldNames()).indexOf(OnError.HELPER);
    return df.mapPartitions(new Tokenize(ord, dir, maxLength, chat, addGenerationPrompt, variables, err, textCol),
        Encoders.row(out));
  }

  @Override
  public Iterator<Row> call(Iterator<Row> rows) {
    int[][] prefix = new int[1][];
    return mapRows(rows, dir, maxLength, true, (tok, r) -> {
      Object[] v = new Object[r.length() + 1];
      for (int i = 0; i < r.length(); i++) {
        v[i] = r.get(i);
      }
      if (!r.isNullAt(textOrdinal)) {
        if (prefix[0] == null) {
          prefix[0] = tok.encode(""); // what the post-processor puts before any text: a BOS, or nothing
        }
        String text;
        try {
          text = chat == null ? r.getString(textOrdinal)
              : chat.render(ChatInput.messages(r.getList(textOrdinal)), addGenerationPrompt, variables);
        } catch (IllegalArgumentException e) { // ChatTemplateException, or a null message
          if (errorOrdinal < 0) {
            throw e;
          }
          v[errorOrdinal] = "column '" + column + "' could not be rendered with the chat template: " + e.getMessage();
          return RowFactory.create(v);
        }
        int[] ids = withoutSecondPrefix(tok.encode(text), prefix[0]);
        List<Integer> list = new ArrayList<>(ids.length);
        for (int id : ids) {
          list.add(id);
        }
        v[r.length()] = scala.jdk.javaapi.CollectionConverters.asScala(list).toSeq();
      }
      return RowFactory.create(v);
    });
  }

  /**
   * {@code ids} without the first copy of {@code prefix} when it starts with it twice: a text that already begins with
   * the BOS the post-processor adds (a prompt rendered from a chat template, a copied prompt) gets one BOS, not two.
   */
  static int[] withoutSecondPrefix(int[] ids, int[] prefix) {
    int n = prefix.length;
    if (n == 0 || ids.length < 2 * n) {
      return ids;
    }
    for (int i = 0; i < n; i++) {
      if (ids[i] != prefix[i] || ids[n + i] != prefix[i]) {
        return ids;
      }
    }
    return java.util.Arrays.copyOfRange(ids, n, ids.length);
  }

  /**
   * {@code map(tokenizer, row)} over a partition's rows with one tokenizer of {@code dir} for the task
   * ({@link TextTokenizer#open} with {@code maxLength} and {@code addSpecial}), closed when the rows run out or
   * the task ends.
   */
  static Iterator<Row> mapRows(Iterator<Row> rows, String dir, int maxLength, boolean addSpecial,
      BiFunction<TextTokenizer, Row, Row> map) {
    TextTokenizer tok;
    try {
      tok = TextTokenizer.open(new Path(dir), SparkHadoopUtil.get().conf(), maxLength, addSpecial);
    } catch (IOException e) {
      throw new UncheckedIOException("Cannot open the tokenizer of " + dir + ": " + e.getMessage(), e);
    }
    TaskContext tc = TaskContext.get();
    if (tc != null) {
      tc.addTaskCompletionListener((org.apache.spark.util.TaskCompletionListener) c -> tok.close());
    }
    return new Iterator<>() {
      @Override
      public boolean hasNext() {
        boolean more = rows.hasNext();
        if (!more) {
          tok.close();
        }
        return more;
      }

      @Override
      public Row next() {
        if (!hasNext()) {
          throw new NoSuchElementException();
        }
        return map.apply(tok, rows.next());
      }
    };
  }
}
