package org.sparktp.nn.gen;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

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
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.Communicator;
import org.sparktp.comm.CommunicatorException;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.run.RankModel;
import org.sparktp.tensor.DType;

/**
 * Generation on the llama (GQA, 8 heads on 2 KV heads) and gpt2 fixtures against the float64 PyTorch
 * reference's {@code greedy} entry (a plain greedy loop recomputing the whole prefix each step, no cache;
 * {@code tools/make_hf_fixtures.py}): token for token at tp 1, 2, 3, with prompts of different lengths in one
 * batch spread unevenly over the ranks, with roomy and with tight budgets (chunked prefill, rows waiting
 * for the KV cache); rows that stop on EOS or a stop id, and rows that hit maxNewTokens; sampling that
 * does not depend on the tp size or the batch; budget and context errors; a collective failing mid-decode.
 */
class GenerateTest {
  static final String DIR = "src/test/resources/hf/";
  static final Map<String, HfModel> MODELS = new ConcurrentHashMap<>();

  @AfterAll
  static void closeModels() {
    for (HfModel m : MODELS.values()) {
      try {
        m.close();
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    }
    MODELS.clear(); // PrefixSharingTest opens them again in the same JVM
  }

  static HfModel model(String name) {
    return MODELS.computeIfAbsent(name, n -> {
      try {
        return HfModel.open(DIR + n);
      } catch (Exception e) {
        throw new IllegalStateException(e);
      }
    });
  }

  record Greedy(List<int[]> prompts, List<int[]> tokens) {}

  static Greedy reference(String name) throws Exception {
    JsonNode ref = new ObjectMapper().readTree(new File(DIR + name + "/reference.json"));
    List<int[]> prompts = new ArrayList<>();
    List<int[]> tokens = new ArrayList<>();
    for (JsonNode g : ref.get("greedy")) {
      prompts.add(ints(g.get("prompt")));
      tokens.add(ints(g.get("tokens")));
    }
    return new Greedy(prompts, tokens);
  }

  static int[] ints(JsonNode a) {
    int[] out = new int[a.size()];
    for (int i = 0; i < out.length; i++) {
      out[i] = a.get(i).asInt();
    }
    return out;
  }

  /** Result of a group run: completions in input order, the generators' counters of rank 0. */
  record Run(Completion[] rows, long peakCacheBytes, long steps) {}

  /** Row i on rank (i * 7 + 1) % p with seed seeds[i]; asserts every rank closed every tensor. */
  static Run generate(String name, int p, List<int[]> prompts, long[] seeds, GenerateParams gp, boolean truncate) {
    return generate(name, p, prompts, seeds, gp, truncate, DType.F32);
  }

  /** As above with the linears and embedding tables in {@code dtype}, read typed as the Spark path does. */
  static Run generate(String name, int p, List<int[]> prompts, long[] seeds, GenerateParams gp, boolean truncate,
      DType dtype) {
    return generate(name, p, prompts, seeds, gp, truncate, dtype, CpuBackend::new, null);
  }

  /**
   * As above on the backends {@code backend} makes (one per rank); {@code around}, when not null, is called on
   * rank 0 with its backend and generator before and after the generation ({@code HfGpuTest} counts transfers).
   */
  static Run generate(String name, int p, List<int[]> prompts, long[] seeds, GenerateParams gp, boolean truncate,
      DType dtype, java.util.function.Supplier<? extends org.sparktp.backend.Backend> backend,
      java.util.function.BiConsumer<org.sparktp.backend.Backend, Generator> around) {
    HfModel hf = model(name);
    Plan plan = TransformerGraph.plan(hf.model(), p, Task.GENERATE, null, false, truncate);
    Completion[] out = new Completion[prompts.size()];
    long[] live = new long[p];
    long[][] counters = new long[p][];
    LocalCommunicator.run(p, 60_000, rank -> comm -> {
      List<Integer> mine = new ArrayList<>();
      for (int i = 0; i < prompts.size(); i++) {
        if ((i * 7 + 1) % p == rank) {
          mine.add(i);
        }
      }
      List<int[]> rows = new ArrayList<>();
      long[] s = new long[mine.size()];
      for (int j = 0; j < mine.size(); j++) {
        rows.add(prompts.get(mine.get(j)));
        s[j] = seeds[mine.get(j)];
      }
      org.sparktp.backend.Backend be = backend.get();
      RankWeights w;
      synchronized (hf) {
        w = dtype == DType.F32 ? plan.shard(hf.weightSource(), rank) : plan.shard(hf.weightSource(), rank, be, dtype);
      }
      try (w; RankModel m = new RankModel(plan, rank, be, w, dtype)) {
        Generator g = new Generator(m, comm, gp, null);
        if (around != null && rank == 0) {
          around.accept(be, g);
        }
        List<Completion> got = g.generate(rows, s, 0);
        if (around != null && rank == 0) {
          around.accept(be, g);
        }
        for (int j = 0; j < mine.size(); j++) {
          out[mine.get(j)] = got.get(j);
        }
        counters[rank] = new long[] {g.peakCacheBytes(), g.steps()};
      }
      live[rank] = be.liveTensors();
      be.close();
      return null;
    });
    assertThat(live).as("live tensors per rank after the run").containsOnly(0L);
    return new Run(out, counters[0][0], counters[0][1]);
  }

  static long[] seeds(int n) {
    long[] s = new long[n];
    for (int i = 0; i < n; i++) {
      s[i] = 1234567L * (i + 1) + 89;
    }
    return s;
  }

  static List<Arguments> greedyCases() {
    List<Arguments> out = new ArrayList<>();
    for (String m : List.of("llama", "qwen3", "gpt2")) {
      for (int p = 1; p <= (m.equals("qwen3") ? 4 : 3); p++) {
        out.add(Arguments.of(m, p, false));
        out.add(Arguments.of(m, p, true));
      }
    }
    return out;
  }

  /**
   * tight: 4 tokens per step (a 7-token prompt is prefilled in chunks beside decoding rows) and a KV cache
   * budget that holds exactly the largest row, so rows wait for each other and join as others finish.
   */
  @ParameterizedTest(name = "{0} tp={1} tight={2}")
  @MethodSource("greedyCases")
  void greedyEqualsTheFloat64ReferenceTokenForToken(String name, int p, boolean tight) throws Exception {
    Greedy ref = reference(name);
    int maxNew = ref.tokens().get(0).length;
    GenerateParams gp = GenerateParams.greedy(maxNew);
    long budget = 0;
    if (tight) {
      long perToken = KvCache.bytesPerToken(TransformerGraph.plan(model(name).model(), p, Task.GENERATE, null, false,
          false));
      int longest = ref.prompts().stream().mapToInt(a -> a.length).max().orElseThrow();
      budget = perToken * (longest + maxNew - 1);
      gp = gp.withBudgets(budget, 4);
    }
    Run run = generate(name, p, ref.prompts(), seeds(ref.prompts().size()), gp, false);
    for (int r = 0; r < ref.prompts().size(); r++) {
      assertThat(run.rows()[r].ids()).as("%s tp=%d row %d", name, p, r).containsExactly(ref.tokens().get(r));
      assertThat(run.rows()[r].finish()).isEqualTo(Completion.Finish.LENGTH);
      assertThat(run.rows()[r].promptTokens()).isEqualTo(ref.prompts().get(r).length);
    }
    if (tight) {
      assertThat(run.peakCacheBytes()).isLessThanOrEqualTo(budget).isPositive();
      // rows ran one after another: at least maxNew steps per row
      assertThat(run.steps()).isGreaterThanOrEqualTo(3L * maxNew);
    }
  }

  /**
   * bf16 weights (KV cache f32), and int8 W8A8: greedy tokens may legitimately differ from the float64 reference
   * where its best two logits are close, so each row is compared token for token up to its first step whose
   * reference margin (best minus second-best logit) is below {@code 2 x tol x max|logit|} (the dtype's tolerance on
   * both logits: 2e-2 for bf16, 5e-2 for int8 W8A8; max|logit| over the fixture's logits_last); the steps after it
   * follow another prefix and are not compared.
   */
  @ParameterizedTest(name = "{0} tp={1} {2}")
  @MethodSource("bf16Cases")
  void bf16GreedyMatchesTheReferenceWhereItsMarginIsLarge(String name, int p, DType dtype) throws Exception {
    JsonNode ref = new ObjectMapper().readTree(new File(DIR + name + "/reference.json"));
    double maxLogit = 0;
    for (JsonNode row : ref.get("rows")) {
      for (JsonNode v : row.get("logits_last")) {
        maxLogit = Math.max(maxLogit, Math.abs(v.asDouble()));
      }
    }
    double minMargin = 2 * (dtype == DType.I8 ? 5e-2 : 2e-2) * maxLogit;
    Greedy g = reference(name);
    int maxNew = g.tokens().get(0).length;
    Run run = generate(name, p, g.prompts(), seeds(g.prompts().size()), GenerateParams.greedy(maxNew), false,
        dtype);
    int compared = 0;
    for (int r = 0; r < g.prompts().size(); r++) {
      JsonNode margins = ref.get("greedy").get(r).get("margins");
      int n = 0;
      while (n < maxNew && margins.get(n).asDouble() >= minMargin) {
        n++;
      }
      assertThat(run.rows()[r].ids()).as("%s tp=%d %s row %d", name, p, dtype.id(), r).hasSize(maxNew);
      assertThat(Arrays.copyOf(run.rows()[r].ids(), n)).as("%s tp=%d %s row %d, first %d tokens", name, p,
          dtype.id(), r, n)
          .containsExactly(Arrays.copyOf(g.tokens().get(r), n));
      compared += n;
    }
    assertThat(compared).as("tokens compared").isGreaterThanOrEqualTo(3);
  }

  static List<Arguments> bf16Cases() {
    return List.of(Arguments.of("llama", 2, DType.BF16), Arguments.of("llama", 3, DType.BF16),
        Arguments.of("gpt2", 1, DType.BF16), Arguments.of("gpt2", 3, DType.BF16), Arguments.of("gpt2", 1, DType.I8),
        Arguments.of("gpt2", 2, DType.I8));
  }

  /** Expected: the reference's tokens up to the first EOS or stop id (included), else up to maxNew. */
  @Test
  void rowsStopOnEosOrAStopIdOrAtMaxNewTokens() throws Exception {
    Greedy ref = reference("llama");
    int eos = ref.tokens().get(0)[2]; // row 0 stops early on it
    int stop = ref.tokens().get(2)[1]; // row 2 stops on it
    int maxNew = 5;
    GenerateParams gp = GenerateParams.greedy(maxNew).withStops(new int[] {eos}, new int[] {stop});
    Run run = generate("llama", 2, ref.prompts(), seeds(3), gp, false);
    int early = 0;
    for (int r = 0; r < 3; r++) {
      int[] want = ref.tokens().get(r);
      int end = maxNew;
      Completion.Finish f = Completion.Finish.LENGTH;
      for (int i = 0; i < maxNew; i++) {
        if (want[i] == eos || want[i] == stop) {
          end = i + 1;
          f = want[i] == eos ? Completion.Finish.EOS : Completion.Finish.STOP;
          break;
        }
      }
      early += end < maxNew ? 1 : 0;
      assertThat(run.rows()[r].ids()).as("row %d", r).containsExactly(Arrays.copyOf(want, end));
      assertThat(run.rows()[r].finish()).as("row %d", r).isEqualTo(f);
    }
    assertThat(early).isGreaterThanOrEqualTo(2);
    assertThat(run.rows()[0].finish()).isEqualTo(Completion.Finish.EOS);
    assertThat(run.rows()[2].finish()).isEqualTo(Completion.Finish.STOP);
  }

  /**
   * Sampling (temperature, top-k, top-p) gives every row the same tokens at tp 1 and tp 3, alone or in a
   * batch, with roomy or tight budgets; top-k 1 is the greedy reference.
   */
  @Test
  void sampledRowsDependOnlyOnTheirSeedNotOnTpSizeOrBatch() throws Exception {
    for (String name : List.of("llama", "gpt2")) {
      Greedy ref = reference(name);
      List<int[]> prompts = new ArrayList<>(ref.prompts());
      prompts.add(ref.prompts().get(1)); // the same prompt with another seed
      long[] seeds = seeds(prompts.size());
      GenerateParams gp = GenerateParams.greedy(6).withSampling(0.9, 20, 0.95, 0);
      Completion[] tp1 = generate(name, 1, prompts, seeds, gp, false).rows();
      Completion[] tp3 = generate(name, 3, prompts, seeds, gp.withBudgets(1L << 30, 3), false).rows();
      boolean differsFromGreedy = false;
      for (int r = 0; r < prompts.size(); r++) {
        assertThat(tp3[r].ids()).as("%s row %d at tp 3", name, r).containsExactly(tp1[r].ids());
        Completion alone = generate(name, 2, List.of(prompts.get(r)), new long[] {seeds[r]}, gp, false).rows()[0];
        assertThat(alone.ids()).as("%s row %d alone at tp 2", name, r).containsExactly(tp1[r].ids());
        differsFromGreedy |= !Arrays.equals(tp1[r].ids(), ref.tokens().get(Math.min(r, 2) == r ? r : 1));
      }
      assertThat(differsFromGreedy).as("%s: sampling drew something else than greedy somewhere", name).isTrue();
      assertThat(tp1[1].ids()).as("same prompt, other seed").isNotEqualTo(tp1[3].ids());
      Completion[] k1 = generate(name, 3, ref.prompts(), seeds(3), GenerateParams.greedy(6).withSampling(1.3, 1, 1, 5),
          false).rows();
      for (int r = 0; r < 3; r++) {
        assertThat(k1[r].ids()).as("%s top-k 1 row %d", name, r).containsExactly(ref.tokens().get(r));
      }
    }
  }

  @Test
  void aKvCacheBudgetTooSmallForOneRowIsAClearError() {
    List<int[]> prompts = List.of(new int[] {1, 5, 7}, new int[] {1, 2, 3, 4, 5, 6, 7, 8});
    long perToken = KvCache.bytesPerToken(TransformerGraph.plan(model("llama").model(), 2, Task.GENERATE, null,
        false, false));
    assertThat(perToken).isEqualTo(2 * 2 * 1 * 8 * 4); // 2 layers, K and V, 1 KV head per rank, head_dim 8
    GenerateParams gp = GenerateParams.greedy(4).withBudgets(perToken * 10, 64);
    assertThatThrownBy(() -> generate("llama", 2, prompts, seeds(2), gp, false))
        .hasMessageContaining("The KV cache budget spark.tp.kv-cache.max-bytes=" + perToken * 10
            + " is too small for Row 0 of the partition: its 8 prompt tokens and maxNewTokens 4 need "
            + perToken * 11 + " bytes")
        .hasMessageContaining("raise it to at least " + perToken * 11);
  }

  @Test
  void aPromptTooLongForTheContextIsAnErrorNamingTheRowOrIsTruncatedFromTheLeft() {
    int[] longRow = new int[45]; // llama context 48
    for (int i = 0; i < longRow.length; i++) {
      longRow[i] = (i * 37 + 11) % 96;
    }
    List<int[]> prompts = List.of(new int[] {1, 4}, longRow);
    GenerateParams gp = GenerateParams.greedy(6);
    assertThatThrownBy(() -> generate("llama", 1, prompts, seeds(2), gp, false))
        .hasMessageContaining("Row 1 of the partition has 45 tokens; with maxNewTokens 6 it needs 51 positions, "
            + "more than the model's context of 48")
        .hasMessageContaining("spark.tp.truncate=true to keep its last 42 tokens");
    Completion[] cut = generate("llama", 2, prompts, seeds(2), gp, true).rows();
    assertThat(cut[1].promptTokens()).isEqualTo(42);
    Completion[] explicit = generate("llama", 1, List.of(Arrays.copyOfRange(longRow, 3, 45)), seeds(1), gp, false)
        .rows();
    assertThat(cut[1].ids()).containsExactly(explicit[0].ids());
  }

  /** {@code comm} whose {@code n}-th all-reduce (from 1) aborts the group and throws. */
  static Communicator failingAt(Communicator comm, int n) {
    AtomicInteger calls = new AtomicInteger();
    return (Communicator) Proxy.newProxyInstance(Communicator.class.getClassLoader(),
        new Class<?>[] {Communicator.class}, (proxy, m, args) -> {
          if (m.getName().equals("allReduce") && calls.incrementAndGet() == n) {
            CommunicatorException e = new CommunicatorException("injected all-reduce failure on rank " + comm.rank());
            comm.abort(e);
            throw e;
          }
          try {
            return m.invoke(comm, args);
          } catch (InvocationTargetException e) {
            throw e.getCause();
          }
        });
  }

  /** A collective failing in the 3rd decode step: the first cause surfaces, no cache or activation leaks. */
  @Test
  void aCollectiveFailingMidDecodeLeaksNothingAndSurfacesTheFirstCause() throws Exception {
    Greedy ref = reference("llama");
    HfModel hf = model("llama");
    Plan plan = TransformerGraph.plan(hf.model(), 2, Task.GENERATE, null, false, false);
    Throwable[] seen = new Throwable[2];
    long[] live = new long[2];
    try {
      LocalCommunicator.run(2, 10_000, rank -> comm -> {
        Communicator c = rank == 0 ? failingAt(comm, 4 * 3 + 2) : comm; // 4 all-reduces per step (2 blocks x 2)
        RankWeights w;
        synchronized (hf) {
          w = plan.shard(hf.weightSource(), rank);
        }
        CpuBackend be = new CpuBackend();
        try (RankModel m = new RankModel(plan, rank, be, w)) {
          new Generator(m, c, GenerateParams.greedy(6), null).generate(rank == 0 ? ref.prompts() : List.of(),
              seeds(rank == 0 ? 3 : 0), 0);
        } catch (RuntimeException e) {
          seen[rank] = e;
        }
        live[rank] = be.liveTensors();
        be.close();
        return null;
      });
    } catch (RuntimeException ignored) {
      // the group's first failure is rethrown; what each rank saw is checked below
    }
    assertThat(seen[0]).isInstanceOf(CommunicatorException.class)
        .hasMessageContaining("injected all-reduce failure on rank 0");
    assertThat(seen[1]).isNotNull();
    assertThat(live).containsExactly(0, 0);
  }
}
