package org.sparktp.spark;

import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.util.List;
import org.apache.spark.broadcast.Broadcast;
import org.apache.spark.deploy.SparkHadoopUtil;
import org.sparktp.backend.Backend;
import org.sparktp.model.ModelDirectory;
import org.sparktp.tensor.DType;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.RankWeights;

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

  /** A Hugging Face model directory: the rank reads only the byte ranges of its slices. */
  record HfCheckpoint(String dir, org.sparktp.nn.plan.Plan plan) implements ShardSource {
    @Override
    public RankWeights load(int rank) {
      try (org.sparktp.model.hf.HfModel d = org.sparktp.model.hf.HfModel.open(new org.apache.hadoop.fs.Path(dir),
          SparkHadoopUtil.get().conf())) {
        return plan.shard(d.weightSource(), rank);
      } catch (IOException e) {
        throw new UncheckedIOException("Rank " + rank + " cannot read its shard of " + dir + ": " + e.getMessage(), e);
      }
    }

    /** The rank's slices read in the checkpoint's own bytes into {@code be}'s tensors (see Plan.shard). */
    @Override
    public RankWeights load(int rank, Backend be, DType dtype) {
      try (org.sparktp.model.hf.HfModel d = org.sparktp.model.hf.HfModel.open(new org.apache.hadoop.fs.Path(dir),
          SparkHadoopUtil.get().conf())) {
        return plan.shard(d.weightSource(), rank, be, dtype);
      } catch (IOException e) {
        throw new UncheckedIOException("Rank " + rank + " cannot read its shard of " + dir + ": " + e.getMessage(), e);
      }
    }
  }

  /**
   * A model directory on any Hadoop file system ({@code file:}, {@code hdfs:}, {@code s3a:}): the rank
   * opens it and reads only the byte ranges of its shards, so no process ever holds the whole model.
   */
  record Checkpoint(String dir, Plan plan) implements ShardSource {
    @Override
    public RankWeights load(int rank) {
      try (ModelDirectory d = ModelDirectory.open(new org.apache.hadoop.fs.Path(dir),
          SparkHadoopUtil.get().conf())) {
        return plan.shard(d.weightSource(), rank);
      } catch (IOException e) {
        throw new UncheckedIOException("Rank " + rank + " cannot read its shard of " + dir + ": " + e.getMessage(), e);
      }
    }

    @Override
    public RankWeights load(int rank, Backend be, DType dtype) {
      try (ModelDirectory d = ModelDirectory.open(new org.apache.hadoop.fs.Path(dir),
          SparkHadoopUtil.get().conf())) {
        return plan.shard(d.weightSource(), rank, be, dtype);
      } catch (IOException e) {
        throw new UncheckedIOException("Rank " + rank + " cannot read its shard of " + dir + ": " + e.getMessage(), e);
      }
    }
  }
}
