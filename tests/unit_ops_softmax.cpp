// softmax, log_softmax, cross_entropy: fast f32 vs reference, hand-checked values (stability,
// ignore_index), f64 gradient checks, and errors.
#include <cmath>
#include <functional>
#include <limits>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "testing.h"

namespace ssm {
namespace {

using testing::AllClose;
using testing::expect_error;
using testing::expect_grad;
using testing::reference;
const int64_t kSizes[] = {1, 7, 33, 257, 2049};

TEST(Softmax, FastMatchesReference) {
  for (int64_t n : kSizes) {
    for (Shape s : {Shape{3, n}, Shape{n, 5}, Shape{2, n, 7}}) {
      Tensor x = Tensor::randn(s, uint64_t(n), 0, 4);  // f32, logits of spread 4
      for (int64_t d = 0; d < int64_t(s.size()); ++d) {
        // softmax: f32 exp (~2 ulp) and a 16-lane f32 sum of n terms vs double: relative ~1e-6 of the
        // largest probability. log_softmax: absolute error ~ eps * (|x - max| + log n) < 1e-5.
        Tensor p = softmax(x, d), pr = reference([&] { return softmax(x, d); });
        EXPECT_TRUE(AllClose(p, pr, 2e-6, 1e-7)) << shape_str(s) << " d=" << d;
        Tensor l = log_softmax(x, d), lr = reference([&] { return log_softmax(x, d); });
        EXPECT_TRUE(AllClose(l, lr, 0, 1e-5)) << shape_str(s) << " d=" << d;
      }
    }
  }
}

TEST(Softmax, HandChecked) {
  for (DType dt : {DType::f32, DType::f64}) {
    double tol = dt == DType::f32 ? 3e-7 : 1e-15;
    Tensor x = Tensor::from_vector(std::vector<double>{1, 2, 3}, {3}).to(dt);
    auto p = softmax(x).to_vector_f64();
    EXPECT_NEAR(p[0], 0.09003057317038046, tol);
    EXPECT_NEAR(p[1], 0.24472847105479767, tol);
    EXPECT_NEAR(p[2], 0.6652409557748219, tol);
    EXPECT_NEAR(log_softmax(x).to_vector_f64()[2], -0.40760596444437967, tol);
    // Stability: huge logits and -inf entries.
    auto q = softmax(Tensor::from_vector(std::vector<double>{1000, 1001, -INFINITY}, {3}).to(dt)).to_vector_f64();
    EXPECT_NEAR(q[0], 0.2689414213699951, tol);
    EXPECT_NEAR(q[1], 0.7310585786300049, tol);
    EXPECT_EQ(q[2], 0.0);
  }
}

TEST(CrossEntropy, HandCheckedWithIgnoreIndex) {
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    for (DType dt : {DType::f32, DType::f64}) {
      double tol = dt == DType::f32 ? 5e-7 : 1e-14;
      Tensor logits = Tensor::from_vector(std::vector<double>{1, 2, 3, 1, 1, 1}, {2, 3}).to(dt);
      // Row 0: logsumexp(1,2,3) - 3 = 0.40760596444437967; row 1 ignored.
      EXPECT_NEAR(cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{2, -100}, {2})).item(),
                  0.40760596444437967, tol);
      // Both rows: (0.4076... + ln 3) / 2.
      EXPECT_NEAR(cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{2, 0}, {2})).item(),
                  (0.40760596444437967 + std::log(3.0)) / 2, tol);
      // Custom ignore_index, batched [1, 2, 3] logits with [1, 2] targets.
      EXPECT_NEAR(
          cross_entropy(logits.reshape({1, 2, 3}), Tensor::from_vector(std::vector<int64_t>{7, 0}, {1, 2}), 7).item(),
          std::log(3.0), tol);
      // Every target ignored: 0/0 = NaN, as PyTorch.
      EXPECT_TRUE(std::isnan(cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{-100, -100}, {2})).item()));
    }
  }
}

