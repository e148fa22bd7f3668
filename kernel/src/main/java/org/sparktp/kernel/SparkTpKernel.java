package org.sparktp.kernel;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Collectors;
import jdk.jshell.Diag;
import jdk.jshell.EvalException;
import jdk.jshell.JShell;
import jdk.jshell.Snippet;
import jdk.jshell.SnippetEvent;
import jdk.jshell.SourceCodeAnalysis;
import jdk.jshell.UnresolvedReferenceException;
import org.dflib.jjava.jupyter.channels.JupyterConnection;
import org.dflib.jjava.jupyter.kernel.BaseKernel;
import org.dflib.jjava.jupyter.kernel.JupyterIO;
import org.dflib.jjava.jupyter.kernel.KernelConnectionProperties;
import org.dflib.jjava.jupyter.kernel.LanguageInfo;
import org.dflib.jjava.jupyter.kernel.ReplacementOptions;
import org.dflib.jjava.jupyter.kernel.comm.CommManager;
import org.dflib.jjava.jupyter.kernel.display.DisplayData;
import org.dflib.jjava.jupyter.kernel.display.Renderer;
import org.dflib.jjava.jupyter.kernel.magic.MagicParser;
import org.dflib.jjava.jupyter.kernel.magic.MagicTranspiler;
import org.dflib.jjava.jupyter.kernel.magic.MagicsRegistry;
import org.dflib.jjava.jupyter.kernel.util.StringStyler;
import org.dflib.jjava.jupyter.kernel.util.TextColor;

/**
 * spark-tp's Jupyter kernel: Java cells evaluated by JShell, on jjava's implementation of the Jupyter
 * protocol. JShell runs in this JVM ({@code local} execution engine) and compiles against this JVM's class
 * path, so spark-tp and Spark load once, from the application class loader. A cell's last expression is its
 * result; {@link Show} displays tables and images. Interrupt stops the running cell.
 *
 * <p>Started by Jupyter through the kernel spec ({@link KernelSpec}) as
 * {@code java -cp CLASSPATH org.sparktp.kernel.SparkTpKernel CONNECTION_FILE}.
 */
public final class SparkTpKernel extends BaseKernel {
  private static volatile SparkTpKernel current;
  private final JShell shell;

  SparkTpKernel() {
    super("spark-tp", "0.1.0", new LanguageInfo("java", Runtime.version().toString(), "text/x-java-source", ".jshell",
            "java", "java", null),
        List.of(), null, new JupyterIO(StandardCharsets.UTF_8), new CommManager(), new Renderer(),
        new MagicParser("(?<=(?:^|=))\\s*%", "%%", new MagicTranspiler()), new MagicsRegistry(), false,
        new StringStyler.Builder().addPrimaryStyle(TextColor.BOLD_RESET_FG).addSecondaryStyle(TextColor.BOLD_RED_FG)
            .build());
    shell = JShell.builder()
        .executionEngine("local")
        .compilerOptions("--class-path", System.getProperty("java.class.path"))
        .out(System.out)
        .err(System.err)
        .build();
    current = this;
  }

