package org.sparktp.sql;

import java.util.Locale;
import org.apache.spark.SparkContext;
import org.apache.spark.ml.param.Param;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.sparktp.TpConf;
import org.sparktp.spark.SqlSupport;
import org.sparktp.spark.TensorParallelModel;

/** The line EXPLAIN shows for a tensor-parallel call: {@code TensorParallelInference [model=m, tp=2, groups=1, dtype=f32]}. */
final class TpExplain {
  private TpExplain() {}

  static String describe(TpCall call, Attribute result, SparkSession session) {
    TpModelRef ref = call.ref();
    TensorParallelModel m = ref.model();
    SparkSession spark = session != null ? session
        : SparkSession.getActiveSession().isDefined() ? SparkSession.getActiveSession().get() : null;
    int tp = m.getTpSize();
    String groups;
    if (m.isSet(m.groups())) {
      groups = String.valueOf(m.getOrDefault(m.groups()));
    } else {
      int g = TpConf.parseInt(TpConf.GROUPS, TpConf.resolve(spark, ref.conf(), TpConf.GROUPS, TpConf.GROUPS_DEFAULT), 0);
      if (g == 0 && spark != null) {
        SparkContext sc = spark.sparkContext();
        g = SqlSupport.defaultGroups(sc, tp);
      }
      groups = String.valueOf(g);
    }
    StringBuilder b = new StringBuilder("TensorParallelInference [model=").append(ref.name())
        .append(", tp=").append(tp).append(", groups=").append(groups).append(", dtype=").append(dtype(m, ref, spark));
    String task = param(m, "task");
    if (task != null) {
      b.append(", task=").append(task);
    }
    b.append("] ").append(call.input()).append(" -> ").append(result);
    return b.toString();
  }

  /** The model's dtype param when it has one (set or default), else {@code spark.tp.dtype}, else f32. */
  private static String dtype(TensorParallelModel m, TpModelRef ref, SparkSession spark) {
    String p = param(m, "dtype");
    if (p != null) {
      return p.toLowerCase(Locale.ROOT);
    }
    return TpConf.resolve(spark, ref.conf(), "spark.tp.dtype", "f32").toLowerCase(Locale.ROOT);
  }

  private static String param(TensorParallelModel m, String name) {
    if (!m.hasParam(name)) {
      return null;
    }
    Param<Object> p = m.getParam(name);
    return m.isDefined(p) ? String.valueOf(m.getOrDefault(p)) : null;
  }
}
