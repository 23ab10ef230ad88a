// Sampler: hand-computed distributions for each filter, their order, the repetition penalty, seeds,
// padded vocabularies, argument checks, and no allocation per call. TextStream: UTF-8 hold-back
// and stop strings.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>

#include "ssm/generate.h"
#include "ssm/sampler.h"
#include "testing.h"

// Counts heap allocations made by this test program (to check that sampling allocates nothing).
// The replacements pair malloc with free, which GCC cannot see through inlined new/delete pairs.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
static std::atomic<long> g_allocs{0};
void* operator new(size_t n) {
  ++g_allocs;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace ssm {
namespace {

std::vector<float> logs(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

// The distribution as {id: p}, checked against `want` (ids in order, probabilities within 1e-6:
// float logits rounded once, probabilities computed in double).
void expect_dist(Sampler& s, const std::vector<float>& logits, const std::vector<std::pair<int, double>>& want) {
  const auto& d = s.distribution(logits.data(), int64_t(logits.size()));
  ASSERT_EQ(d.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(d[i].id, want[i].first) << "rank " << i;
    EXPECT_NEAR(d[i].p, want[i].second, 1e-6) << "rank " << i;
  }
}

SamplerParams plain() {  // every filter off, temperature 1
  SamplerParams p;
  p.temperature = 1;
  p.top_k = 0;
  p.top_p = 1;
  p.min_p = 0;
  return p;
}

TEST(Sampler, GreedyIsArgMaxLowestIdOnTies) {
  std::vector<float> l = {0.5f, 3.f, -1.f, 3.f, 2.f};
  SamplerParams p = plain();
  p.temperature = 0;
  Sampler a(p, 5);
  EXPECT_EQ(a.sample(l.data(), 5), 1);
  expect_dist(a, l, {{1, 1.0}});
  p = plain();
  p.top_k = 1;
  Sampler b(p, 5);
  EXPECT_EQ(b.sample(l.data(), 5), 1);
}

TEST(Sampler, TopK) {
  Sampler s(
      [] {
        auto p = plain();
        p.top_k = 2;
        return p;
      }(),
      5);
  const double e = std::exp(1.0);
  expect_dist(s, {1, 2, 3, 4, 5}, {{4, e / (e + 1)}, {3, 1 / (e + 1)}});
}

TEST(Sampler, TopPKeepsTheTokenThatCrossesTheThreshold) {
  const auto l = logs({0.125, 0.5, 0.125, 0.25});
  auto with = [](double top_p) {
    auto p = plain();
    p.top_p = top_p;
    return p;
  };
  Sampler a(with(0.45), 4), b(with(0.55), 4), c(with(0.8), 4), off(with(1.0), 4), zero(with(0.0), 4);
  expect_dist(a, l, {{1, 1.0}});
  expect_dist(b, l, {{1, 2.0 / 3}, {3, 1.0 / 3}});
  expect_dist(c, l, {{1, 0.5 / 0.875}, {3, 0.25 / 0.875}, {0, 0.125 / 0.875}});  // id 0 before 2 on the tie
  expect_dist(off, l, {{1, 0.5}, {3, 0.25}, {0, 0.125}, {2, 0.125}});
  expect_dist(zero, l, {{1, 0.5}, {3, 0.25}, {0, 0.125}, {2, 0.125}});  // mamba_ssm's 0.0 = off
}

TEST(Sampler, MinPIsRelativeToTheTopProbabilityBeforeTemperature) {
  const auto l = logs({0.5, 0.25, 0.125, 0.125});
  auto with = [](double min_p, double t) {
    auto p = plain();
    p.min_p = min_p;
    p.temperature = t;
    return p;
  };
  Sampler a(with(0.3, 1), 4), b(with(0.2, 1), 4), c(with(0.6, 1), 4), hot(with(0.3, 2), 4);
  expect_dist(a, l, {{0, 2.0 / 3}, {1, 1.0 / 3}});
  expect_dist(b, l, {{0, 0.5}, {1, 0.25}, {2, 0.125}, {3, 0.125}});
  expect_dist(c, l, {{0, 1.0}});
  // The same two ids survive at temperature 2, then p ∝ sqrt(p): 0.7071 : 0.5.
  const double r = std::sqrt(0.5), q = std::sqrt(0.25);
  expect_dist(hot, l, {{0, r / (r + q)}, {1, q / (r + q)}});
}

TEST(Sampler, Temperature) {
  auto with = [](double t) {
    auto p = plain();
    p.temperature = t;
    return p;
  };
  Sampler s(with(0.5), 2);
  expect_dist(s, {0.f, float(std::log(3.0))}, {{1, 0.9}, {0, 0.1}});  // p ∝ exp(2l): 1 : 9
}

TEST(Sampler, OrderIsTopKThenTemperatureThenTopP) {
  const auto l = logs({0.6, 0.3, 0.1, 1e-3});
  auto with = [](double t) {
    auto p = plain();
    p.top_k = 3;
    p.top_p = 0.7;
    p.temperature = t;
    return p;
  };
  Sampler cool(with(1.0), 4), sharp(with(0.25), 4);
  // t = 1: top-k keeps 3 ids (mass 0.999); top-p 0.7 then keeps 0.6 and 0.3.
  expect_dist(cool, l, {{0, 0.6 / 0.9}, {1, 0.3 / 0.9}});
  // t = 0.25 before top-p: p ∝ p^4 makes id 0 hold 94% of the mass, so top-p keeps it alone.
  expect_dist(sharp, l, {{0, 1.0}});
}

TEST(Sampler, RepetitionPenaltyCtrlStyleOverTheLastN) {
  const std::vector<float> l = {2.f, -2.f, 1.f, 0.5f};
  SamplerParams p = plain();
  p.repeat_penalty = 2;
  p.repeat_last_n = 2;
  Sampler s(p, 4);
  for (int t : {0, 1, 1, 2}) s.accept(t);  // the window holds {1, 2}: id 0 has left it
  const auto& d = s.distribution(l.data(), 4);
  std::vector<float> got(4);
  for (const auto& c : d) got[size_t(c.id)] = c.logit;
  EXPECT_FLOAT_EQ(got[0], 2.f);   // outside the window
  EXPECT_FLOAT_EQ(got[1], -4.f);  // negative: multiplied, once although seen twice
  EXPECT_FLOAT_EQ(got[2], 0.5f);  // positive: divided
  EXPECT_FLOAT_EQ(got[3], 0.5f);  // never seen
  p.repeat_last_n = -1;           // the whole history
  Sampler all(p, 4);
  for (int t : {0, 1, 1, 2}) all.accept(t);
  p.temperature = 0;
  p.repeat_penalty = 3;
  Sampler g(p, 4);  // greedy sees the penalised logits too: id 0 drops to 2/3 < 1
  g.accept(0);
  EXPECT_EQ(g.sample(l.data(), 4), 2);
  const auto& d2 = all.distribution(l.data(), 4);
  for (const auto& c : d2) {
    if (c.id == 0) {
      EXPECT_FLOAT_EQ(c.logit, 1.f);
    }
  }
}

TEST(Sampler, SeedDeterminismAndFrequencies) {
  const auto l = logs({0.5, 0.25, 0.125, 0.125});
  SamplerParams p = plain();
  p.seed = 7;
  Sampler a(p, 4), b(p, 4);
  p.seed = 8;
  Sampler c(p, 4);
  std::vector<int> sa, sb, sc;
  for (int i = 0; i < 200; ++i) {
    sa.push_back(a.sample(l.data(), 4));
    sb.push_back(b.sample(l.data(), 4));
    sc.push_back(c.sample(l.data(), 4));
  }
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);  // equal with probability < 1e-40
  a.reset();
  for (int i = 0; i < 200; ++i) ASSERT_EQ(a.sample(l.data(), 4), sa[size_t(i)]);
  // Empirical frequencies of 200k draws within 5 standard deviations of the probabilities.
  const int n = 200000;
  std::vector<int> count(4);
  for (int i = 0; i < n; ++i) ++count[size_t(a.sample(l.data(), 4))];
  const double want[] = {0.5, 0.25, 0.125, 0.125};
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(count[size_t(i)] / double(n), want[i], 5 * std::sqrt(want[i] * (1 - want[i]) / n)) << "id " << i;
}

TEST(Sampler, PaddedVocabularyIsNeverSampled) {
  std::vector<float> l = {0.f, 0.1f, 0.2f, 0.3f, 0.4f, 50.f, 60.f, 70.f};  // ids 5..7: padding rows
  SamplerParams p = plain();
  p.temperature = 0;
  Sampler g(p, 5);
  EXPECT_EQ(g.sample(l.data(), 8), 4);
  Sampler s(plain(), 5);
  for (int i = 0; i < 2000; ++i) ASSERT_LT(s.sample(l.data(), 8), 5);
  EXPECT_THROW(s.sample(l.data(), 4), Error);  // shorter than the vocabulary
}

TEST(Sampler, RejectsBadParametersAndLogits) {
  auto make = [](auto edit) {
    SamplerParams p;
    edit(p);
    return Sampler(p, 10);
  };
  EXPECT_THROW(make([](SamplerParams& p) { p.top_k = -1; }), Error);
  EXPECT_THROW(make([](SamplerParams& p) { p.min_p = 1.5; }), Error);
  EXPECT_THROW(make([](SamplerParams& p) { p.top_p = -0.1; }), Error);
  EXPECT_THROW(make([](SamplerParams& p) { p.repeat_penalty = 0; }), Error);
  EXPECT_THROW(make([](SamplerParams& p) { p.repeat_last_n = -2; }), Error);
  EXPECT_THROW(make([](SamplerParams& p) { p.temperature = NAN; }), Error);
  EXPECT_THROW(Sampler(SamplerParams{}, 0), Error);
  Sampler s(plain(), 3);
  std::vector<float> nan = {0.f, NAN, 1.f}, inf = {0.f, INFINITY, 1.f}, none = {-INFINITY, -INFINITY, -INFINITY};
  EXPECT_THROW(s.sample(nan.data(), 3), Error);
  EXPECT_THROW(s.sample(inf.data(), 3), Error);
  EXPECT_THROW(s.sample(none.data(), 3), Error);
  std::vector<float> masked = {-INFINITY, 2.f, -INFINITY};
  EXPECT_EQ(s.sample(masked.data(), 3), 1);
}

TEST(Sampler, NoHeapAllocationPerCall) {
  std::vector<float> l(50277);
  for (size_t i = 0; i < l.size(); ++i) l[i] = float(std::sin(double(i) * 0.37) * 4);
  SamplerParams p;
  p.temperature = 0.8;
  p.top_k = 40;
  p.top_p = 0.95;
  p.min_p = 0.05;
  p.repeat_penalty = 1.1;
  p.repeat_last_n = 64;
  Sampler s(p, int64_t(l.size()));
  for (int i = 0; i < 100; ++i) s.accept(s.sample(l.data(), int64_t(l.size())));  // history fills up
  const long before = g_allocs.load();
  for (int i = 0; i < 100; ++i) s.accept(s.sample(l.data(), int64_t(l.size())));
  EXPECT_EQ(g_allocs.load() - before, 0);
}

TEST(TextStream, HoldsIncompleteUtf8) {
  TextStream t;
  EXPECT_EQ(t.push("a\xE2\x82"), "a");
  EXPECT_EQ(t.push("\xAC!"), "\xE2\x82\xAC!");  // €
  EXPECT_EQ(t.push("\xFF"
                   "b"),
            "\xEF\xBF\xBD"
            "b");  // an invalid byte becomes U+FFFD at once
  EXPECT_EQ(t.push("\xF0\x9F"), "");
  EXPECT_EQ(t.flush(), "\xEF\xBF\xBD");  // a truncated sequence at the end: one U+FFFD
  EXPECT_EQ(t.text(),
            "a\xE2\x82\xAC!\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
}

TEST(TextStream, StopStrings) {
  TextStream t({"END", "\n\n"});
  EXPECT_EQ(t.push("abE"), "ab");  // "E" may start "END"
  EXPECT_EQ(t.push("x"), "Ex");
  EXPECT_EQ(t.push("yEN"), "y");
  EXPECT_FALSE(t.stopped());
  EXPECT_EQ(t.push("D and more"), "");
  EXPECT_TRUE(t.stopped());
  EXPECT_EQ(t.push("later"), "");
  EXPECT_EQ(t.flush(), "");
  EXPECT_EQ(t.text(), "abExy");
  TextStream u({"END", "\n\n"});
  EXPECT_EQ(u.push("one\n\ntwo END"), "one");
  EXPECT_TRUE(u.stopped());
}

}  // namespace
}  // namespace ssm
