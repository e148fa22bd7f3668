package org.sparktp.cli;

import java.io.PrintStream;
import java.util.ArrayList;
import java.util.List;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparktp.backend.Backend;
import org.sparktp.backend.Backends;
import org.sparktp.backend.Precision;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.model.ModelDirectory;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.LayerSpec;
import org.sparktp.nn.ModelSpec;
import org.sparktp.nn.Plan;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.ops.TransformerPlan;
import org.sparktp.tensor.DType;

/**
 * {@code spark-tp explain --model DIR --tp N [--dtype auto|f32|bf16|f16|int8] [--activation-dtype auto|f32|bf16|f16]
 * [--task T] [--pooling P] [--normalize]}.
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
    if (HfModel.isHuggingFace(new Path(dir), new Configuration())) {
      try (HfModel m = HfModel.open(dir)) {
        TransformerPlan plan = TransformerPlan.build(m.model(), tp, Infer.task(a), Infer.pooling(a),
            a.has("normalize"), false);
        storage = Precision.resolve(dt, m.weightDtype(), CpuBackend.hasNativeBf16(), "--dtype");
        out.print(plan.explain());
        out.print(plan.explainPrecision(storage, kernel(storage)));
        DType acts = Precision.activation(act, storage, "--activation-dtype");
        out.println(acts == DType.F32 ? "activations f32 between ops" : "activations " + acts.id()
            + " between ops (rounded once at each op boundary; ops compute in f32; partial sums reduced in f32)");
      }
      return;
    }
    Infer.noTransformerFlags(a);
    try (ModelDirectory m = ModelDirectory.open(dir)) {
      ModelSpec spec = m.structure();
      String warning = tooWide(spec, tp);
      if (warning != null) {
        out.println(warning);
      }
      Plan plan = Plan.build(spec, tp);
      storage = Precision.resolve(dt, m.weightDtype(), CpuBackend.hasNativeBf16(), "--dtype");
      out.print(plan.explain());
      out.print(plan.explainPrecision(storage, kernel(storage),
          Precision.activation(act, storage, "--activation-dtype")));
    }
  }

  /** The kernel the CPU backend (from its provider, default settings) would use for weights of {@code dtype}. */
  static String kernel(DType dtype) {
    try (Backend be = Backends.create("cpu", java.util.Map.of(), -1)) {
      return be.kernel(dtype);
    }
  }

  /**
   * A warning when {@code tp} exceeds what the model can split: the linears the plan replicates on
   * every rank although they were not asked to be ({@code "parallel": "replicated"}), because their
   * widths are below {@code tp}, and embeddings with fewer rows than {@code tp}; null when none.
   */
  static String tooWide(ModelSpec spec, int tp) {
    if (tp == 1) {
      return null;
    }
    java.util.Set<String> asked = new java.util.HashSet<>();
    int[] count = new int[1];
    int[] smallest = {Integer.MAX_VALUE};
    walkSpec(spec.layers(), asked, count, smallest);
    List<String> whole = new ArrayList<>();
    walkPlan(Plan.build(spec, tp).steps(), tp, asked, whole);
    if (whole.isEmpty()) {
      return null;
    }
    return "warning: --tp " + tp + " exceeds what " + whole.size() + " of " + count[0] + " weight layer(s) can split ("
        + String.join(", ", whole.subList(0, Math.min(4, whole.size()))) + (whole.size() > 4 ? ", ..." : "") + "): "
        + (whole.size() == 1 ? "it is" : "they are") + " replicated on every rank; the smallest weight dimension is "
        + smallest[0];
  }

  private static void walkSpec(List<LayerSpec> layers, java.util.Set<String> asked, int[] count, int[] smallest) {
    for (LayerSpec l : layers) {
      if (l instanceof LayerSpec.Linear x) {
        count[0]++;
        smallest[0] = Math.min(smallest[0], Math.min(x.in(), x.out()));
        if (x.parallel() == org.sparktp.nn.Parallel.REPLICATED) {
          asked.add(x.name());
        }
      } else if (l instanceof LayerSpec.Embedding e) {
        count[0]++;
        smallest[0] = Math.min(smallest[0], e.vocab());
      } else if (l instanceof LayerSpec.Residual r) {
        walkSpec(r.body(), asked, count, smallest);
      }
    }
  }

  private static void walkPlan(List<org.sparktp.nn.Step> steps, int tp, java.util.Set<String> asked,
      List<String> whole) {
    for (org.sparktp.nn.Step s : steps) {
      if (s instanceof org.sparktp.nn.Step.Linear x) {
        if (x.mode() == org.sparktp.nn.Step.Mode.REPLICATED && !asked.contains(x.name())) {
          whole.add(x.name() + " [" + x.inFeatures() + "->" + x.outFeatures() + "]");
        }
      } else if (s instanceof org.sparktp.nn.Step.Embed e) {
        if (e.vocab() < tp) {
          whole.add(e.name() + " [vocab " + e.vocab() + "]");
        }
      } else if (s instanceof org.sparktp.nn.Step.Residual r) {
        walkPlan(r.body(), tp, asked, whole);
      }
    }
  }
}
