package org.sparktp.sql;

import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.FunctionIdentifier;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.ExpressionInfo;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.sparktp.spark.TpMetrics;
import scala.Function1;
import scala.Tuple3;
import scala.collection.immutable.Seq;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * spark-tp's SQL functions, loaded with {@code spark.sql.extensions=org.sparktp.sql.TensorParallelExtensions}:
 *
 * <ul>
 *   <li>{@code tp_predict(model, input [, options])}: the model's output for each row (a column);
 *   <li>{@code tp_embed(model, input [, options])}: the same with {@code task=embed} where the model has tasks;
 *   <li>{@code tp_generate(model, input [, options])}: a completion per row (text, ids, finish reason, token
 *       counts) from a Hugging Face causal LM;
 *   <li>{@code tp_score(model, input [, options])}: the log-likelihood of each row under a causal LM;
 *   <li>{@code tp_explain(model, tp)}: the plan for {@code tp} ranks, as text;
 *   <li>{@code tp_chat_template(model, messages [, add_generation_prompt [, chat_template_kwargs]])}: a
 *       conversation's prompt by the
 *       model's chat template, row by row;
 *   <li>{@code tp_models()}: a table of the models registered with {@code spark.tp.models.<name>=<path>}.
 * </ul>
 *
 * A call is planned like a Python UDF: {@link ExtractTpCalls} moves it out of its projection into a
 * {@link TpInference} node, {@link TpStrategy} plans that as {@link TpInferenceExec}, which runs the
 * DataFrame API's barrier flow on the child's rows; {@link TpChecks} rejects calls where they cannot run.
 */
public final class TensorParallelExtensions extends AbstractFunction1<SparkSessionExtensions, BoxedUnit> {
  private static final String OPTIONS_DOC = "\n    Arguments:\n"
      + "      * model - a constant string: a model directory (any Hadoop file system) or a name registered with\n"
      + "          spark.tp.models.<name>=<path> (see tp_models())\n"
      + "      * input - array<float>, array<double> or vector of the model's input width (ids: int/long, or\n"
      + "          array<int|long> for an embedding bag); any expression of the row's columns\n"
      + "      * options - optional constant map<string,string>: tp, groups, batch-size, backend and any other\n"
      + "          param of the model (dtype, task, ... where the model has them), and spark.tp.* keys (full or\n"
      + "          short, e.g. null-policy); named arguments (tp => 2) work too\n"
      + "  ";

