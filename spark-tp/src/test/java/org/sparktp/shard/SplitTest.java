package org.sparktp.shard;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

class SplitTest {

  @ParameterizedTest
  @CsvSource({"10,3,1", "203,4,1", "37,2,1", "5,5,1", "7,1,1", "96,5,16", "12,4,3", "1000,7,8"})
  void shardsAreContiguousBalancedWithinOneUnitAndCoverTheDimension(int n, int p, int unit) {
    Split s = Split.balanced(n, p, unit, "test");
    int min = Integer.MAX_VALUE;
    int max = 0;
    int next = 0;
    for (int r = 0; r < p; r++) {
      assertThat(s.offset(r)).isEqualTo(next);
      assertThat(s.length(r) % unit).isZero();
      min = Math.min(min, s.length(r));
      max = Math.max(max, s.length(r));
      next += s.length(r);
      for (int i = s.offset(r); i < s.offset(r) + s.length(r); i++) {
        assertThat(s.shardOf(i)).isEqualTo(r);
      }
    }
    assertThat(next).isEqualTo(n);
    assertThat(max - min).isLessThanOrEqualTo(unit);
    assertThat(s.maxLength()).isEqualTo(max);
  }

  @Test
  void rejectsNonPositiveTensorParallelSize() {
    assertThatThrownBy(() -> Split.balanced(10, 0)).isInstanceOf(IllegalArgumentException.class)
        .hasMessageContaining("Tensor-parallel size must be positive, got p=0");
    assertThatThrownBy(() -> Split.balanced(10, -2)).hasMessageContaining("got p=-2");
  }

  @Test
  void rejectsMoreRanksThanUnits() {
    assertThatThrownBy(() -> Split.balanced(3, 4, 1, "fc1 output features"))
        .isInstanceOf(IllegalArgumentException.class)
        .hasMessage("Cannot split fc1 output features of size 3 across p=4 ranks: every rank needs at least one "
            + "element; use a tensor-parallel size of at most 3");
    assertThatThrownBy(() -> Split.balanced(32, 3, 16, "heads"))
        .hasMessageContaining("(2 units of 16)").hasMessageContaining("at most 2");
  }

  @Test
  void rejectsSizeThatIsNotAWholeNumberOfUnits() {
    assertThatThrownBy(() -> Split.balanced(50, 2, 16, "attention columns"))
        .hasMessageContaining("Cannot split attention columns of size 50 into units of 16");
  }
}
