package org.sparktp.cli;

import java.io.PrintStream;
import org.sparktp.model.ModelDirectory;
import org.sparktp.nn.Plan;

/** {@code spark-tp explain --model DIR --tp N}. */
final class Explain {
  private Explain() {}

  static void run(Args a, PrintStream out) throws Exception {
    String dir = a.require("model");
    int tp = a.intValue("tp", 1, 1);
    try (ModelDirectory m = ModelDirectory.open(dir)) {
      out.print(Plan.build(m.toSpec(), tp).explain());
    }
  }
}
