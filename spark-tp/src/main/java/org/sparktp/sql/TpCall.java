package org.sparktp.sql;

import java.util.Arrays;
import java.util.List;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.codegen.CodegenContext;
import org.apache.spark.sql.catalyst.expressions.codegen.ExprCode;
import org.apache.spark.sql.types.DataType;
import scala.collection.immutable.IndexedSeq;
import scala.collection.immutable.Seq;

/**
 * A {@code tp_predict}/{@code tp_embed} call in a query. It is never evaluated row by row: the rule
 * {@link ExtractTpCalls} replaces it by the output column of a {@link TpInference} node over the rows of
 * its projection (as Spark does with Python UDFs), and {@link TpChecks} rejects it where that cannot be done.
 * Its one child is the input expression.
 */
public final class TpCall extends Expression implements NodeFields, java.io.Serializable {
  private static final long serialVersionUID = 1L;
  private final String function;
  private final TpModelRef ref;
  private final Expression input;

  public TpCall(String function, TpModelRef ref, Expression input) {
    this.function = function;
    this.ref = ref;
    this.input = input;
  }

  @Override
  public List<Object> fields() {
    return Arrays.asList(function, ref, input);
  }

  public String function() {
    return function;
  }

  TpModelRef ref() {
    return ref;
  }

  public Expression input() {
    return input;
  }

  @Override
  public Seq<Expression> children() {
    return Sc.seq(input);
  }

  @Override
  public Expression withNewChildrenInternal(IndexedSeq<Expression> newChildren) {
    return new TpCall(function, ref, newChildren.apply(0));
  }

  @Override
  public boolean nullable() {
    return ref.outNullable();
  }

  @Override
  public DataType dataType() {
    return ref.outType();
  }

  @Override
  public boolean foldable() {
    return false;
  }

  @Override
  public Object eval(InternalRow row) {
    throw new UnsupportedOperationException(function + " runs as a TensorParallelInference node, not row by row;"
        + " it may be used only in the SELECT list of a batch query");
  }

  @Override
  public ExprCode doGenCode(CodegenContext ctx, ExprCode ev) {
    throw new UnsupportedOperationException(function + " has no generated code; it runs as a TensorParallelInference"
        + " node");
  }

  @Override
  public String prettyName() {
    return function;
  }

  @Override
  public String sql() {
    return function + "(" + ref.sqlArgs() + ", " + input.sql() + ref.optionsSql() + ")";
  }

  @Override
  public String toString() {
    return function + "(" + ref.sqlArgs() + ", " + input + ref.optionsSql() + ")";
  }

  @Override
  public boolean equals(Object o) { // hashCode: TreeNode's, over fields()
    return NodeFields.equal(this, o);
  }
}
