package org.sparktp.sql;

import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.LambdaFunction;
import org.apache.spark.sql.catalyst.expressions.WindowExpression;
import org.apache.spark.sql.catalyst.expressions.aggregate.AggregateExpression;
import org.apache.spark.sql.catalyst.plans.logical.Aggregate;
import org.apache.spark.sql.catalyst.plans.logical.Filter;
import org.apache.spark.sql.catalyst.plans.logical.Join;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.Sort;
import scala.runtime.AbstractFunction1;
import scala.runtime.BoxedUnit;

/**
 * Analysis check: a {@code tp_*} call that {@link ExtractTpCalls} could not pull out of a projection is an
 * error saying where it is and where it may be used.
 */
final class TpChecks extends AbstractFunction1<LogicalPlan, BoxedUnit> {
  static final String WHERE_ALLOWED = "a tensor-parallel call runs as a barrier stage over all rows of a batch query,"
      + " so it may be used only in the SELECT list (on columns or expressions of them); compute it in a subquery and"
      + " aggregate, filter, join or sort its result, e.g. SELECT max(p[0]) FROM (SELECT tp_predict('m', features) AS p"
      + " FROM t)";

  @Override
  public BoxedUnit apply(LogicalPlan plan) {
    plan.foreachWithSubqueries(new AbstractFunction1<LogicalPlan, BoxedUnit>() {
      @Override
      public BoxedUnit apply(LogicalPlan node) {
        if (!(node instanceof TpInference)) {
          for (Expression e : Sc.list(node.expressions())) {
            check(node, e, null);
          }
        }
        return BoxedUnit.UNIT;
      }
    });
    return BoxedUnit.UNIT;
  }

  private static void check(LogicalPlan node, Expression e, String inside) {
    if (e instanceof TpCall c) {
      String where;
      if (inside != null) {
        where = inside;
      } else if (node.isStreaming()) {
        throw Sc.error(c.function() + " cannot be used in a streaming query: barrier stages run on batch queries only;"
            + " call TensorParallelModel.transform on each micro-batch (foreachBatch), or query a batch table");
      } else if (node instanceof Aggregate) {
        where = "in GROUP BY or the SELECT list of an aggregation";
      } else if (node instanceof Join) {
        where = "in a join condition";
      } else if (node instanceof Filter) {
        where = "in a WHERE or HAVING clause";
      } else if (node instanceof Sort) {
        where = "in ORDER BY";
      } else {
        where = "in " + node.nodeName();
      }
      throw Sc.error(c.function() + " cannot be used " + where + ": " + WHERE_ALLOWED);
    }
    String in = inside;
    if (in == null) {
      if (e instanceof LambdaFunction) {
        in = "inside a lambda function (the function of transform, filter, aggregate... on arrays)";
      } else if (e instanceof AggregateExpression) {
        in = "inside an aggregate function";
      } else if (e instanceof WindowExpression) {
        in = "inside a window function";
      }
    }
    for (Expression child : Sc.list(e.children())) {
      check(node, child, in);
    }
  }
}
