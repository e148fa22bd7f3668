package org.sparktp;

import java.io.Serializable;
import java.util.Collections;
import java.util.Map;
import java.util.TreeMap;
import java.util.function.Function;
import org.apache.spark.SparkContext;
import org.apache.spark.sql.SparkSession;

/**
 * Every {@code spark.tp.*} setting of one job, resolved once on the driver and checked before any job
 * runs: an option on the call (a model's {@link org.sparktp.spark.TensorParallelModel#setConf}, a CLI
 * flag) wins over a local property of the calling thread ({@code sc.setLocalProperty}), which wins over
 * the session conf, which wins over the default ({@link TpConf}). Serializable: it travels to the
 * executors with the job, so they use exactly what the driver resolved (their own conf is not read).
 */
public final class TpSettings implements Serializable {
  private static final long serialVersionUID = 1L;

  private final Map<String, String> values;

  private TpSettings(Map<String, String> values) {
    this.values = Collections.unmodifiableMap(new TreeMap<>(values));
  }

  /**
   * Resolves and checks every known key (and every {@code spark.tp.*} key that is set, which must be
   * known): throws {@link IllegalArgumentException} naming the first wrong key. {@code options} (the options on the
   * call: a model's params and {@code setConf}, a CLI flag, a SQL call's options) win over a local property of the
   * calling thread, which wins over the session conf of {@code spark} (null: neither), which wins over the default.
   */
  public static TpSettings resolve(SparkSession spark, Map<String, String> options) {
    if (spark == null) {
      return resolve(Map.of(), key -> null, options);
    }
    Map<String, String> session = new TreeMap<>();
    scala.collection.Iterator<scala.Tuple2<String, String>> it = spark.conf().getAll().iterator();
    while (it.hasNext()) {
      scala.Tuple2<String, String> kv = it.next();
      session.put(kv._1(), kv._2());
    }
    SparkContext sc = spark.sparkContext();
    return resolve(session, sc::getLocalProperty, options);
  }

  /**
   * The settings inside a task that was given none: {@code options} over the local properties its job carries from
   * the driver's calling thread ({@code sc.setLocalProperty}), over the defaults. The executor's own conf is not
   * read (it does not hold the driver's session conf): a job that needs those resolves its settings on the driver
   * ({@link #resolve(SparkSession, Map)}) and ships them, as {@code TensorParallelModel} does.
   */
  public static TpSettings inTask(org.apache.spark.TaskContext ctx, Map<String, String> options) {
    return resolve(Map.of(), ctx == null ? key -> null : ctx::getLocalProperty, options);
  }

  /** The one resolver: options, then local properties, then the session conf, then the defaults; checked. */
  private static TpSettings resolve(Map<String, String> session, Function<String, String> local,
      Map<String, String> options) {
    Map<String, String> v = new TreeMap<>();
    for (Map.Entry<String, String> e : TpConf.knownKeys().entrySet()) {
      if (e.getValue() != null) {
        v.put(e.getKey(), e.getValue());
      }
    }
    for (Map.Entry<String, String> e : session.entrySet()) {
      if (e.getKey().startsWith("spark.tp.")) {
        v.put(e.getKey(), e.getValue());
      }
    }
    for (String key : TpConf.knownKeys().keySet()) {
      String l = local.apply(key);
      if (l != null) {
        v.put(key, l);
      }
    }
    if (options != null) {
      for (Map.Entry<String, String> e : options.entrySet()) {
        if (e.getValue() != null) {
          v.put(e.getKey(), e.getValue());
        }
      }
    }
    TpConf.checkAll(v);
    return new TpSettings(v);
  }

  /** Settings from a plain map over the defaults (tests, programs without Spark); checked. */
  public static TpSettings of(Map<String, String> options) {
    return resolve(null, options);
  }

  /** These settings with {@code key} set to {@code value} (an option on the call); checked. */
  public TpSettings with(String key, String value) {
    TpConf.check(key, value);
    Map<String, String> v = new TreeMap<>(values);
    v.put(key, value);
    return new TpSettings(v);
  }

  /** The resolved value of {@code key}, or null when it has no default and is not set. */
  public String get(String key) {
    return values.get(key);
  }

  public int getInt(String key, int min) {
    return TpConf.parseInt(key, values.get(key), min);
  }

  public long durationMillis(String key) {
    return TpConf.parseDurationMillis(key, values.get(key));
  }

  public long bytes(String key) {
    return TpConf.parseBytes(key, values.get(key));
  }

  public boolean bool(String key) {
    return TpConf.parseBoolean(key, values.get(key));
  }

  /** The entries whose key starts with {@code prefix} (e.g. {@code spark.tp.comm.}). */
  public Map<String, String> withPrefix(String prefix) {
    Map<String, String> m = new TreeMap<>();
    for (Map.Entry<String, String> e : values.entrySet()) {
      if (e.getKey().startsWith(prefix)) {
        m.put(e.getKey(), e.getValue());
      }
    }
    return m;
  }

  /** Every resolved entry. */
  public Map<String, String> asMap() {
    return values;
  }

  @Override
  public String toString() {
    return "TpSettings" + values;
  }
}