TEST(CrossEntropy, FastMatchesReference) {
  for (int64_t V : kSizes) {
    Tensor logits = Tensor::randn({9, V}, uint64_t(V), 0, 3);
    std::vector<int64_t> t(9);
    for (int64_t i = 0; i < 9; ++i) t[size_t(i)] = (i * 7919) % V;
    t[4] = -100;
    Tensor targets = Tensor::from_vector(t, {9});
    double fast = cross_entropy(logits, targets).item();
    double ref = reference([&] { return cross_entropy(logits, targets); }).item();
    // Per row: f32 max/exp/sum/log vs double; the loss is O(log V + 3) so 1e-5 absolute is ~1e-6 relative.
    EXPECT_NEAR(fast, ref, 1e-5) << "V=" << V;
  }
}

TEST(Softmax, GradientsF64) {
  auto r = [](Shape s, uint64_t seed) { return Tensor::randn(s, seed, 0, 2, DType::f64); };
  expect_grad([](const std::vector<Tensor>& in) { return softmax(in[0]); }, {r({3, 5}, 1)});
  expect_grad([](const std::vector<Tensor>& in) { return softmax(in[0], 0); }, {r({3, 5}, 2)});
  expect_grad([](const std::vector<Tensor>& in) { return log_softmax(in[0]); }, {r({3, 5}, 3)});
  expect_grad([](const std::vector<Tensor>& in) { return log_softmax(in[0], 1); }, {r({2, 4, 3}, 4)});
  Tensor t = Tensor::from_vector(std::vector<int64_t>{1, -100, 4, 0, 2, 4}, {2, 3});
  expect_grad([t](const std::vector<Tensor>& in) { return cross_entropy(in[0], t); }, {r({2, 3, 5}, 5)});
  Tensor t2 = Tensor::from_vector(std::vector<int64_t>{3, 3, 0}, {3});
  expect_grad([t2](const std::vector<Tensor>& in) { return mul_scalar(cross_entropy(in[0], t2, 0), 3.0); },
              {r({3, 4}, 6)});
}

TEST(CrossEntropy, GradientOfF32MatchesF64) {
  Tensor l64 = Tensor::randn({5, 257}, 9, 0, 2, DType::f64);
  Tensor t = Tensor::from_vector(std::vector<int64_t>{3, 200, -100, 0, 256}, {5});
  Tensor a = l64.clone().set_requires_grad(true), b = l64.to(DType::f32).set_requires_grad(true);
  cross_entropy(a, t).backward();
  cross_entropy(b, t).backward();
  EXPECT_TRUE(AllClose(b.grad(), a.grad(), 1e-6, 1e-8));  // f32 softmax probabilities, |grad| <= 1/4
  auto g = a.grad().to_vector_f64();
  for (int64_t j = 0; j < 257; ++j) EXPECT_EQ(g[size_t(2 * 257 + j)], 0.0);  // the ignored row
}

TEST(Softmax, Errors) {
  Tensor logits = Tensor::zeros({2, 5});
  expect_error(
      [&] {
        cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{1, 5}, {2}));
      },
      "[cross_entropy] target 5 at position 1 is out of range for 5 classes");
  expect_error(
      [&] {
        cross_entropy(logits, Tensor::from_vector(std::vector<int64_t>{-1, 0}, {2}));
      },
      "target -1 at position 0 is out of range");
  expect_error([&] { cross_entropy(logits, Tensor::zeros({2}, DType::f32)); }, "[cross_entropy] targets must be i64");
  expect_error([&] { cross_entropy(logits, Tensor::zeros({3}, DType::i64)); },
               "[cross_entropy] targets have shape [3] but logits [2, 5] need targets of shape [2]");
  expect_error([&] { softmax(Tensor::zeros({2}, DType::i32)); }, "[softmax] x must be f32 or f64, got i32");
  expect_error([&] { log_softmax(logits, 2); }, "[log_softmax] dimension 2 out of range");
}

}  // namespace
}  // namespace ssm
