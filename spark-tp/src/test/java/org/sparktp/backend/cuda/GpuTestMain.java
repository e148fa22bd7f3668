package org.sparktp.backend.cuda;

import static org.junit.platform.engine.discovery.DiscoverySelectors.selectClass;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectMethod;
import static org.junit.platform.engine.discovery.DiscoverySelectors.selectPackage;

import java.io.PrintWriter;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.TagFilter;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;

/**
 * Runs the {@code gpu}-tagged tests of {@code backend.cuda} and {@code comm.nccl} without Maven (the GPU machine of
 * {@code bin/spark-tp gpu-check} may have only a Java runtime) and prints JUnit's summary; exits 0 when every test
 * passed (skips count as passed only when {@code --allow-skips} is given), 1 otherwise.
 */
public final class GpuTestMain {
  private GpuTestMain() {}

  public static void main(String[] args) {
    boolean allowSkips = java.util.Arrays.asList(args).contains("--allow-skips");
    boolean all = java.util.Arrays.asList(args).contains("--all"); // also the CPU tests of these packages
    if (java.util.Arrays.asList(args).contains("--census")) {
      census();
      return;
    }
    LauncherDiscoveryRequestBuilder b = LauncherDiscoveryRequestBuilder.request()
        .selectors(selectPackage("org.sparktp.backend.cuda"), selectPackage("org.sparktp.comm.nccl"),
            selectPackage("org.sparktp.nn"));
    if (!all) {
      b.filters(TagFilter.includeTags("gpu"));
    }
    Launcher launcher = LauncherFactory.create();
    SummaryGeneratingListener summary = new SummaryGeneratingListener();
    // the backend contract suite (every Backend method of every backend present against float64; its CUDA cases
    // need the GPU and are not tagged, so it runs whole) and the gpu-tagged tests
    SummaryGeneratingListener contract = new SummaryGeneratingListener();
    launcher.execute(LauncherDiscoveryRequestBuilder.request()
        .selectors(selectClass("org.sparktp.backend.BackendContractTest")).build(), contract);
    launcher.execute(b.build(), summary);
    PrintWriter out = new PrintWriter(System.out, true);
    TestExecutionSummary c = contract.getSummary();
    c.printFailuresTo(out, 30);
    c.printTo(out);
    TestExecutionSummary s = summary.getSummary();
    s.printFailuresTo(out, 30);
    s.printTo(out);
    long skipped = s.getTestsSkippedCount() + s.getTestsAbortedCount() + c.getTestsSkippedCount()
        + c.getTestsAbortedCount();
    long found = s.getTestsFoundCount() + c.getTestsFoundCount();
    long failed = s.getTotalFailureCount() + c.getTotalFailureCount();
    out.printf("GPU tests: %d found, %d passed, %d failed, %d skipped (contract suite: %d passed, %d failed, %d"
        + " skipped)%n", found, s.getTestsSucceededCount() + c.getTestsSucceededCount(), failed, skipped,
        c.getTestsSucceededCount(), c.getTotalFailureCount(), c.getTestsSkippedCount() + c.getTestsAbortedCount());
    boolean ok = failed == 0 && s.getTestsFoundCount() > 0 && (allowSkips || skipped == 0);
    System.exit(ok ? 0 : 1);
  }

  /**
   * Runs, on the CPU, what the GPU run loads besides CUDA (JUnit and the GPU tests' discovery, the contract suite,
   * Hugging Face checkpoints read and generated from on the CPU backend), so that {@code bin/spark-tp gpu-check
   * --prepare} can list the classes the kit needs ({@code -Xlog:class+load}) and check the kit afterwards.
   */
  static void census() {
    Launcher launcher = LauncherFactory.create();
    SummaryGeneratingListener summary = new SummaryGeneratingListener();
    launcher.execute(LauncherDiscoveryRequestBuilder.request().selectors(
        selectClass("org.sparktp.backend.BackendContractTest"),
        selectMethod("org.sparktp.nn.gen.GenerateTest#greedyEqualsTheFloat64ReferenceTokenForToken(java.lang.String,"
            + " int, boolean)"),
        selectMethod("org.sparktp.nn.ops.HfEngineTest#aFailedBf16BuildLeaksNothing"),
        selectPackage("org.sparktp.backend.cuda"), selectPackage("org.sparktp.comm.nccl"))
        .filters(TagFilter.excludeTags("slow")).build(), summary);
    PrintWriter out = new PrintWriter(System.out, true);
    TestExecutionSummary s = summary.getSummary();
    s.printFailuresTo(out, 10);
    out.printf("census: %d found, %d passed, %d failed, %d skipped%n", s.getTestsFoundCount(),
        s.getTestsSucceededCount(), s.getTotalFailureCount(), s.getTestsSkippedCount() + s.getTestsAbortedCount());
    if (s.getTotalFailureCount() > 0) {
      System.exit(1);
    }
  }
}
