package org.sparktp.sql;

import java.util.List;
import org.apache.spark.QueryContext;
import org.apache.spark.sql.AnalysisException;
import scala.Option;
import scala.jdk.javaapi.CollectionConverters;

/** Small bridges to Scala collections and Spark's analysis errors, for the Catalyst classes written in Java. */
final class Sc {
  private Sc() {}

  static <T> scala.collection.immutable.Seq<T> seq(List<T> list) {
    return CollectionConverters.asScala(list).toList();
  }

  @SafeVarargs
  static <T> scala.collection.immutable.Seq<T> seq(T... items) {
    return seq(List.of(items));
  }

  static <T> List<T> list(scala.collection.Seq<T> seq) {
    return CollectionConverters.asJava(seq);
  }

  /**
   * Throws an analysis-time error ({@link AnalysisException}, checked in Java, hence thrown here) with a plain
   * message: what is wrong and what to change. Declared to return an exception so that callers can write
   * {@code throw Sc.error(...)}.
   */
  static RuntimeException error(String message) {
    return error(message, null);
  }

  static RuntimeException error(String message, Throwable cause) {
    return Sc.<RuntimeException>sneak(new AnalysisException(message, Option.empty(), Option.empty(),
        Option.apply(cause), Option.empty(), scala.collection.immutable.Map$.MODULE$.empty(), new QueryContext[0]));
  }

  @SuppressWarnings("unchecked")
  private static <E extends Throwable> RuntimeException sneak(Throwable t) throws E {
    throw (E) t;
  }
}
