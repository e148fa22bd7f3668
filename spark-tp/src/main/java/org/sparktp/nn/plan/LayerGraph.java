package org.sparktp.nn.plan;

import java.util.List;
import java.util.Locale;
import org.sparktp.nn.InputBatch;
import org.sparktp.nn.Layout;
import org.sparktp.nn.ops.Op;
import org.sparktp.tensor.DType;

/**
 * A model of rows (a spark-tp layer list: vectors, one id or a bag of ids per row) as a graph: its ops, each tensor
 * named {@code <layer>.weight} / {@code <layer>.bias}. Made from a {@code config.json} layer list (a model directory,
 * or a {@code LayerModel} built in code) by {@code org.sparktp.model}, or from ops directly.
 *
 * @param inputDim the width of a vector row, or the vocabulary for ids
 * @param outputDim the width of each row's output
 */
public record LayerGraph(InputBatch.Kind inputKind, int inputDim, int outputDim, List<Op> ops)
    implements ModelGraph {

  public LayerGraph {
    ops = List.copyOf(ops);
  }

  @Override
  public int inputWidth() {
    return inputDim;
  }

  @Override
  public String describeInput() {
    return switch (inputKind) {
      case DENSE -> "vectors of width " + inputDim;
      case IDS -> "one id per row";
      case BAGS -> "a list of ids per row";
    };
  }

  /**
   * The plan as a table: each op with its input and output layouts, the collective it runs, the bytes
   * each rank sends per row for it, then the row exchange and the weight bytes per rank.
   */
  @Override
  public String explain(Plan plan) {
    int tp = plan.tpSize();
    boolean ids = inputKind != InputBatch.Kind.DENSE;
    boolean bags = inputKind == InputBatch.Kind.BAGS;
    Layout outLayout = plan.outputLayout();
    StringBuilder sb = new StringBuilder();
    sb.append(String.format(Locale.ROOT, "Plan for tp=%d: input %s %d, output %d (%s)%n", tp,
        bags ? "id bags, vocabulary" : ids ? "ids, vocabulary" : "width", inputDim, outputDim, outLayout));
    sb.append(String.format(Locale.ROOT, "%-4s %-52s %-11s %-11s %-26s %12s%n", "#", "op", "in", "out",
        "collective", "bytes/row"));
    double[] total = {0};
    int[] idx = {0};
    table(plan.ops(), tp, "", sb, total, idx);
    if (tp > 1) {
      double frac = (tp - 1) / (double) tp;
      double inBytes = ids ? (bags ? 0 : 4) : 4.0 * inputDim;
      String inNote = bags ? "all-gather ids" : "all-gather";
      sb.append(String.format(Locale.ROOT, "%-4s %-52s %-11s %-11s %-26s %12.0f%n", "in", "input rows to the group",
          "-", "REPLICATED", inNote, frac * inBytes));
      String back = switch (outLayout) {
        case REPLICATED -> "local slice";
        case PARTIAL -> "reduce-scatter over rows";
        case SHARDED -> "all-to-all";
      };
      double backBytes = outLayout == Layout.REPLICATED ? 0 : frac * 4.0 * outputDim;
      sb.append(String.format(Locale.ROOT, "%-4s %-52s %-11s %-11s %-26s %12.0f%n", "out", "output rows to their owner",
          outLayout, "-", back, backBytes));
      total[0] += frac * inBytes + backBytes;
    }
    sb.append(String.format(Locale.ROOT, "collectives per forward pass: %d; bytes sent per row per rank: %.0f%n",
        plan.collectiveCount(), total[0]));
    long min = Long.MAX_VALUE;
    long max = 0;
    long sum = 0;
    StringBuilder per = new StringBuilder();
    for (int r = 0; r < tp; r++) {
      long b = plan.weightBytes(r);
      min = Math.min(min, b);
      max = Math.max(max, b);
      sum += b;
      per.append(r == 0 ? "" : ", ").append(b);
    }
    sb.append(String.format(Locale.ROOT, "weight bytes per rank: [%s] (min %d, max %d, total %d)%n", per, min, max,
        sum));
    return sb.toString();
  }

  private static void table(List<Op> list, int tp, String indent, StringBuilder sb, double[] total, int[] idx) {
    for (Op o : list) {
      if (!o.children().isEmpty()) {
        sb.append(String.format(Locale.ROOT, "%-4d %-52s %-11s %-11s %-26s %12s%n", idx[0]++, indent + o.label(tp),
            o.in(), o.out(), "-", "0"));
        table(o.children(), tp, indent + "  ", sb, total, idx);
        sb.append(String.format(Locale.ROOT, "%-4s %-52s%n", "", indent + "} + x"));
        continue;
      }
      double bytes = o.bytesPerRow(tp);
      total[0] += bytes;
      sb.append(String.format(Locale.ROOT, "%-4d %-52s %-11s %-11s %-26s %12.0f%n", idx[0]++, indent + o.label(tp),
          o.in(), o.out(), o.collective(tp), bytes));
    }
  }

  /**
   * The precision lines of explain: the linear weights' storage dtype, the GEMM kernel and the weight bytes
   * per rank in that dtype (embedding tables too; biases and norms stay f32), and the activations' dtype.
   */
  @Override
  public String explainPrecision(Plan plan, DType dtype, String kernel, DType activations) {
    StringBuilder per = new StringBuilder();
    long max = 0;
    for (int r = 0; r < plan.tpSize(); r++) {
      long b = plan.weightBytes(r, dtype);
      max = Math.max(max, b);
      per.append(r == 0 ? "" : ", ").append(b);
    }
    String act = activations == DType.F32 ? "activations f32 between ops"
        : "activations " + activations.id() + " between ops (rounded once at each op boundary; ops compute in f32; "
            + "partial sums reduced in f32, all-gathers move " + activations.id() + ")";
    DType table = org.sparktp.nn.ops.Weights.tableDtype(dtype);
    return String.format(Locale.ROOT, "dtype %s (linear weights; embedding tables %s; GEMMs accumulate in f32; "
        + "biases and norms f32), kernel %s%n%s%nweight bytes per rank in %s: [%s] (max %d; f32 would be %d)%n",
        dtype.id(), table == dtype ? "too" : "in " + table.id(), kernel, act, dtype.id(), per, max,
        plan.weightBytes(0))
        + (dtype == DType.I8 ? "int8 W8A8: weights symmetric with one f32 scale per output channel of each "
            + "shard, quantized at load; activations quantized per row at every linear; s8 x s8 GEMMs with s32 sums "
            + "(about 1e-2 relative error, see docs/precision.md)\n"
            : dtype == DType.I8_WO ? "int8 weight-only: symmetric, one f32 scale per output "
            + "channel of each shard, quantized at load (about 1e-2 relative error, see docs/precision.md)\n" : "");
  }
}
