package org.sparktp.spark;

import java.util.List;
import org.apache.spark.Partition;
import org.apache.spark.TaskContext;
import org.apache.spark.rdd.RDD;
import scala.jdk.javaapi.CollectionConverters;
import scala.reflect.ClassTag;

/**
 * Its parent's partitions, each preferring the executor where the same barrier task ran last time
 * ({@code executor_<host>_<id>}), so that a rank finds its model in that executor's {@link ShardCache}.
 * A preference, not a pin: Spark may place a task elsewhere, which then loads its shard.
 */
final class PlacedRDD<T> extends RDD<T> {
  private static final long serialVersionUID = 1L;
  private final String[] locations;
  private final ClassTag<T> tag;

  PlacedRDD(RDD<T> parent, String[] locations, ClassTag<T> tag) {
    super(parent, tag);
    this.locations = locations.clone();
    this.tag = tag;
  }

  @Override
  public scala.collection.Iterator<T> compute(Partition split, TaskContext context) {
    return this.<T>firstParent(tag).iterator(split, context);
  }

  @Override
  public Partition[] getPartitions() {
    return this.<T>firstParent(tag).partitions();
  }

  @Override
  public scala.collection.immutable.Seq<String> getPreferredLocations(Partition split) {
    int i = split.index();
    String loc = i < locations.length ? locations[i] : null;
    return CollectionConverters.asScala(loc == null ? List.<String>of() : List.of(loc)).toSeq();
  }
}