  /** The running kernel (for {@link Show}), or null outside a notebook. */
  static SparkTpKernel current() {
    return current;
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 1) {
      System.err.println("usage: SparkTpKernel CONNECTION_FILE (Jupyter starts the kernel; see bin/spark-tp"
          + " notebook-kernel --install)");
      return;
    }
    System.setProperty("java.awt.headless", "true");
    KernelConnectionProperties props = KernelConnectionProperties.parse(Files.readString(Path.of(args[0])));
    JupyterConnection connection = new JupyterConnection(props);
    SparkTpKernel kernel = new SparkTpKernel();
    kernel.becomeHandlerForConnection(connection);
    connection.connect();
    connection.waitUntilClose();
    kernel.shell.close();
  }

  @Override
  public Object evalRaw(String code) {
    SourceCodeAnalysis analysis = shell.sourceCodeAnalysis();
    String rest = code;
    String last = null;
    while (!rest.isBlank()) {
      SourceCodeAnalysis.CompletionInfo info = analysis.analyzeCompletion(rest);
      String source = info.completeness().isComplete() ? info.source() : rest;
      if (!info.completeness().isComplete() && info.completeness() != SourceCodeAnalysis.Completeness.EMPTY) {
        throw new CellException("incomplete code: " + rest.strip().lines().findFirst().orElse(""));
      }
      if (source == null || source.isBlank()) {
        break;
      }
      last = null;
      for (SnippetEvent e : shell.eval(source)) {
        if (e.exception() != null) {
          throw describe(e.exception());
        }
        if (e.status() == Snippet.Status.REJECTED) {
          String diags = shell.diagnostics(e.snippet()).map(d -> message(d, source)).collect(Collectors.joining("\n"));
          throw new CellException("does not compile:\n" + diags);
        }
        if (e.causeSnippet() == null && e.value() != null && isValue(e.snippet())) {
          last = e.value();
        }
      }
      rest = info.completeness().isComplete() ? info.remaining() : "";
    }
    return last;
  }

  private static boolean isValue(Snippet s) {
    return s.kind() == Snippet.Kind.EXPRESSION
        || (s.kind() == Snippet.Kind.VAR && s.subKind() == Snippet.SubKind.TEMP_VAR_EXPRESSION_SUBKIND);
  }

  private static String message(Diag d, String source) {
    int p = (int) Math.max(0, Math.min(d.getPosition(), source.length()));
    int from = source.lastIndexOf('\n', Math.max(0, p - 1)) + 1;
    int to = source.indexOf('\n', p);
    String line = source.substring(from, to < 0 ? source.length() : to).strip();
    return d.getMessage(null) + (line.isEmpty() ? "" : "\n    at: " + line);
  }

  private static CellException describe(Exception e) {
    if (e instanceof EvalException ee) {
      StringBuilder b = new StringBuilder(ee.getExceptionClassName()).append(": ").append(ee.getMessage());
      for (Throwable c = ee.getCause(); c != null; c = c.getCause()) {
        String cls = c instanceof EvalException x ? x.getExceptionClassName() : c.getClass().getName();
        b.append("\ncaused by ").append(cls).append(": ").append(c.getMessage());
      }
      CellException out = new CellException(b.toString());
      out.setStackTrace(ee.getStackTrace());
      return out;
    }
    if (e instanceof UnresolvedReferenceException u) {
      return new CellException("unresolved reference in " + u.getSnippet().source().strip());
    }
    return new CellException(e.toString());
  }

  @Override
  public DisplayData inspect(String code, int at, boolean extraDetail) {
    return null;
  }

  @Override
  public ReplacementOptions complete(String code, int at) {
    int[] anchor = new int[1];
    List<SourceCodeAnalysis.Suggestion> s = shell.sourceCodeAnalysis().completionSuggestions(code, at, anchor);
    List<String> names = new ArrayList<>();
    for (SourceCodeAnalysis.Suggestion x : s) {
      if (!names.contains(x.continuation())) {
        names.add(x.continuation());
      }
    }
    return names.isEmpty() ? null : new ReplacementOptions(names, anchor[0], at);
  }

  @Override
  public String isComplete(String code) {
    SourceCodeAnalysis.Completeness c = shell.sourceCodeAnalysis().analyzeCompletion(code).completeness();
    if (c.isComplete() || c == SourceCodeAnalysis.Completeness.EMPTY) {
      return IS_COMPLETE_YES;
    }
    return c == SourceCodeAnalysis.Completeness.UNKNOWN ? IS_COMPLETE_BAD : "    ";
  }

  @Override
  public void interrupt() {
    shell.stop();
  }

  @Override
  public void onShutdown(boolean restart) {
    shell.close();
  }

  @Override
  public List<String> formatError(Throwable e) {
    List<String> lines = new ArrayList<>();
    lines.add(errorStyler.primary(e.getMessage() == null ? e.toString() : e.getMessage()));
    return lines;
  }

  /** A cell that failed: the message is what the notebook shows. */
  static final class CellException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    CellException(String message) {
      super(message);
    }
  }
}
