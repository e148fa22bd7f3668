package org.sparktp.spark;

import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.hadoop.fs.Path;
import org.apache.spark.deploy.SparkHadoopUtil;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.util.ArrayData;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.unsafe.types.UTF8String;
import org.sparktp.model.hf.ChatMessage;
import org.sparktp.model.hf.ChatTemplate;

/**
 * A messages column, {@code array<struct<role: string, content: string>>} (fields found by name, in any order, other
 * fields ignored, as JSON readers infer them), turned into a prompt with the model directory's chat template
 * ({@link ChatTemplate}): the input of {@code transform}, {@code infer} and {@code tp_generate} when a row is a
 * conversation, and {@code tp_chat_template}.
 */
public final class ChatInput {
  private ChatInput() {}

  /** The templates of model directories read in this JVM (the driver checks; executors render). */
  private static final Map<String, ChatTemplate> TEMPLATES = new ConcurrentHashMap<>();

  /** The variables of the {@code chat_template_kwargs} JSON strings seen in this JVM (one per query, in practice). */
  private static final Map<String, Map<String, Object>> VARIABLES = new ConcurrentHashMap<>();

  /** True when {@code t} is a messages column: an array of structs with string fields {@code role} and {@code content}. */
  public static boolean isMessages(DataType t) {
    return t instanceof ArrayType a && a.elementType() instanceof StructType s && ordinal(s, "role") >= 0
        && ordinal(s, "content") >= 0;
  }

  /** The ordinal of the string field {@code name} of {@code s}, or -1. */
  public static int ordinal(StructType s, String name) {
    StructField[] fs = s.fields();
    for (int i = 0; i < fs.length; i++) {
      if (fs[i].name().equals(name) && fs[i].dataType().equals(DataTypes.StringType)) {
        return i;
      }
    }
    return -1;
  }

  /** The chat template of the model directory {@code dir} (read once per JVM); an error says when it has none. */
  public static ChatTemplate template(String dir) {
    return TEMPLATES.computeIfAbsent(dir, d -> {
      try {
        return ChatTemplate.load(new Path(d), SparkHadoopUtil.get().conf());
      } catch (IOException e) {
        throw new IllegalArgumentException(e.getMessage(), e);
      }
    });
  }

  /** The messages of an external row's messages value (a list of structs); null elements are an error. */
  static List<ChatMessage> messages(List<Row> rows) {
    List<ChatMessage> out = new ArrayList<>(rows.size());
    for (int i = 0; i < rows.size(); i++) {
      Row r = rows.get(i);
      if (r == null) {
        throw new IllegalArgumentException("message " + i + " is null");
      }
      out.add(new ChatMessage(r.getAs("role"), r.getAs("content")));
    }
    return out;
  }

  /**
   * {@code tp_chat_template}'s evaluation (Catalyst's internal values): the prompt of the conversation
   * {@code messages} (structs with {@code role} at {@code roleOrd}, {@code content} at {@code contentOrd}) with
   * the template of {@code dir} and the extra variables of the JSON object {@code kwargs} (empty: none).
   */
  public static UTF8String render(UTF8String dir, ArrayData messages, int roleOrd, int contentOrd, int width,
      boolean addGenerationPrompt, UTF8String kwargs) {
    List<ChatMessage> ms = new ArrayList<>(messages.numElements());
    for (int i = 0; i < messages.numElements(); i++) {
      if (messages.isNullAt(i)) {
        throw new IllegalArgumentException("tp_chat_template: message " + i + " is null");
      }
      InternalRow r = messages.getStruct(i, width);
      ms.add(new ChatMessage(r.isNullAt(roleOrd) ? null : r.getUTF8String(roleOrd).toString(),
          r.isNullAt(contentOrd) ? null : r.getUTF8String(contentOrd).toString()));
    }
    return UTF8String.fromString(template(dir.toString()).render(ms, addGenerationPrompt,
        kwargs.numBytes() == 0 ? null : VARIABLES.computeIfAbsent(kwargs.toString(), k -> ChatTemplate.parseKwargs(k,
            "tp_chat_template argument 'chat_template_kwargs'"))));
  }
}
