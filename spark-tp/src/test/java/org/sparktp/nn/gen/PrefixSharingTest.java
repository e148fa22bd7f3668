package org.sparktp.nn.gen;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Proxy;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;
import org.sparktp.backend.Backend;
import org.sparktp.backend.Tensor;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.tensor.DType;

/**
 * Issue 21, shared prefixes: rows whose prompts start alike copy the keys and values of the common prefix from the
 * row that computed them ({@link GenerateParams#prefixSharing}). Checked against the float64 PyTorch reference of
 * {@code tools/make_hf_fixtures.py} and against the same rows without sharing, at tp 1 and 2:
 *
 * <ul>
 *   <li>tokens: the reference's greedy loop recomputes the whole prefix each step, so the prompt {@code P + T[0..k)}
 *       (a reference prompt and its first k greedy tokens) continues with {@code T[k..]}; rows {@code k = 0..3} of
 *       each of the three reference prompts (and a repeat of one) share prefixes of 1 to 9 tokens;
 *   <li>logits: the LM head's logits of each row's first token (recorded where the sampler reads them) against the
 *       reference's {@code logits_last} (relative error 1e-4, {@code HfEngineTest}'s f32 tolerance), and against the
 *       run without sharing (relative 1e-5).
 * </ul>
 */
class PrefixSharingTest {
  @org.junit.jupiter.api.AfterAll
  static void closeModels() {
    GenerateTest.closeModels();
  }

  static final double REF_TOL = 1e-4;
  static final double SAME_TOL = 1e-5;
  static final int MAX_NEW = 3;

  /** Prompts {@code P + T[0..k)} for k = 0..3, interleaved over the reference rows, and the tokens expected. */
  record Family(List<int[]> prompts, List<int[]> tokens) {}

  static Family family(GenerateTest.Greedy ref) {
    List<int[]> prompts = new ArrayList<>();
    List<int[]> tokens = new ArrayList<>();
    for (int k = 0; k + MAX_NEW <= 6 && k <= 3; k++) {
      for (int r = 0; r < ref.prompts().size(); r++) {
        int[] p = ref.prompts().get(r);
        int[] t = ref.tokens().get(r);
        int[] row = Arrays.copyOf(p, p.length + k);
        System.arraycopy(t, 0, row, p.length, k);
        prompts.add(row);
        tokens.add(Arrays.copyOfRange(t, k, k + MAX_NEW));
      }
    }
    prompts.add(prompts.get(4).clone()); // the same prompt twice: all but its last token shared
    tokens.add(tokens.get(4));
    return new Family(prompts, tokens);
  }

  static List<Arguments> tokenCases() {
    List<Arguments> out = new ArrayList<>();
    for (String m : List.of("llama", "qwen3", "gpt2")) {
      for (int p = 1; p <= 2; p++) {
        out.add(Arguments.of(m, p, false));
        out.add(Arguments.of(m, p, true));
      }
    }
    return out;
  }

  /**
   * tight: 3 tokens per step (prefixes prefilled over several steps while their sharers wait) and a KV cache that
   * holds four of the longest rows (rows join as others finish, their donors sometimes gone).
   */
  @ParameterizedTest(name = "{0} tp={1} tight={2}")
  @MethodSource("tokenCases")
  void sharedPrefixesGiveTheFloat64ReferenceTokensAndTheTokensWithoutSharing(String name, int p, boolean tight)
      throws Exception {
    Family f = family(GenerateTest.reference(name));
    GenerateParams gp = GenerateParams.greedy(MAX_NEW);
    if (tight) {
      long perToken = KvCache.bytesPerToken(TransformerGraph.plan(GenerateTest.model(name).model(), p, Task.GENERATE,
          null, false, false));
      int longest = f.prompts().stream().mapToInt(a -> a.length).max().orElseThrow();
      gp = gp.withBudgets(4 * perToken * (longest + MAX_NEW - 1), 3);
    }
    long[] shared = new long[2];
    long[] computed = new long[2];
    Completion[][] runs = new Completion[2][];
    for (int on = 0; on < 2; on++) {
      int i = on;
      runs[on] = GenerateTest.generate(name, p, f.prompts(), GenerateTest.seeds(f.prompts().size()),
          gp.withPrefixSharing(on == 1), false, DType.F32, CpuBackend::new, (be, g) -> {
            shared[i] = g.sharedTokens();
            computed[i] = g.promptTokens();
          }).rows();
    }
    for (int r = 0; r < f.prompts().size(); r++) {
      assertThat(runs[1][r].ids()).as("%s tp=%d row %d shared", name, p, r).containsExactly(f.tokens().get(r));
      assertThat(runs[0][r].ids()).as("%s tp=%d row %d not shared", name, p, r).containsExactly(f.tokens().get(r));
      assertThat(runs[1][r].promptTokens()).as("row %d prompt tokens", r).isEqualTo(f.prompts().get(r).length);
    }
    int total = f.prompts().stream().mapToInt(a -> a.length).sum();
    assertThat(shared[0]).as("tokens shared with sharing off").isZero();
    assertThat(computed[0]).as("prompt tokens computed with sharing off").isEqualTo(total);
    System.out.printf("%s tp=%d tight=%b: %d prompt tokens shared, %d computed%n", name, p, tight, shared[1],
        computed[1]);
    assertThat(shared[1]).as("%s tp=%d tokens shared", name, p).isGreaterThanOrEqualTo(tight ? 1 : 30);
    assertThat(computed[1] + shared[1]).as("computed + shared prompt tokens").isEqualTo(total);
  }

