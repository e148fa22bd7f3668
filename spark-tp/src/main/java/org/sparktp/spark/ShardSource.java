package org.sparktp.spark;

import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.util.List;
import java.util.function.Function;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.deploy.SparkHadoopUtil;
import org.sparktp.backend.Backend;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.WeightSource;
import org.sparktp.nn.plan.ModelPlan;
import org.sparktp.tensor.DType;

/** Where a rank gets its weight shard from: its own broadcast, or its own byte ranges of a checkpoint. */
interface ShardSource extends Serializable {

  /** Rank {@code rank}'s shard (called on the executor, once per cache miss). */
  RankWeights load(int rank);

  /**
   * Rank {@code rank}'s shard with the linear weights in {@code dtype} where the source can read them
   * straight into {@code be}'s memory (a checkpoint); the default returns host blocks ({@link #load(int)}).
   */
  default RankWeights load(int rank, Backend be, DType dtype) {
    return load(rank);
  }

  /** One broadcast per rank: an executor fetches only the broadcasts of its ranks. */
  record Broadcasts(List<Broadcast<RankWeights>> perRank) implements ShardSource {
    @Override
    public RankWeights load(int rank) {
      return perRank.get(rank).value();
    }
  }

  /**
   * A model directory of either format (spark-tp or Hugging Face) on any Hadoop file system ({@code file:},
   * {@code hdfs:}, {@code s3a:}): the rank opens it and reads only the byte ranges of its slices, so no process
   * ever holds the whole model.
   */
  record Checkpoint(String dir, ModelPlan plan) implements ShardSource {
    @Override
    public RankWeights load(int rank) {
      return read(rank, w -> plan.shard(w, rank));
    }

    /** The rank's slices read in the checkpoint's own bytes into {@code be}'s tensors (see ModelPlan.shard). */
    @Override
    public RankWeights load(int rank, Backend be, DType dtype) {
      return read(rank, w -> plan.shard(w, rank, be, dtype));
    }

    private RankWeights read(int rank, Function<WeightSource, RankWeights> shard) {
      try (ModelLoader.OpenWeights w = ModelLoader.openWeights(dir, SparkHadoopUtil.get().conf())) {
        return shard.apply(w.source());
      } catch (IOException e) {
        throw new UncheckedIOException("Rank " + rank + " cannot read its shard of " + dir + ": " + e.getMessage(), e);
      }
    }
  }
}
