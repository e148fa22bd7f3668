package org.sparktp.sql;

import java.util.ArrayList;
import java.util.List;
import org.apache.spark.sql.catalyst.expressions.Alias;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.AttributeReference;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.LambdaFunction;
import org.apache.spark.sql.catalyst.expressions.NamedExpression;
import org.apache.spark.sql.catalyst.expressions.WindowExpression;
import org.apache.spark.sql.catalyst.expressions.aggregate.AggregateExpression;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.Project;
import org.apache.spark.sql.catalyst.rules.Rule;
import org.apache.spark.sql.types.Metadata;
import scala.Function1;
import scala.Option;

/**
 * Pulls each {@code tp_*} call out of a projection into a {@link TpInference} node over the projection's
 * child, as Spark's {@code ExtractPythonUDFs} does for Python UDFs: {@code Project(list, child)} becomes
 * {@code Project(list', TpInference(call_n, ... TpInference(call_1, Project(child.output ++ inputs, child))))},
 * where {@code inputs} are the calls' input expressions (computed once below the calls) and {@code list'}
 * refers to each call's output column. Identical calls run once; a call whose input holds another call runs
 * after it. Calls inside a lambda, an aggregate or a window function, and calls in a streaming query, are
 * left for {@link TpChecks} to reject.
 *
 * <p>Runs as a post-hoc resolution rule, so the optimizer and EXPLAIN see the nodes.
 */
final class ExtractTpCalls extends Rule<LogicalPlan> {
  @Override
  public LogicalPlan apply(LogicalPlan plan) {
    return rewrite(plan);
  }

  private LogicalPlan rewrite(LogicalPlan plan) {
    LogicalPlan p = plan.mapChildren((Function1<LogicalPlan, LogicalPlan>) this::rewrite);
    if (p instanceof Project project && !project.isStreaming()) {
      List<TpCall> calls = new ArrayList<>();
      for (NamedExpression e : Sc.list(project.projectList())) {
        collect((Expression) e, calls);
      }
      if (!calls.isEmpty()) {
        return extract(project);
      }
    }
    return p;
  }

  private static LogicalPlan extract(Project project) {
    List<NamedExpression> list = new ArrayList<>(Sc.list(project.projectList()));
    LogicalPlan child = project.child();
    while (true) {
      List<TpCall> calls = new ArrayList<>();
      for (NamedExpression e : list) {
        collect((Expression) e, calls);
      }
      if (calls.isEmpty()) {
        break;
      }
      List<NamedExpression> pre = new ArrayList<>(Sc.list(child.output()));
      List<Attribute> inputs = new ArrayList<>();
      boolean needPre = false;
      for (int i = 0; i < calls.size(); i++) {
        Expression in = calls.get(i).input();
        if (in instanceof Attribute a && child.outputSet().contains(a)) {
          inputs.add(a);
        } else {
          // named as the query wrote it, so that row errors name the input
          String sql = in.sql();
          Alias alias = new Alias(in, sql.length() <= 80 ? sql : sql.substring(0, 77) + "...", NamedExpression.newExprId(), Sc.seq(), Option.empty(), Sc.seq());
          pre.add(alias);
          inputs.add(alias.toAttribute());
          needPre = true;
        }
      }
      LogicalPlan cur = needPre ? new Project(Sc.seq(pre), child) : child;
      List<Attribute> results = new ArrayList<>();
      for (int i = 0; i < calls.size(); i++) {
        TpCall c = calls.get(i);
        AttributeReference r = new AttributeReference(c.function(), c.dataType(), c.nullable(), Metadata.empty(),
            NamedExpression.newExprId(), Sc.seq());
        cur = new TpInference(new TpCall(c.function(), c.ref(), inputs.get(i)), r, cur);
        results.add(r);
      }
      List<NamedExpression> next = new ArrayList<>();
      for (NamedExpression e : list) {
        next.add((NamedExpression) replace((Expression) e, calls, results));
      }
      list = next;
      child = cur;
    }
    return new Project(Sc.seq(list), child);
  }

  /** Calls of {@code e} that can run now: not inside a lambda, aggregate or window, and not holding another call. */
  private static void collect(Expression e, List<TpCall> out) {
    if (e instanceof LambdaFunction || e instanceof AggregateExpression || e instanceof WindowExpression) {
      return;
    }
    if (e instanceof TpCall c) {
      if (!hasCall(c.input())) {
        if (!out.contains(c)) {
          out.add(c);
        }
        return;
      }
    }
    for (Expression child : Sc.list(e.children())) {
      collect(child, out);
    }
  }

  static boolean hasCall(Expression e) {
    return e.exists((Function1<Expression, Object>) x -> x instanceof TpCall);
  }

  private static Expression replace(Expression e, List<TpCall> calls, List<Attribute> results) {
    int i = calls.indexOf(e);
    if (i >= 0) {
      return results.get(i);
    }
    if (e instanceof LambdaFunction || e instanceof AggregateExpression || e instanceof WindowExpression) {
      return e;
    }
    return e.mapChildren((Function1<Expression, Expression>) c -> replace(c, calls, results));
  }
}
