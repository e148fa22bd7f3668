package org.sparktp.sql;

import java.io.Serializable;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import org.apache.spark.sql.types.DataType;
import org.sparktp.spark.TensorParallelModel;

/**
 * What one {@code tp_*} call runs, fixed at analysis: the model as the query named it, the directory it
 * resolved to, the model opened (and validated) on the driver with the call's options applied (params set by
 * name, {@code spark.tp.*} keys through {@code setConf}), and the output column's type.
 *
 * @param name the model argument as written (a registered name or a path)
 * @param path the qualified model directory
 * @param options the call's options as given (key to value), for display and equality
 * @param conf the {@code spark.tp.*} keys among them (full keys), also set on {@code model}
 * @param model the configured model; {@code inputCol}/{@code outputCol} are set where it runs
 */
record TpModelRef(String name, String path, Map<String, String> options, Map<String, String> conf,
    TensorParallelModel model, DataType outType, boolean outNullable) implements Serializable {

  TpModelRef {
    options = Map.copyOf(new TreeMap<>(options));
    conf = Map.copyOf(conf);
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof TpModelRef r && r.path.equals(path) && r.options.equals(options) && r.outType.equals(outType);
  }

  @Override
  public int hashCode() {
    return Objects.hash(path, options, outType);
  }

  /** {@code 'name'} and, when there are options, {@code map('k', 'v', ...)}, as SQL text. */
  String sqlArgs() {
    StringBuilder b = new StringBuilder("'").append(name.replace("'", "\\'")).append("'");
    return b.toString();
  }

  String optionsSql() {
    if (options.isEmpty()) {
      return "";
    }
    StringBuilder b = new StringBuilder(", map(");
    String sep = "";
    for (Map.Entry<String, String> e : new TreeMap<>(options).entrySet()) {
      b.append(sep).append('\'').append(e.getKey()).append("', '").append(e.getValue()).append('\'');
      sep = ", ";
    }
    return b.append(')').toString();
  }

  @Override
  public String toString() {
    return name;
  }
}
