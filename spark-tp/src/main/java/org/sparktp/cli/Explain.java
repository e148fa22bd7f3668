package org.sparktp.cli;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.backend.Backend;
import org.sparktp.backend.Backends;
import org.sparktp.backend.Precision;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.model.ModelDirectory;
import org.sparktp.model.hf.HfModel;
import org.sparktp.TpConf;
import org.sparktp.nn.plan.MemoryEstimate;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.ops.Op;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.tensor.DType;

/**
 * {@code spark-tp explain --model DIR --tp N [--dtype auto|f32|bf16|f16|int8|int8-wo] [--activation-dtype auto|f32|bf16|f16]
 * [--task T] [--pooling P] [--normalize] [--batch-size B] [--batch-tokens T] [--prompt-tokens P] [--max-new-tokens N]}:
 * the plan, its precision and what a rank needs in memory ({@link MemoryEstimate}).
 */
final class Explain {
  private Explain() {}

  static void run(Args a, PrintStream out) throws Exception {
    String dir = a.require("model");
    int tp = a.intValue("tp", 1, 1);
    String dt = a.get("dtype", "auto");
    String act = Infer.activationDtype(a);
    DType storage;
    try {
      storage = Precision.resolve(dt, null, false, "--dtype"); // validates the value before opening the model
    } catch (IllegalArgumentException e) {
      throw new UsageException(e.getMessage());
    }
    Plan plan;
    DType weights;
    if (HfModel.isHuggingFace(new Path(dir), new Configuration())) {
      try (HfModel m = HfModel.open(dir)) {
        plan = TransformerGraph.plan(m.model(), tp, Infer.task(a), Infer.pooling(a), a.has("normalize"), false);
        weights = m.weightDtype();
      }
    } else {
      Infer.noTransformerFlags(a);
      try (ModelDirectory m = ModelDirectory.open(dir)) {
        plan = Plan.build(m.graph(), tp);
        weights = m.weightDtype();
      }
    }
    String warning = tooWide(plan);
    if (warning != null) {
      out.println(warning);
    }
    storage = Precision.resolve(dt, weights, CpuBackend.hasNativeBf16(), "--dtype");
    out.print(plan.explain());
    if (dt.trim().equalsIgnoreCase("auto")) {
      out.println(Precision.autoReason(weights, CpuBackend.hasNativeBf16(), CpuBackend.onednnIsa()));
    }
    DType activations = Precision.activation(act, storage, "--activation-dtype");
    out.print(plan.explainPrecision(storage, kernel(storage), activations));
    out.print(MemoryEstimate.largest(plan, storage, activations, workload(a)).explain());
  }

  /**
   * The batch settings the memory estimate assumes: {@code --batch-size}, {@code --batch-tokens}, {@code
   * --max-new-tokens} and {@code --prompt-tokens} (0: unknown, bounded by the token budget), else spark-tp's defaults.
   */
  static MemoryEstimate.Workload workload(Args a) {
    return new MemoryEstimate.Workload(a.intValue("batch-size", Integer.parseInt(TpConf.BATCH_SIZE_DEFAULT), 1),
        a.intValue("batch-tokens", Integer.parseInt(TpConf.BATCH_TOKENS_DEFAULT), 1),
        Integer.parseInt(TpConf.GENERATE_BATCH_TOKENS_DEFAULT), a.intValue("prompt-tokens", 0, 0),
        a.intValue("max-new-tokens", GenerateFlags.MAX_NEW_TOKENS_DEFAULT, 1), TpConf.parseBytes(TpConf.KV_CACHE_MAX_BYTES,
            TpConf.KV_CACHE_MAX_BYTES_DEFAULT));
  }

  /** The kernel the CPU backend (from its provider, default settings) would use for weights of {@code dtype}. */
  static String kernel(DType dtype) {
    try (Backend be = Backends.create("cpu", java.util.Map.of(), -1)) {
      return be.kernel(dtype);
    }
  }

  /**
   * A warning when {@code tp} exceeds what the model can split: the ops the plan holds whole on every rank although
   * they were not asked to ({@code "parallel": "replicated"}), because their widths are below {@code tp}, and
   * embeddings with fewer rows than {@code tp}; null when none.
   */
  static String tooWide(Plan plan) {
    int tp = plan.tpSize();
    if (tp == 1) {
      return null;
    }
    int[] count = new int[1];
    int[] smallest = {Integer.MAX_VALUE};
    List<String> whole = new ArrayList<>();
    walk(plan.ops(), tp, count, smallest, whole);
    if (whole.isEmpty()) {
      return null;
    }
    return "warning: --tp " + tp + " exceeds what " + whole.size() + " of " + count[0] + " weight layer(s) can split ("
        + String.join(", ", whole.subList(0, Math.min(4, whole.size()))) + (whole.size() > 4 ? ", ..." : "") + "): "
        + (whole.size() == 1 ? "it is" : "they are") + " replicated on every rank; the smallest weight dimension is "
        + smallest[0];
  }

  private static void walk(List<Op> ops, int tp, int[] count, int[] smallest, List<String> whole) {
    for (Op o : ops) {
      if (o.splitDim() > 0) {
        count[0]++;
        smallest[0] = Math.min(smallest[0], o.splitDim());
      }
      String w = o.unsplit(tp);
      if (w != null) {
        whole.add(w);
      }
      walk(o.children(), tp, count, smallest, whole);
    }
  }
}
