package org.sparktp.cli;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.Locale;
import java.util.Set;

/**
 * The spark-tp command line: {@code infer}, {@code demo}, {@code explain}, {@code doctor} and
 * {@code bench}. Runs under {@code spark-submit} (the session comes from it) or on an embedded Spark
 * started by {@code bin/spark-tp} ({@code --master local[*]} by default).
 *
 * <p>Exit codes: 0 success, 1 the job failed (the message says why), 2 a wrong command line or setting
 * (a one-line error and the usage); a command stopped by SIGINT/SIGTERM says "interrupted".
 */
public final class SparkTpCli {
  static final String USAGE = String.join("\n",
      "usage: spark-tp <command> [flags]",
      "",
      "commands:",
      "  infer    --model DIR --input PATH --output PATH [--format parquet|json|csv] [--output-format parquet|json|csv]",
      "           [--features-col features] [--output-col prediction] [--tp N] [--groups G] [--batch-size B]",
      "           [--backend auto|cpu|cuda] [--dtype auto|f32|bf16|f16|int8|int8-wo] [--mode error|overwrite] [--master URL]",
      "           [--activation-dtype auto|f32|bf16|f16] [--resume [--ranges R (32)]] [--conf key=value]...",
      "           [--task embed|logits|score|generate] [--pooling mean|cls|last] [--normalize]   (Hugging Face models)",
      "           [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop STR]",
      "           [--repetition-penalty R]   (--task generate)",
      "           [--chat-template-kwargs JSON]   (a messages column: extra chat template variables)",
      "           run a model on a table; the output keeps every input column plus the output column (generate:",
      "           generated_ids, generated_text, finish_reason); --resume commits it in ranges and finishes a",
      "           stopped job, computing only the ranges it had not committed",
      "  demo     [--tp N] [--rows N] [--batch-size B] [--master URL] [--conf key=value]...",
      "           a random model (two MLP blocks, width 1024) run at --tp (default 2) and at 1, checked to agree",
      "  explain  --model DIR --tp N [--dtype auto|f32|bf16|f16|int8|int8-wo] [--activation-dtype auto|f32|bf16|f16]",
      "           [--task embed|logits|score|generate] [--batch-size B] [--batch-tokens T] [--prompt-tokens P]",
      "           [--max-new-tokens N]",
      "           the plan: ops, layouts, collectives, bytes per row; dtype, GEMM kernel, weight bytes per rank",
      "           (heads and KV replicas per rank for transformers); memory per rank (weights, KV cache, activations)",
      "  doctor   [--master URL]",
      "           Java, Spark, OpenBLAS, oneDNN (isa, kernels, threads), which backends load here, task slots",
      "  bench    gemm|comm|spark|peer|transformer|gpu|generate|large [flags of that benchmark]",
      "  gpu-check                 (bin/spark-tp only) GPU tests and benchmark on a GPU machine",
      "  sql      [--master URL] [--conf key=value]... (-e \"STATEMENTS\" | -f FILE) [--max-rows N (1000)] [--truncate N (0)]",
      "           ;-separated SQL with tp_predict, tp_embed, tp_explain, tp_models(); prints each result as a table",
      "  notebook-kernel --install   (bin/spark-tp only) installs the spark-tp Jupyter kernel for this user",
      "",
      "master URLs: local[*] (default), local[N], local-cluster[N,C,MB] (N executor processes), spark://..., yarn",
      "");

  private SparkTpCli() {}

  /** Set by the shutdown hook: the JVM is going down on a signal (SIGINT, SIGTERM) while a command runs. */
  private static final java.util.concurrent.atomic.AtomicBoolean SIGNALLED =
      new java.util.concurrent.atomic.AtomicBoolean();
  private static final java.util.concurrent.CountDownLatch DONE = new java.util.concurrent.CountDownLatch(1);

