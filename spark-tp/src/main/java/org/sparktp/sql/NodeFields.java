package org.sparktp.sql;

import java.util.List;

/**
 * Scala's {@link scala.Product} for this package's Java tree nodes ({@link TpCall}, {@link TpInference},
 * {@link TpInferenceExec}): Catalyst copies, compares, hashes and prints a node through its constructor arguments,
 * as a case class's. A node lists them once, in {@link #fields()}; arity, elements and equality follow from that
 * list (Spark's {@code TreeNode.hashCode} hashes the same elements, so a node does not override it).
 */
interface NodeFields extends scala.Product {
  /** The constructor's arguments, in order. */
  List<Object> fields();

  @Override
  default int productArity() {
    return fields().size();
  }

  @Override
  default Object productElement(int n) {
    return fields().get(n);
  }

  @Override
  default boolean canEqual(Object that) {
    return that != null && that.getClass() == getClass();
  }

  /** A case class's equality, for a node's {@code equals}: the same class and equal fields. */
  static boolean equal(NodeFields node, Object that) {
    return node == that || node.canEqual(that) && node.fields().equals(((NodeFields) that).fields());
  }
}
