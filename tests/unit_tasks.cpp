// The synthetic tasks against their definitions (Mamba paper §4.1 / appendix E.1): which tokens
// appear where, which positions are scored and with what target.
#include <random>

#include "ssm/data.h"
#include "testing.h"

using namespace ssm;

TEST(Tasks, InductionHeads) {
  std::mt19937_64 rng(5);
  const int64_t B = 64, L = 40, V = 16;
  data::TaskBatch tb = data::induction_heads(B, L, V, rng);
  ASSERT_EQ(tb.inputs.shape(), (Shape{B, L}));
  ASSERT_EQ(tb.targets.shape(), (Shape{B, L}));
  auto in = tb.inputs.to_vector_i64(), tg = tb.targets.to_vector_i64();
  std::vector<int> answers(size_t(V), 0);
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* x = &in[size_t(b * L)];
    const int64_t* y = &tg[size_t(b * L)];
    std::vector<int64_t> special;
    for (int64_t t = 0; t < L; ++t) {
      EXPECT_TRUE(x[t] >= 0 && x[t] < V);
      if (x[t] == 0) special.push_back(t);
      if (t < L - 1) {
        EXPECT_EQ(y[t], -100) << "only the last position is scored";
      }
    }
    ASSERT_EQ(special.size(), 2u) << "the special token appears once, then again at the end";
    EXPECT_EQ(special[1], L - 1);
    EXPECT_LE(special[0], L - 3);
    EXPECT_EQ(y[L - 1], x[special[0] + 1]) << "the answer is the token after the first special token";
    EXPECT_NE(y[L - 1], 0);
    ++answers[size_t(y[L - 1])];
  }
  int used = 0;
  for (int v = 1; v < V; ++v) used += answers[size_t(v)] > 0;
  EXPECT_GE(used, 10) << "answers are spread over the vocabulary";
  ssm::testing::expect_error([&] { data::induction_heads(1, 3, V, rng); }, "seq_len >= 4");
}

TEST(Tasks, SelectiveCopying) {
  std::mt19937_64 rng(6);
  const int64_t B = 32, L = 50, M = 8, V = 16;
  data::TaskBatch tb = data::selective_copying(B, L, M, V, rng);
  ASSERT_EQ(tb.inputs.shape(), (Shape{B, L + M}));
  auto in = tb.inputs.to_vector_i64(), tg = tb.targets.to_vector_i64();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t* x = &in[size_t(b * (L + M))];
    const int64_t* y = &tg[size_t(b * (L + M))];
    std::vector<int64_t> data_tokens;
    for (int64_t t = 0; t < L; ++t) {
      EXPECT_NE(x[t], 1) << "no marker inside the region";
      EXPECT_TRUE(x[t] >= 0 && x[t] < V);
      if (x[t] != 0) data_tokens.push_back(x[t]);
      EXPECT_EQ(y[t], -100);
    }
    ASSERT_EQ(int64_t(data_tokens.size()), M) << "exactly n_memorize data tokens among the noise";
    for (int64_t k = 0; k < M; ++k) {
      EXPECT_EQ(x[L + k], 1) << "markers follow the region";
      EXPECT_EQ(y[L + k], data_tokens[size_t(k)]) << "the k-th marker's output is the k-th data token";
      EXPECT_GE(y[L + k], 2);
    }
  }
  ssm::testing::expect_error([&] { data::selective_copying(1, 4, 8, V, rng); }, "seq_len >= n_memorize");
}