  /**
   * A bf16 KV cache (activations in bf16, issue 9b): the prefix copied is the cache's 16-bit rows, so sharing gives
   * the tokens the rows get without it (tp 1: the activation dtype is set on rank 0's generator).
   */
  @ParameterizedTest(name = "{0}")
  @ValueSource(strings = {"llama", "gpt2"})
  void aBf16CacheSharesItsRowsAndGivesTheTokensWithoutSharing(String name) throws Exception {
    Family f = family(GenerateTest.reference(name));
    long[] shared = new long[2];
    String[] dtype = new String[2];
    Completion[][] runs = new Completion[2][];
    for (int on = 0; on < 2; on++) {
      int i = on;
      runs[on] = GenerateTest.generate(name, 1, f.prompts(), GenerateTest.seeds(f.prompts().size()),
          GenerateParams.greedy(MAX_NEW).withPrefixSharing(on == 1), false, DType.F32, CpuBackend::new, (be, g) -> {
            g.activationDtype(DType.BF16);
            shared[i] = g.sharedTokens();
            dtype[i] = KvCache.storage(DType.BF16, be).id();
          }).rows();
    }
    assertThat(dtype[1]).as("cache dtype").isEqualTo(DType.BF16.id());
    assertThat(shared[1]).as("%s bf16 tokens shared", name).isGreaterThanOrEqualTo(30);
    for (int r = 0; r < f.prompts().size(); r++) {
      assertThat(runs[1][r].ids()).as("%s bf16 row %d, shared vs not", name, r).containsExactly(runs[0][r].ids());
    }
  }

  /** A backend that records the logits the greedy sampler reads ({@code argMaxRows}): per call, rows of its slice. */
  static Backend recording(CpuBackend cpu, List<float[][]> calls, List<Integer> starts) {
    return (Backend) Proxy.newProxyInstance(Backend.class.getClassLoader(), new Class<?>[] {Backend.class},
        (proxy, m, args) -> {
          if (m.getName().equals("argMaxRows")) {
            Tensor t = (Tensor) args[0];
            float[] all = cpu.download(t);
            float[][] rows = new float[t.rows()][];
            for (int i = 0; i < rows.length; i++) {
              rows[i] = Arrays.copyOfRange(all, i * t.cols(), (i + 1) * t.cols());
            }
            calls.add(rows);
            starts.add((Integer) args[1]);
          }
          try {
            return m.invoke(cpu, args);
          } catch (InvocationTargetException e) {
            throw e.getCause();
          }
        });
  }