  @Override
  public BoxedUnit apply(SparkSessionExtensions ext) {
    ext.injectFunction(new Tuple3<>(new FunctionIdentifier(TpFunctions.PREDICT),
        info(TpFunctions.PREDICT, "_FUNC_(model, input [, options]) - Runs a tensor-parallel model on each row and"
            + " returns its output (array<float>). Runs as a barrier stage of groups x tp tasks over the query's rows;"
            + " use it in the SELECT list.", OPTIONS_DOC,
            "\n    Examples:\n"
            + "      > SELECT id, _FUNC_('/models/mlp', features) AS prediction FROM t;\n"
            + "      > SELECT _FUNC_('mlp', features, map('tp', '2', 'batch-size', '256')) FROM t;\n"
            + "      > SELECT _FUNC_(model => 'mlp', input => transform(raw, x -> x * 2), tp => 2) FROM t;\n"
            + "  ", "scalar"),
        fn(args -> TpFunctions.call(TpFunctions.PREDICT, args))));
    ext.injectFunction(new Tuple3<>(new FunctionIdentifier(TpFunctions.EMBED),
        info(TpFunctions.EMBED, "_FUNC_(model, input [, options]) - tp_predict with task 'embed' (for models with"
            + " tasks); for a model without tasks its output, as tp_predict.", OPTIONS_DOC,
            "\n    Examples:\n"
            + "      > SELECT id, _FUNC_('encoder', features, map('tp', '2')) AS embedding FROM t;\n"
            + "  ", "scalar"),
        fn(args -> TpFunctions.call(TpFunctions.EMBED, args))));
    ext.injectFunction(new Tuple3<>(new FunctionIdentifier(TpFunctions.GENERATE),
        info(TpFunctions.GENERATE, "_FUNC_(model, input [, options]) - Generates a completion of each row's prompt with"
            + " a Hugging Face causal LM (task generate) and returns " + GenerateCall.RESULT.simpleString()
            + "; finish_reason is eos, stop or length. Runs as a barrier stage over the query's rows.",
            "\n    Arguments:\n"
            + "      * model - a constant string: a Hugging Face causal LM's directory or a registered name\n"
            + "      * input - " + GenerateCall.TAKES + "\n"
            + "      * options - optional constant map<string,string> or named arguments: max_new_tokens, temperature,\n"
            + "          top_k, top_p, seed, stop, stop_ids, repetition_penalty, and tp, groups, batch-size, dtype, ...\n"
            + "          and spark.tp.* keys (full or short, e.g. on-error)\n"
            + "  ",
            "\n    Examples:\n"
            + "      > SELECT id, _FUNC_('llama', prompt, map('max_new_tokens', '32')).text AS completion FROM t;\n"
            + "      > SELECT _FUNC_(model => 'llama', input => prompt, temperature => 0.7, seed => 42, tp => 2) FROM t;\n"
            + "  ", "scalar"),
        fn(args -> TpFunctions.call(TpFunctions.GENERATE, args))));
    ext.injectFunction(new Tuple3<>(new FunctionIdentifier(TpFunctions.SCORE),
        info(TpFunctions.SCORE, "_FUNC_(model, input [, options]) - The log-likelihood of each row's tokens under a"
            + " Hugging Face causal LM (task score: the sum over tokens 2..n of log p(token | the tokens before)),"
            + " a double.", OPTIONS_DOC,
            "\n    Examples:\n"
            + "      > SELECT id, _FUNC_('llama', text) AS logp FROM t;\n"
            + "  ", "scalar"),
        fn(args -> TpFunctions.call(TpFunctions.SCORE, args))));
    ext.injectFunction(new Tuple3<>(new FunctionIdentifier(TpFunctions.EXPLAIN),
        info(TpFunctions.EXPLAIN, "_FUNC_(model, tp) - The plan of a model split over tp ranks: ops, layouts,"
            + " collectives, bytes per row and weight bytes per rank.",
            "\n    Arguments:\n"
            + "      * model - a model directory or a registered name (constant)\n"
            + "      * tp - ranks per tensor-parallel group (constant integer >= 1)\n"
            + "  ",
            "\n    Examples:\n"
            + "      > SELECT _FUNC_('/models/mlp', 2);\n"
            + "  ", "scalar"),
        fn(TpFunctions::explain)));
    ext.injectFunction(new Tuple3<>(new FunctionIdentifier(TpChatTemplate.NAME),
        info(TpChatTemplate.NAME, "_FUNC_(model, messages [, add_generation_prompt [, chat_template_kwargs]]) - The prompt a Hugging Face"
            + " model's chat template (tokenizer_config.json) makes of a conversation, as transformers'"
            + " apply_chat_template; row by row.",
            "\n    Arguments:\n"
            + "      * model - a constant string: a Hugging Face model's directory or a registered name\n"
            + "      * messages - array<struct<role: string, content: string>>\n"
            + "      * add_generation_prompt - constant boolean, default true: end with the assistant's turn\n"
            + "      * chat_template_kwargs - constant string, a JSON object: extra template variables\n"
            + "  ",
            "\n    Examples:\n"
            + "      > SELECT _FUNC_('qwen', array(named_struct('role', 'user', 'content', 'Hi')));\n"
            + "      > SELECT _FUNC_('qwen', messages, chat_template_kwargs => '{\"enable_thinking\": false}');\n"
            + "  ", "scalar"),
        fn(TpChatTemplate::build)));
    ext.injectTableFunction(new Tuple3<>(new FunctionIdentifier(TpFunctions.MODELS),
        info(TpFunctions.MODELS, "_FUNC_() - The models registered with spark.tp.models.<name>=<path>: one row"
            + " (name, path) each.", "",
            "\n    Examples:\n"
            + "      > SELECT * FROM _FUNC_();\n"
            + "  ", "table"),
        tableFn(TpFunctions::models)));
    ext.injectPostHocResolutionRule(fn(session -> new ExtractTpCalls()));
    ext.injectCheckRule(fn(session -> new TpChecks()));
    ext.injectPlannerStrategy(fn(session -> new TpStrategy()));
    return BoxedUnit.UNIT;
  }

  /** The metrics of the last tensor-parallel call a SQL query in this JVM ran (rows, compute and communication per rank), or null. */
  public static TpMetrics lastMetrics() {
    return TpMetricsRegistry.last();
  }

  private static ExpressionInfo info(String name, String usage, String arguments, String examples, String kind) {
    return new ExpressionInfo(kind.equals("table") ? TensorParallelExtensions.class.getName() : TpCall.class.getName(),
        null, name, usage, arguments, examples, "", kind.equals("table") ? "table_funcs" : "misc_funcs", "", "",
        "java_udf");
  }

  private static <A, B> Function1<A, B> fn(java.util.function.Function<A, B> f) {
    return new AbstractFunction1<>() {
      @Override
      public B apply(A a) {
        return f.apply(a);
      }
    };
  }

  private static Function1<Seq<Expression>, LogicalPlan> tableFn(java.util.function.Function<Seq<Expression>, LogicalPlan> f) {
    return fn(f);
  }
}
