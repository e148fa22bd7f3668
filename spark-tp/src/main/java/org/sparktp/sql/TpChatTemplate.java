package org.sparktp.sql;

import java.util.List;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.expressions.objects.StaticInvoke;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;
import org.sparktp.spark.ChatInput;
import org.sparktp.spark.SqlSupport;
import org.sparktp.spark.TensorParallelModel;
import scala.collection.immutable.Seq;

/**
 * {@code tp_chat_template(model, messages [, add_generation_prompt [, chat_template_kwargs]])}: the prompt a Hugging
 * Face model's chat template makes of a conversation ({@code array<struct<role, content>>}), a string, row by row (no
 * barrier stage). {@code add_generation_prompt} (a constant boolean, default true) ends it with the assistant's turn;
 * {@code chat_template_kwargs} (a constant JSON object string) gives the template extra variables. The model's
 * template is read when the query is analysed: a model without one is an analysis error.
 */
final class TpChatTemplate {
  static final String NAME = "tp_chat_template";
  private static final String EXAMPLE = "tp_chat_template('qwen', messages)";

  private TpChatTemplate() {}

  static Expression build(Seq<Expression> arguments) {
    TpFunctions.Args a = TpFunctions.Args.parse(NAME, arguments, List.of("model", "messages",
        "add_generation_prompt", "chat_template_kwargs"));
    for (String k : a.named.keySet()) {
      if (!a.names.contains(k)) {
        throw Sc.error(NAME + " takes the arguments " + a.names + ", got '" + k + "'");
      }
    }
    Expression model = a.require("model", EXAMPLE);
    if (!model.foldable() || !model.dataType().equals(DataTypes.StringType) || model.eval(null) == null) {
      throw Sc.error(NAME + " argument 'model' must be a constant string (a model directory or a registered name),"
          + " got " + model.sql());
    }
    Expression messages = a.require("messages", EXAMPLE);
    if (!ChatInput.isMessages(messages.dataType())) {
      throw Sc.error(NAME + " argument 'messages' must be array<struct<role: string, content: string>>, got "
          + messages.dataType().simpleString() + " (" + messages.sql() + ")");
    }
    Expression gen = a.positionalOrNamed("add_generation_prompt");
    boolean addGenerationPrompt = true;
    if (gen != null) {
      if (!gen.foldable() || !gen.dataType().equals(DataTypes.BooleanType) || gen.eval(null) == null) {
        throw Sc.error(NAME + " argument 'add_generation_prompt' must be a constant true or false, got " + gen.sql());
      }
      addGenerationPrompt = (Boolean) gen.eval(null);
    }
    Expression kw = a.positionalOrNamed("chat_template_kwargs");
    String kwargs = ""; // none (not null: a null argument makes the call null)
    if (kw != null) {
      if (!kw.foldable() || !kw.dataType().equals(DataTypes.StringType)) {
        throw Sc.error(NAME + " argument 'chat_template_kwargs' must be a constant string holding a JSON object such"
            + " as '{\"enable_thinking\": false}', got " + kw.sql());
      }
      Object v = kw.eval(null);
      kwargs = v == null ? "" : TpFunctions.chatTemplateKwargs(NAME + " argument 'chat_template_kwargs'",
          v.toString());
    }
    String name = model.eval(null).toString();
    TensorParallelModel m = TpFunctions.openModel(NAME, name);
    String dir = SqlSupport.hfDirectory(m);
    if (dir == null) {
      throw Sc.error(NAME + ": model '" + name + "' is a spark-tp layer list; chat templates belong to Hugging Face"
          + " models");
    }
    try {
      ChatInput.template(dir);
    } catch (IllegalArgumentException e) {
      throw Sc.error(NAME + ": " + e.getMessage(), e);
    }
    StructType elem = (StructType) ((ArrayType) messages.dataType()).elementType();
    List<Expression> args = List.of(Literal.create(dir, DataTypes.StringType), messages,
        Literal.create(ChatInput.ordinal(elem, "role"), DataTypes.IntegerType),
        Literal.create(ChatInput.ordinal(elem, "content"), DataTypes.IntegerType),
        Literal.create(elem.size(), DataTypes.IntegerType),
        Literal.create(addGenerationPrompt, DataTypes.BooleanType), Literal.create(kwargs, DataTypes.StringType));
    return new StaticInvoke(ChatInput.class, DataTypes.StringType, "render", Sc.seq(args), Sc.seq(), true, true,
        true, scala.Option.empty());
  }
}