  /**
   * The first-token logits of every row of one run, each the ranks' slices joined (in no particular row order);
   * {@code shared[0]}: the tokens the run shared.
   */
  static List<double[]> logits(String name, int p, List<int[]> prompts, boolean sharing, long[] shared) {
    Map<Integer, List<float[][]>> calls = new ConcurrentHashMap<>();
    Map<Integer, List<Integer>> starts = new ConcurrentHashMap<>();
    int[] next = {0};
    java.util.function.Supplier<Backend> backends = () -> {
      int rank;
      synchronized (next) {
        rank = next[0]++;
      }
      calls.put(rank, new ArrayList<>());
      starts.put(rank, new ArrayList<>());
      return recording(new CpuBackend(), calls.get(rank), starts.get(rank));
    };
    GenerateTest.generate(name, p, prompts, GenerateTest.seeds(prompts.size()),
        GenerateParams.greedy(1).withPrefixSharing(sharing), false, DType.F32, backends,
        (be, g) -> shared[0] = g.sharedTokens());
    List<double[]> out = new ArrayList<>();
    int n = calls.get(0).size();
    for (int c = 0; c < n; c++) {
      int call = c;
      List<Integer> ranks = new ArrayList<>(calls.keySet());
      ranks.sort((a, b) -> Integer.compare(starts.get(a).get(call), starts.get(b).get(call)));
      for (int row = 0; row < calls.get(0).get(c).length; row++) {
        List<Double> v = new ArrayList<>();
        for (int r : ranks) {
          assertThat(calls.get(r)).as("rank %d sampler calls", r).hasSize(n);
          for (float x : calls.get(r).get(c)[row]) {
            v.add((double) x);
          }
        }
        out.add(v.stream().mapToDouble(Double::doubleValue).toArray());
      }
    }
    return out;
  }

  /** max |a - b| / max |b|. */
  static double relErr(double[] a, double[] b) {
    double err = 0;
    double max = 0;
    for (int i = 0; i < b.length; i++) {
      err = Math.max(err, Math.abs(a[i] - b[i]));
      max = Math.max(max, Math.abs(b[i]));
    }
    return err / max;
  }

  /** The recorded vector nearest {@code want}, and its error. */
  static double nearest(List<double[]> got, double[] want) {
    double best = Double.POSITIVE_INFINITY;
    for (double[] g : got) {
      if (g.length == want.length) {
        best = Math.min(best, relErr(g, want));
      }
    }
    return best;
  }

  /**
   * The reference's inputs (but its longest, which fills the context), each after a row that shares most of its
   * prompt: a prefix of it with other tokens after, or the same prompt.
   */
  @ParameterizedTest(name = "tp={0}")
  @ValueSource(ints = {1, 2})
  void logitsAfterASharedPrefixMatchTheFloat64ReferenceAndTheRunWithoutSharing(int p) throws Exception {
    JsonNode ref = new ObjectMapper().readTree(new File(GenerateTest.DIR + "llama/reference.json"));
    List<int[]> inputs = new ArrayList<>();
    List<double[]> want = new ArrayList<>();
    for (int i = 0; i + 1 < ref.get("inputs").size(); i++) {
      inputs.add(GenerateTest.ints(ref.get("inputs").get(i)));
      JsonNode l = ref.get("rows").get(i).get("logits_last");
      double[] w = new double[l.size()];
      for (int j = 0; j < w.length; j++) {
        w[j] = l.get(j).asDouble();
      }
      want.add(w);
    }
    List<int[]> prompts = new ArrayList<>();
    for (int[] in : inputs) {
      if (in.length >= 3) {
        int[] donor = in.clone(); // its first n-1 tokens, then another
        donor[in.length - 1] = (in[in.length - 1] + 1) % 96;
        prompts.add(in.length == 12 ? in.clone() : donor);
      }
      prompts.add(in);
    }
    long[] shared = new long[1];
    List<double[]> on = logits("llama", p, prompts, true, shared);
    assertThat(shared[0]).as("tp=%d tokens shared: 2 + 6 + 11 + 19", p).isEqualTo(38);
    List<double[]> off = logits("llama", p, prompts, false, shared);
    assertThat(shared[0]).as("tokens shared with sharing off").isZero();
    assertThat(on).as("rows sampled with sharing").hasSize(prompts.size());
    assertThat(off).as("rows sampled without sharing").hasSize(prompts.size());
    for (int i = 0; i < inputs.size(); i++) {
      assertThat(nearest(on, want.get(i))).as("tp=%d input %d (%d tokens): relative error of its logits against "
          + "the reference", p, i, inputs.get(i).length).isLessThanOrEqualTo(REF_TOL);
    }
    for (double[] v : on) {
      assertThat(nearest(off, v)).as("tp=%d: logits with sharing against the nearest without", p)
          .isLessThanOrEqualTo(SAME_TOL);
    }
  }
}
