package org.sparktp.cli;

import java.io.PrintStream;
import org.sparktp.model.ModelDirectory;
import org.sparktp.backend.Precision;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.nn.Plan;
import org.sparktp.tensor.DType;

/** {@code spark-tp explain --model DIR --tp N [--dtype auto|f32|bf16|f16]}. */
final class Explain {
  private Explain() {}

  static void run(Args a, PrintStream out) throws Exception {
    String dir = a.require("model");
    int tp = a.intValue("tp", 1, 1);
    String dt = a.get("dtype", "auto");
    DType storage;
    try {
      storage = Precision.resolve(dt, null, false, "--dtype"); // validates the value before opening the model
    } catch (IllegalArgumentException e) {
      throw new UsageException(e.getMessage());
    }
    try (ModelDirectory m = ModelDirectory.open(dir)) {
      Plan plan = Plan.build(m.structure(), tp);
      storage = Precision.resolve(dt, m.weightDtype(), CpuBackend.hasNativeBf16(), "--dtype");
      out.print(plan.explain());
      out.print(plan.explainPrecision(storage, kernel(storage)));
    }
  }

  /** The kernel the CPU backend would use for weights of {@code dtype} with the default settings. */
  static String kernel(DType dtype) {
    try (CpuBackend be = new CpuBackend()) {
      return be.kernel(dtype);
    }
  }
}
