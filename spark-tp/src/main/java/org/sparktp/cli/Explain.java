package org.sparktp.cli;

import java.io.PrintStream;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.sparktp.model.ModelDirectory;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.Plan;
import org.sparktp.nn.ops.Pooling;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.ops.TransformerPlan;

/** {@code spark-tp explain --model DIR --tp N [--task T] [--pooling P] [--normalize]}. */
final class Explain {
  private Explain() {}

  static void run(Args a, PrintStream out) throws Exception {
    String dir = a.require("model");
    int tp = a.intValue("tp", 1, 1);
    if (HfModel.isHuggingFace(new Path(dir), new Configuration())) {
      try (HfModel m = HfModel.open(dir)) {
        out.print(TransformerPlan.build(m.model(), tp, Infer.task(a), Infer.pooling(a), a.has("normalize"), false)
            .explain());
      }
      return;
    }
    Infer.noTransformerFlags(a);
    try (ModelDirectory m = ModelDirectory.open(dir)) {
      out.print(Plan.build(m.toSpec(), tp).explain());
    }
  }
}
