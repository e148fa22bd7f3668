package org.sparktp.sql;

import java.util.Arrays;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.apache.spark.sql.catalyst.expressions.AttributeReference;
import org.apache.spark.sql.catalyst.expressions.AttributeSet;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import scala.collection.immutable.IndexedSeq;
import scala.collection.immutable.Seq;

/**
 * Logical node of one tensor-parallel call: every row of {@code child} with {@code result} (the call's output)
 * appended. Made by {@link ExtractTpCalls} from a {@link TpCall} in a projection, whose input is then a column
 * of {@code child}; planned by {@link TpStrategy} as a {@link TpInferenceExec}.
 */
public final class TpInference extends LogicalPlan implements NodeFields, java.io.Serializable {
  private static final long serialVersionUID = 1L;
  private final TpCall call;
  private final AttributeReference result;
  private final LogicalPlan child;

  public TpInference(TpCall call, AttributeReference result, LogicalPlan child) {
    this.call = call;
    this.result = result;
    this.child = child;
  }

  @Override
  public List<Object> fields() {
    return Arrays.asList(call, result, child);
  }

  public TpCall call() {
    return call;
  }

  public AttributeReference result() {
    return result;
  }

  public LogicalPlan child() {
    return child;
  }

  @Override
  public Seq<Attribute> output() {
    List<Attribute> out = new ArrayList<>(Sc.list(child.output()));
    out.add(result);
    return Sc.seq(out);
  }

  @Override
  public AttributeSet producedAttributes() {
    return AttributeSet.fromAttributeSets(Sc.seq(AttributeSet.apply(result)));
  }

  @Override
  public Seq<LogicalPlan> children() {
    return Sc.seq(child);
  }

  @Override
  public LogicalPlan withNewChildrenInternal(IndexedSeq<LogicalPlan> newChildren) {
    return new TpInference(call, result, newChildren.apply(0));
  }

  @Override
  public String simpleString(int maxFields) {
    return TpExplain.describe(call, result, null);
  }

  @Override
  public boolean equals(Object o) { // hashCode: TreeNode's, over fields()
    return NodeFields.equal(this, o);
  }
}