  public static void main(String[] args) {
    // before any JavaCPP class loads: a local master runs the ranks in this JVM, whose off-heap cap would otherwise
    // follow -Xmx (bin/spark-tp's 4g)
    org.sparktp.spark.RankMemory.sizeFromMachine();
    // On SIGINT/SIGTERM Spark's own hook stops the context, which fails the running job; this hook marks
    // the failure as an interrupt and gives the command a few seconds to clean up and say so.
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      SIGNALLED.set(true);
      try {
        DONE.await(10, java.util.concurrent.TimeUnit.SECONDS);
      } catch (InterruptedException e) {
        Thread.currentThread().interrupt();
      }
    }, "spark-tp-shutdown"));
    int code = run(args, System.out, System.err);
    DONE.countDown();
    if (code != 0) {
      System.exit(code); // the entry point only; library code never exits
    }
  }

  /** Runs one command; returns the exit code. */
  public static int run(String[] args, PrintStream out, PrintStream err) {
    if (args.length == 0 || args[0].equals("help") || args[0].equals("--help") || args[0].equals("-h")) {
      (args.length == 0 ? err : out).print(USAGE);
      return args.length == 0 ? 2 : 0;
    }
    String cmd = args[0];
    try {
      switch (cmd) {
        case "infer" -> Infer.run(Args.parse(cmd, args, 1, Set.of("model", "input", "output", "format",
            "output-format", "features-col", "output-col", "tp", "groups", "batch-size", "backend", "dtype", "mode",
            "activation-dtype", "master", "conf", "task", "pooling", "max-new-tokens", "temperature", "top-k", "top-p", "seed", "stop",
            "repetition-penalty", "ranges", "chat-template-kwargs"), Set.of("normalize", "resume")), out, err);
        case "demo" -> Demo.run(Args.parse(cmd, args, 1, Set.of("tp", "rows", "batch-size", "master", "conf"),
            Set.of()), out, err);
        case "explain" -> Explain.run(Args.parse(cmd, args, 1, Set.of("model", "tp", "task", "pooling", "dtype",
            "activation-dtype", "batch-size", "batch-tokens", "prompt-tokens", "max-new-tokens"),
            Set.of("normalize")), out);
        case "doctor" -> Doctor.run(Args.parse(cmd, args, 1, Set.of("master", "conf"), Set.of()), out);
        case "bench" -> Bench.run(Arrays.copyOfRange(args, 1, args.length));
        case "sql" -> Sql.run(Sql.parse(args), out);
        case "notebook-kernel" -> throw new UsageException("notebook-kernel is a command of the bin/spark-tp launcher"
            + " (it builds the kernel's class path): run bin/spark-tp notebook-kernel --install");
        default -> throw new UsageException("unknown command '" + cmd + "'");
      }
      return 0;
    } catch (UsageException e) {
      err.println("spark-tp: error: " + e.getMessage());
      err.print(USAGE);
      return 2;
    } catch (Exception e) {
      if (SIGNALLED.get()) {
        boolean resume = Arrays.asList(args).contains("--resume");
        err.println("spark-tp " + cmd + " interrupted (SIGINT or SIGTERM): the job was stopped" + (!cmd.equals("infer")
            ? "" : resume ? "; the ranges committed so far are kept: run the same command again to finish"
            : "; nothing was written and an existing output is unchanged"));
        if (System.getenv("SPARK_TP_DEBUG") != null) {
          e.printStackTrace(err);
        }
        return 130;
      }
      err.println("spark-tp " + cmd + " failed: " + message(e));
      if (System.getenv("SPARK_TP_DEBUG") != null) {
        e.printStackTrace(err);
      } else {
        err.println("(set SPARK_TP_DEBUG=1 for the stack trace)");
      }
      return 1;
    }
  }

  /**
   * The line to print for a failure: the message of the outermost exception that spark-tp itself threw
   * (its throw site is in {@code org.sparktp}; such messages name the key, file, column or row), else the
   * outermost one that is not one of Spark's wrappers, else the outermost; its first line only.
   */
  /** How Spark words a job whose stage spark-tp cancelled on a deterministic failure (spark/DeterministicFailures). */
  private static final java.util.regex.Pattern DETERMINISTIC = java.util.regex.Pattern.compile(
      "^Job \\d+ cancelled because spark-tp: a deterministic failure \\(not retried\\): ");

  public static String message(Throwable e) {
    Throwable pick = null;
    for (Throwable t = e; t != null && pick == null; t = t.getCause()) {
      if (thrownBySparkTp(t) && t.getMessage() != null) {
        pick = t;
      }
    }
    for (Throwable t = e; t != null && pick == null; t = t.getCause()) {
      if (!(t instanceof org.apache.spark.SparkException && t.getCause() != null)
          && !(t instanceof java.util.concurrent.ExecutionException) && t.getMessage() != null) {
        pick = t;
      }
    }
    if (pick == null) {
      pick = e;
    }
    String m = pick.getMessage();
    if (m == null) {
      return pick.getClass().getSimpleName();
    }
    String line = m.lines().findFirst().orElse(m).trim();
    java.util.regex.Matcher cancelled = DETERMINISTIC.matcher(line);
    if (cancelled.find()) {
      return line.substring(cancelled.end()); // a stage spark-tp cancelled: its own message
    }
    return thrownBySparkTp(pick) ? line : pick.getClass().getSimpleName() + ": " + line;
  }

  private static boolean thrownBySparkTp(Throwable t) {
    StackTraceElement[] st = t.getStackTrace();
    return st.length > 0 && st[0].getClassName().startsWith("org.sparktp.");
  }

  static String fmtBytes(long b) {
    if (b < 1024) {
      return b + " B";
    }
    double v = b;
    String[] units = {"KiB", "MiB", "GiB", "TiB"};
    int u = -1;
    while (v >= 1024 && u < units.length - 1) {
      v /= 1024;
      u++;
    }
    return String.format(Locale.ROOT, "%.1f %s", v, units[u]);
  }
}
