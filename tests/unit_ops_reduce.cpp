// Reductions: fast f32 kernels vs the reference loops (every layout the fast path distinguishes),
// hand-checked values, NaN and tie rules, f64 gradient checks, and argument errors.
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

TEST(Reduce, SumMeanFastMatchesReference) {
  struct Case {
    Shape shape;
    std::vector<int64_t> dims;
  };
  for (int64_t n : kSizes) {
    std::vector<Case> cases = {{{3, n}, {1}},          {{3, n}, {0}},       {{3, n}, {}},        {{n}, {0}},
                               {{2, n, 3}, {1}},       {{2, n, 3}, {0, 2}}, {{2, n, 3}, {0, 1}}, {{2, 3, n}, {-1, 0}},
                               {{1, n, 1, 2}, {0, 2}}, {{2, n, 3}, {}}};
    for (const auto& c : cases) {
      Tensor x = Tensor::rand(c.shape, uint64_t(n), -1, 1);  // f32
      int64_t count = 1;
      for (int64_t d : c.dims) count *= c.shape[size_t(d < 0 ? d + int64_t(c.shape.size()) : d)];
      if (c.dims.empty()) count = x.numel();
      // f32 accumulation of `count` terms with |x| <= 1 (16 lanes, then a short serial tail): the error
      // is a few eps * count at worst; the reference sums in double.
      double atol = 4e-7 * double(count);
      for (bool keep : {false, true}) {
        Tensor fs = sum(x, c.dims, keep), rs = reference([&] { return sum(x, c.dims, keep); });
        EXPECT_TRUE(AllClose(fs, rs, 0, atol)) << shape_str(c.shape) << " sum keepdim=" << keep;
        Tensor fm = mean(x, c.dims, keep), rm = reference([&] { return mean(x, c.dims, keep); });
        EXPECT_TRUE(AllClose(fm, rm, 0, atol / double(count))) << shape_str(c.shape) << " mean";
      }
    }
  }
}

TEST(Reduce, MaxFastMatchesReference) {
  for (int64_t n : kSizes) {
    for (Shape s : {Shape{3, n}, Shape{n, 5}, Shape{2, n, 7}, Shape{n}}) {
      Tensor x = Tensor::randn(s, uint64_t(n) + 100);
      for (int64_t d = 0; d < int64_t(s.size()); ++d) {
        // Max and argmax select an input element: the paths must agree exactly.
        EXPECT_TRUE(AllClose(amax(x, d), reference([&] { return amax(x, d); }), 0, 0)) << shape_str(s) << " d=" << d;
        EXPECT_EQ(argmax(x, d).to_vector_i64(), reference([&] { return argmax(x, d); }).to_vector_i64());
      }
    }
  }
}

TEST(Reduce, HandChecked) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(sum(x, {0}).to_vector_f32(), (std::vector<float>{5, 7, 9}));
  EXPECT_EQ(sum(x, {1}, true).shape(), (Shape{2, 1}));
  EXPECT_EQ(sum(x, {1}, true).to_vector_f32(), (std::vector<float>{6, 15}));
  EXPECT_EQ(sum(x).shape(), Shape{});
  EXPECT_EQ(sum(x).item(), 21);
  EXPECT_EQ(mean(x).item(), 3.5);
  EXPECT_EQ(mean(x, {0, 1}, true).shape(), (Shape{1, 1}));
  EXPECT_EQ(amax(x, 1).to_vector_f32(), (std::vector<float>{3, 6}));
  EXPECT_EQ(argmax(x, 0).to_vector_i64(), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_EQ(argmax(x, 0, true).shape(), (Shape{1, 3}));
  EXPECT_EQ(argmax(x, 0).dtype(), DType::i64);
  // Non-contiguous input.
  EXPECT_EQ(sum(x.transpose(0, 1), {1}).to_vector_f32(), (std::vector<float>{5, 7, 9}));
  // Empty reductions: sum is 0, mean is 0/0 = NaN (as PyTorch).
  Tensor e = Tensor::zeros({0, 3});
  EXPECT_EQ(sum(e, {0}).to_vector_f32(), (std::vector<float>{0, 0, 0}));
  EXPECT_TRUE(std::isnan(mean(e, {0}).to_vector_f32()[0]));
}

