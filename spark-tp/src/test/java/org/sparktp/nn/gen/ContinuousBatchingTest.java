package org.sparktp.nn.gen;

import static org.assertj.core.api.Assertions.assertThat;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.sparktp.backend.cpu.CpuBackend;
import org.sparktp.comm.LocalCommunicator;
import org.sparktp.model.hf.HfModel;
import org.sparktp.nn.RankWeights;
import org.sparktp.nn.ops.Task;
import org.sparktp.nn.plan.Plan;
import org.sparktp.nn.plan.TransformerGraph;
import org.sparktp.nn.run.RankModel;

/**
 * Issue 21, continuous batching across micro-batches ({@link Generator.Session}): each rank submits its rows in
 * micro-batches of {@code mb} rows, one micro-batch ahead of the one it finishes (as {@code RankTask} does), ranks
 * holding different numbers of micro-batches. Every row gets the float64 reference's greedy tokens
 * ({@code tools/make_hf_fixtures.py}; the prompts of {@link PrefixSharingTest#family}) and the tokens of the whole
 * set run in one {@link Generator#generate} call, in input order, one completion per row; rows of a later
 * micro-batch run beside an earlier one (fewer steps than micro-batches one after another); nothing leaks.
 */
class ContinuousBatchingTest {
  @AfterAll
  static void closeModels() {
    GenerateTest.closeModels();
  }

  /** Per rank: its rows' completions in input order; [p]: {steps of rank 0}. */
  record Result(List<List<Completion>> perRank, long steps) {}

  /**
   * Rank {@code r} holds rows {@code r, r + p, ...} (except rank 0 holds also every row beyond index 8: more
   * micro-batches than the others); {@code lookahead}: a session with one micro-batch in flight, else one
   * {@link Generator#generate} per micro-batch.
   */
  static Result run(String name, int p, List<int[]> prompts, GenerateParams gp, int mb, boolean lookahead) {
    HfModel hf = GenerateTest.model(name);
    Plan plan = TransformerGraph.plan(hf.model(), p, Task.GENERATE, null, false, false);
    List<List<Completion>> out = new ArrayList<>();
    long[] steps = new long[p];
    long[] live = new long[p];
    for (int r = 0; r < p; r++) {
      out.add(null);
    }
    LocalCommunicator.run(p, 60_000, rank -> comm -> {
      List<int[]> mine = new ArrayList<>();
      for (int i = 0; i < prompts.size(); i++) {
        if (i < 9 ? i % p == rank : rank == 0) {
          mine.add(prompts.get(i));
        }
      }
      CpuBackend be = new CpuBackend();
      RankWeights w;
      synchronized (hf) {
        w = plan.shard(hf.weightSource(), rank);
      }
      List<Completion> got = new ArrayList<>();
      try (w; RankModel m = new RankModel(plan, rank, be, w)) {
        Generator g = new Generator(m, comm, gp, null);
        if (lookahead) {
          try (Generator.Session s = g.open()) {
            List<Integer> tickets = new ArrayList<>();
            for (int at = 0; ; at += mb) {
              List<int[]> batch = mine.subList(Math.min(at, mine.size()), Math.min(at + mb, mine.size()));
              int t = s.submit(batch, new long[batch.size()], at);
              if (t >= 0) {
                tickets.add(t);
              }
              while (tickets.size() > (t < 0 ? 0 : 1)) {
                got.addAll(s.finish(tickets.remove(0)));
              }
              if (t < 0) {
                break;
              }
            }
          }
        } else {
          for (int at = 0; ; at += mb) {
            List<int[]> batch = mine.subList(Math.min(at, mine.size()), Math.min(at + mb, mine.size()));
            List<Completion> c = g.generate(batch, new long[batch.size()], at);
            if (c == null) {
              break;
            }
            got.addAll(c);
          }
        }
        steps[rank] = g.steps();
      }
      out.set(rank, got);
      live[rank] = be.liveTensors();
      be.close();
      return null;
    });
    assertThat(live).as("live tensors per rank after the run").containsOnly(0L);
    return new Result(out, steps[0]);
  }

  @ParameterizedTest(name = "{0} tp={1} micro-batch {2} tight={3}")
  @CsvSource({"llama, 1, 2, false", "llama, 2, 2, false", "llama, 2, 3, true", "gpt2, 2, 1, false",
      "qwen3, 1, 4, true"})
  void rowsOfTheNextMicroBatchTakeFreedPlacesAndGetTheSameTokens(String name, int p, int mb, boolean tight)
      throws Exception {
    PrefixSharingTest.Family f = PrefixSharingTest.family(GenerateTest.reference(name));
    GenerateParams gp = GenerateParams.greedy(PrefixSharingTest.MAX_NEW);
    if (tight) {
      long perToken = org.sparktp.nn.gen.KvCache.bytesPerToken(TransformerGraph.plan(
          GenerateTest.model(name).model(), p, Task.GENERATE, null, false, false));
      gp = gp.withBudgets(3 * perToken * (12 + PrefixSharingTest.MAX_NEW), 5);
    }
    Result ahead = run(name, p, f.prompts(), gp, mb, true);
    Result one = run(name, p, f.prompts(), gp, Integer.MAX_VALUE / 2, false);
    Result apart = run(name, p, f.prompts(), gp, mb, false);
    for (int r = 0; r < p; r++) {
      List<Completion> a = ahead.perRank().get(r);
      List<Completion> o = one.perRank().get(r);
      assertThat(a).as("rank %d: one completion per row", r).hasSameSizeAs(o);
      int k = 0;
      for (int i = 0; i < f.prompts().size(); i++) {
        if (i < 9 ? i % p == r : r == 0) {
          assertThat(a.get(k).ids()).as("%s tp=%d rank %d row %d (input order)", name, p, r, i)
              .containsExactly(f.tokens().get(i));
          assertThat(o.get(k).ids()).as("row %d in one call", i).containsExactly(f.tokens().get(i));
          assertThat(a.get(k).promptTokens()).as("row %d prompt", i).isEqualTo(f.prompts().get(i).length);
          k++;
        }
      }
      assertThat(k).as("rows of rank %d", r).isEqualTo(a.size());
    }
    assertThat(ahead.steps()).as("%s tp=%d: steps with one micro-batch ahead vs one after another", name, p)
        .isLessThan(apart.steps());
  }
}
