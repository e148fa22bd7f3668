package org.sparktp.nn;

import org.sparktp.backend.Backend;
import org.sparktp.shard.Split;
import org.sparktp.tensor.Tensor;

/**
 * Row-parallel linear layer: {@code Y = X A^T + b}, where {@code A} is PyTorch's {@code [out, in]}
 * weight split by input features, {@code A = [A_1 ... A_p]}, and {@code X = [X_1 ... X_p]} split the
 * same way. Rank {@code i} computes the partial sum {@code X_i A_i^T}; {@code Y = sum_i X_i A_i^T + b}.
 * The bias is added once, after the reduction.
 *
 * <p>Input: {@link Layout#SHARDED} {@code [rows, in_i]} when {@code inputIsParallel}, else
 * {@link Layout#REPLICATED} (sliced locally, no communication). Output: {@link Layout#PARTIAL}
 * {@code [rows, out]} carrying the bias to add after the reduction; with {@code reduceOutput}, reduced
 * at once to {@link Layout#REPLICATED}.
 */
public final class RowParallelLinear implements Layer {
  private final String name;
  private final Split inSplit;
  private final boolean inputIsParallel;
  private final boolean reduceOutput;
  private final LinearKernel kernel;

  /**
   * Takes ownership of this rank's shards.
   *
   * @param weight {@code [out, inSplit.length(rank)]}
   * @param bias {@code [1, out]} (the whole bias) or null
   */
  public RowParallelLinear(String name, Split inSplit, int rank, Tensor weight, Tensor bias, boolean inputIsParallel,
      boolean reduceOutput) {
    this(name, inSplit, rank, weight, bias, inputIsParallel, reduceOutput, null);
  }

  /**
   * As above, the weight stored as {@code storage} ({@link LinearKernel#create}; null: as it is). Int8: the
   * shard's block of each row gets its own scale (see {@link org.sparktp.tensor.Int8Quant}).
   */
  public RowParallelLinear(String name, Split inSplit, int rank, Tensor weight, Tensor bias, boolean inputIsParallel,
      boolean reduceOutput, org.sparktp.tensor.DType storage) {
    this.name = name;
    this.inSplit = inSplit;
    this.inputIsParallel = inputIsParallel;
    this.reduceOutput = reduceOutput;
    Shapes.check(name + ".weight", weight, -1, inSplit.length(rank));
    if (bias != null) {
      Shapes.check(name + ".bias", bias, 1, weight.rows());
    }
    this.kernel = LinearKernel.create(weight, bias, null, storage);
  }

  /** Cuts rank {@code rank}'s column block out of the whole weight {@code [out, in]}. */
  public static RowParallelLinear fromFull(Backend be, String name, float[] weight, float[] bias, int in, int out,
      int rank, int p, boolean inputIsParallel, boolean reduceOutput) {
    Split split = Split.balanced(in, p, 1, name + " input features");
    Specs.checkLength(name + ".weight", weight, (long) out * in, "[" + out + ", " + in + "]");
    if (bias != null) {
      Specs.checkLength(name + ".bias", bias, out, "[" + out + "]");
    }
    float[] block = columns(weight, out, in, split.offset(rank), split.length(rank));
    Tensor w = be.upload(block, out, split.length(rank));
    Tensor b = bias == null ? null : be.upload(bias, 1, out);
    return new RowParallelLinear(name, split, rank, w, b, inputIsParallel, reduceOutput);
  }

  /** Columns {@code [c0, c0 + n)} of a row-major {@code [rows, cols]} array. */
  static float[] columns(float[] a, int rows, int cols, int c0, int n) {
    float[] out = new float[rows * n];
    for (int r = 0; r < rows; r++) {
      System.arraycopy(a, r * cols + c0, out, r * n, n);
    }
    return out;
  }

  @Override
  public String describe() {
    return "row linear " + name;
  }

  public Split inSplit() {
    return inSplit;
  }

  @Override
  public DistTensor forward(DistTensor x, RunContext ctx) {
    DistTensor in = inputIsParallel ? x : Mappings.toSharded(x, inSplit, ctx);
    if (in.layout() != Layout.SHARDED || !in.split().equals(inSplit)) {
      throw new IllegalStateException(describe() + " needs an input sharded as " + inSplit + ", got " + in.layout()
          + (in.split() == null ? "" : " " + in.split()));
    }
    boolean single = ctx.size() == 1;
    Tensor y = kernel.apply(in.local(), single, ctx, name);
    in.close();
    if (single) {
      return DistTensor.replicated(y);
    }
    DistTensor out = DistTensor.partial(y, kernel.bias);
    return reduceOutput ? Mappings.toReplicated(out, ctx) : out;
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