TEST(Reduce, TiesNaNAndInfinity) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    for (int64_t n : {7, 40}) {  // below and above the 16-lane block
      std::vector<float> v(size_t(n), 1.0f);
      v[3] = 5;
      v[size_t(n) - 2] = 5;  // tie: the first index wins
      Tensor t = Tensor::from_vector(v, {n});
      EXPECT_EQ(argmax(t, 0).item(), 3);
      v[size_t(n) - 1] = nan;  // NaN is the max (PyTorch), first NaN index
      v[5] = nan;
      t = Tensor::from_vector(v, {n});
      EXPECT_TRUE(std::isnan(amax(t, 0).item()));
      EXPECT_EQ(argmax(t, 0).item(), 5);
      std::vector<float> w(size_t(n), -inf);
      w[4] = inf;
      EXPECT_EQ(argmax(Tensor::from_vector(w, {n}), 0).item(), 4);
      EXPECT_EQ(amax(Tensor::from_vector(std::vector<float>(size_t(n), -inf), {n}), 0).item(), -inf);
      // Column layout (reduced dim not last): [n, 2], column 1 holds a NaN.
      std::vector<float> c(size_t(2 * n), 0.0f);
      c[2 * 2 + 1] = nan;
      c[2 * 1 + 0] = 3;
      Tensor ct = Tensor::from_vector(c, {n, 2});
      EXPECT_EQ(argmax(ct, 0).to_vector_i64(), (std::vector<int64_t>{1, 2}));
      EXPECT_TRUE(std::isnan(amax(ct, 0).to_vector_f32()[1]));
    }
  }
}

TEST(Reduce, GradientsF64) {
  auto r = [](Shape s, uint64_t seed) { return Tensor::rand(s, seed, -2, 2, DType::f64); };
  expect_grad([](const std::vector<Tensor>& in) { return sum(in[0]); }, {r({3, 4}, 1)});
  expect_grad([](const std::vector<Tensor>& in) { return sum(in[0], {1}); }, {r({3, 4, 2}, 2)});
  expect_grad([](const std::vector<Tensor>& in) { return sum(in[0], {0, 2}, true); }, {r({3, 4, 2}, 3)});
  expect_grad([](const std::vector<Tensor>& in) { return mean(in[0], {-1}); }, {r({3, 5}, 4)});
  expect_grad([](const std::vector<Tensor>& in) { return mean(in[0], {0, 2}, true); }, {r({3, 4, 2}, 5)});
  // Random values are distinct (gaps >> eps), so the max is locally a smooth selection.
  expect_grad([](const std::vector<Tensor>& in) { return amax(in[0], 1); }, {r({3, 5}, 6)});
  expect_grad([](const std::vector<Tensor>& in) { return amax(in[0], 0, true); }, {r({4, 3, 2}, 7)});
  expect_grad([](const std::vector<Tensor>& in) { return sum(in[0].transpose(0, 1), {0}); }, {r({3, 4}, 8)});
}

TEST(Reduce, AmaxGradientGoesToFirstMax) {
  Tensor x = Tensor::from_vector(std::vector<double>{1, 4, 4, 2}, {4}).set_requires_grad(true);
  amax(x, 0).backward();
  EXPECT_EQ(x.grad().to_vector_f64(), (std::vector<double>{0, 1, 0, 0}));
}

TEST(Reduce, Errors) {
  Tensor x = Tensor::zeros({2, 3});
  expect_error([&] { sum(x, {2}); }, "[sum] dimension 2 out of range for a tensor of 2 dims");
  expect_error([&] { mean(x, {1, -1}); }, "[mean] dimension -1 listed twice");
  expect_error([&] { sum(Tensor::zeros({3}, DType::i64)); }, "[sum] x must be f32 or f64, got i64");
  expect_error([&] { amax(x, -3); }, "[amax] dimension -3 out of range");
  expect_error([&] { argmax(Tensor::zeros({2, 0}), 1); }, "[argmax] cannot reduce dimension 1 of size 0");
  expect_error([&] { amax(Tensor(), 0); }, "[amax] x is undefined");
}

}  // namespace
}  // namespace ssm
