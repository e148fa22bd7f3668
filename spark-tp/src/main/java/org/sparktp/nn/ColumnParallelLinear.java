package org.sparktp.nn;

import org.sparktp.backend.Activation;
import org.sparktp.backend.Backend;
import org.sparktp.shard.Split;
import org.sparktp.tensor.Tensor;

/**
 * Column-parallel linear layer: {@code Y = X A^T + b}, where {@code A} is PyTorch's {@code [out, in]}
 * weight split by output features, {@code A = [A_1; ...; A_p]} (the columns of {@code Y}), and
 * {@code b = [b_1 ... b_p]} the same way. Every rank sees the whole {@code X} and computes
 * {@code Y_i = act(X A_i^T + b_i)}; an elementwise activation may be fused into the epilogue.
 *
 * <p>Input: {@link Layout#REPLICATED} {@code [rows, in]}. Output: {@link Layout#SHARDED}
 * {@code [rows, out_i]}, or, with {@code gatherOutput}, all-gathered to {@link Layout#REPLICATED}
 * {@code [rows, out]}. Shards are balanced ({@link Split}); {@code out} need not be divisible by p.
 */
public final class ColumnParallelLinear implements Layer {
  private final String name;
  private final Split outSplit;
  private final boolean gatherOutput;
  private final LinearKernel kernel;

  /**
   * Takes ownership of this rank's shards.
   *
   * @param weight {@code [outSplit.length(rank), in]}
   * @param bias {@code [1, outSplit.length(rank)]} or null
   */
  public ColumnParallelLinear(String name, Split outSplit, int rank, Tensor weight, Tensor bias,
      Activation epilogue, boolean gatherOutput) {
    this(name, outSplit, rank, weight, bias, epilogue, gatherOutput, null);
  }

  /** As above, the weight stored as {@code storage} ({@link LinearKernel#create}; null: as it is). */
  public ColumnParallelLinear(String name, Split outSplit, int rank, Tensor weight, Tensor bias,
      Activation epilogue, boolean gatherOutput, org.sparktp.tensor.DType storage) {
    this.name = name;
    this.outSplit = outSplit;
    this.gatherOutput = gatherOutput;
    Shapes.check(name + ".weight", weight, outSplit.length(rank), -1);
    if (bias != null) {
      Shapes.check(name + ".bias", bias, 1, outSplit.length(rank));
    }
    this.kernel = LinearKernel.create(weight, bias, epilogue, storage);
  }

  /** Cuts rank {@code rank}'s shard out of the whole weight {@code [out, in]} and bias {@code [out]}. */
  public static ColumnParallelLinear fromFull(Backend be, String name, float[] weight, float[] bias, int in, int out,
      int rank, int p, Activation epilogue, boolean gatherOutput) {
    Split split = Split.balanced(out, p, 1, name + " output features");
    Specs.checkLength(name + ".weight", weight, (long) out * in, "[" + out + ", " + in + "]");
    if (bias != null) {
      Specs.checkLength(name + ".bias", bias, out, "[" + out + "]");
    }
    Tensor w = be.upload(weight, split.offset(rank) * in, split.length(rank), in);
    Tensor b = bias == null ? null : be.upload(bias, split.offset(rank), 1, split.length(rank));
    return new ColumnParallelLinear(name, split, rank, w, b, epilogue, gatherOutput);
  }

  @Override
  public String describe() {
    return "column linear " + name;
  }

  public int inFeatures() {
    return kernel.weight.cols();
  }

  public Split outSplit() {
    return outSplit;
  }

  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    if (x.layout() != Layout.REPLICATED) {
      throw new IllegalStateException(describe() + " needs a replicated input, got " + x.layout());
    }
    Tensor y = kernel.apply(x.local(), true, ctx, name);
    x.close();
    DistTensor out = DistTensor.sharded(y, outSplit);
    return gatherOutput ? Mappings.toReplicated(out, ctx) : out;
  }

  @Override
  public long weightBytes() {
    return kernel.bytes();
  }

  @Override
  public void close() {
    kernel.close();
  }
}
