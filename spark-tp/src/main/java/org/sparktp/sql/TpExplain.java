package org.sparktp.sql;

import java.util.Locale;
import org.apache.spark.ml.param.Param;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.expressions.Attribute;
import org.sparktp.TpConf;
import org.sparktp.TpSettings;
import org.sparktp.spark.SqlSupport;
import org.sparktp.spark.TensorParallelModel;

/**
 * The line EXPLAIN shows for a tensor-parallel call: {@code TensorParallelInference [model=m, tp=2, groups=1,
 * dtype=f32]}, with the values the call's job will run with: the settings resolved as {@code transform} resolves
 * them ({@link TensorParallelModel#settings}) and the weights' dtype with {@code auto} resolved.
 */
final class TpExplain {
  private TpExplain() {}

  static String describe(TpCall call, Attribute result, SparkSession session) {
    TpModelRef ref = call.ref();
    TensorParallelModel m = ref.model();
    SparkSession spark = session != null ? session
        : SparkSession.getActiveSession().isDefined() ? SparkSession.getActiveSession().get() : null;
    // the settings as the call's job resolves them: the model's params and the call's options, local properties,
    // the session conf, the defaults
    TpSettings settings = m.settings(spark);
    int tp = settings.getInt(TpConf.TP_SIZE, 1);
    int g = settings.getInt(TpConf.GROUPS, 0);
    if (g == 0 && spark != null) {
      g = SqlSupport.defaultGroups(spark.sparkContext(), tp);
    }
    String groups = String.valueOf(g);
    String dtype = m.resolveDtype(settings.get(TpConf.BACKEND).trim().toLowerCase(Locale.ROOT), spark).id();
    StringBuilder b = new StringBuilder("TensorParallelInference [model=").append(ref.name())
        .append(", tp=").append(tp).append(", groups=").append(groups).append(", dtype=").append(dtype);
    String task = param(m, "task");
    if (task != null) {
      b.append(", task=").append(task);
    }
    b.append("] ").append(call.input()).append(" -> ").append(result);
    return b.toString();
  }

  private static String param(TensorParallelModel m, String name) {
    if (!m.hasParam(name)) {
      return null;
    }
    Param<Object> p = m.getParam(name);
    return m.isDefined(p) ? String.valueOf(m.getOrDefault(p)) : null;
  }
}
