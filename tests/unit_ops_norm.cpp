// rms_norm, layer_norm, rms_norm_add, layer_norm_add, gated_rms_norm: hand-computed cases, fast f32
// kernels vs the reference loops (forward and backward), f64 finite-difference gradient checks of
// every input, and argument errors.
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "testing.h"

namespace ssm {
namespace {

using testing::AllClose;
using testing::expect_error;
using testing::expect_fast_matches_reference;
using testing::expect_grad;
using testing::run;
using testing::RunResult;
using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::f32) { return Tensor::randn(s, seed, 0, 1, dt); }
Tensor vec(std::vector<float> v, const Shape& s) { return Tensor::from_vector(v, s); }

// Output and input gradients of f on fresh leaf copies of `inputs`, backpropagating a fixed random dy.

float silu(float z) { return z / (1.f + std::exp(-z)); }

// ---- hand-computed ---------------------------------------------------------------------------------

TEST(Norm, HandComputed) {
  // rtol 1e-6: f32 rounding of a handful of operations.
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    // RMS of [3, 4] is sqrt(12.5).
    const float r = 1.f / std::sqrt(12.5f + 1e-5f);
    EXPECT_TRUE(AllClose(rms_norm(vec({3, 4}, {1, 2}), vec({1, 2}, {2}), 1e-5), vec({3 * r, 8 * r}, {1, 2}), 1e-6));
    // [1, 2, 3]: mean 2, variance 2/3.
    const float s = 1.f / std::sqrt(2.f / 3.f + 1e-5f);
    EXPECT_TRUE(AllClose(layer_norm(vec({1, 2, 3}, {3}), vec({1, 2, 3}, {3}), vec({0, 1, 0}, {3}), 1e-5),
                         vec({-s, 1, 3 * s}, {3}), 1e-6));
    EXPECT_TRUE(
        AllClose(layer_norm(vec({1, 2, 3}, {3}), vec({1, 2, 3}, {3}), Tensor(), 1e-5), vec({-s, 0, 3 * s}, {3}), 1e-6));
    // Gated, two groups of two: g = x · silu(z), each group scaled by its own RMS.
    const float x[4] = {1, 2, 3, 4}, z[4] = {0.5f, 1, -1, 2}, w[4] = {1, 0.5f, 2, -1};
    float gv[4], want_a[4], want_b[4];
    for (int i = 0; i < 4; ++i) gv[i] = x[i] * silu(z[i]);
    for (int grp = 0; grp < 2; ++grp) {
      const int i = 2 * grp;
      const float ra = 1.f / std::sqrt((gv[i] * gv[i] + gv[i + 1] * gv[i + 1]) / 2 + 1e-5f);
      const float rb = 1.f / std::sqrt((x[i] * x[i] + x[i + 1] * x[i + 1]) / 2 + 1e-5f);
      for (int j = i; j < i + 2; ++j) {
        want_a[j] = gv[j] * ra * w[j];
        want_b[j] = x[j] * rb * w[j] * silu(z[j]);
      }
    }
    Tensor X = vec({1, 2, 3, 4}, {1, 4}), Z = vec({0.5f, 1, -1, 2}, {1, 4}), Wt = vec({1, 0.5f, 2, -1}, {4});
    EXPECT_TRUE(AllClose(gated_rms_norm(X, Z, Wt, 2, 1e-5, false),
                         vec({want_a[0], want_a[1], want_a[2], want_a[3]}, {1, 4}), 1e-6));
    EXPECT_TRUE(AllClose(gated_rms_norm(X, Z, Wt, 2, 1e-5, true),
                         vec({want_b[0], want_b[1], want_b[2], want_b[3]}, {1, 4}), 1e-6));
    // One group and no gate is a plain RMSNorm.
    EXPECT_TRUE(AllClose(gated_rms_norm(X, Tensor(), Wt, 4, 1e-5), rms_norm(X, Wt, 1e-5), 1e-7));
  }
}

TEST(Norm, AddKeepsResidual) {
  Tensor x = randn({3, 5, 16}, 1), res = randn({3, 5, 16}, 2), w = randn({16}, 3), b = randn({16}, 4);
  NormAdd r = rms_norm_add(x, res, w, 1e-5);
  EXPECT_TRUE(AllClose(r.residual, add(x, res), 0)) << "exact f32 add";
  EXPECT_TRUE(AllClose(r.out, rms_norm(add(x, res), w, 1e-5), 0)) << "same kernel on the same input";
  NormAdd first = layer_norm_add(x, Tensor(), w, b, 1e-5);  // no residual yet: residual = x
  EXPECT_TRUE(AllClose(first.residual, x, 0));
  EXPECT_FALSE(first.residual.same(x)) << "a new tensor, not an alias of x";
  EXPECT_TRUE(AllClose(first.out, layer_norm(x, w, b, 1e-5), 0));
}

// ---- fast vs reference -----------------------------------------------------------------------------

TEST(Norm, FastMatchesReference) {
  // rtol 2e-5: f32 statistics over <= 67 channels summed in a different order (8 lanes vs sequential
  // double), then propagated through rsqrt and the backward's two reductions.
  for (int64_t R : {1, 7, 33, 257, 2049}) {
    for (int64_t C : {64, 67}) {
      SCOPED_TRACE("rows " + std::to_string(R) + " C " + std::to_string(C));
      Tensor x = randn({R, C}, R + C), res = randn({R, C}, 2), z = randn({R, C}, 3);
      Tensor w = Tensor::rand({C}, 4, 0.5, 1.5), b = randn({C}, 5);
      expect_fast_matches_reference([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-5); }, {x, w},
                                    2e-5);
      expect_fast_matches_reference([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
                                    {x, w, b}, 2e-5);
      expect_fast_matches_reference(
          [](const std::vector<Tensor>& in) {
            NormAdd r = rms_norm_add(in[0], in[1], in[2], 1e-5);
            return add(r.out, mul_scalar(r.residual, 0.5));
          },
          {x, res, w}, 2e-5);
      expect_fast_matches_reference(
          [](const std::vector<Tensor>& in) {
            NormAdd r = layer_norm_add(in[0], in[1], in[2], in[3], 1e-5);
            return add(r.out, mul_scalar(r.residual, 0.5));
          },
          {x, res, w, b}, 2e-5);
      const int64_t group = C == 64 ? 16 : 67;
      for (bool nbg : {false, true}) {
        expect_fast_matches_reference(
            [&](const std::vector<Tensor>& in) { return gated_rms_norm(in[0], in[1], in[2], group, 1e-5, nbg); },
            {x, z, w}, 2e-5);
      }
      expect_fast_matches_reference(
          [&](const std::vector<Tensor>& in) { return gated_rms_norm(in[0], Tensor(), in[1], group, 1e-5); }, {x, w},
          2e-5);
    }
  }
}

// ---- gradients ---------------------------------------------------------------------------------------

TEST(Norm, GradCheckF64) {
  const DType f64 = DType::f64;
  auto x = [&](uint64_t s) { return randn({2, 3, 8}, s, f64); };
  auto w = [&](uint64_t s) { return Tensor::rand({8}, s, 0.5, 1.5, f64); };
  expect_grad([](const std::vector<Tensor>& in) { return rms_norm(in[0], in[1], 1e-5); }, {x(1), w(2)});
  expect_grad([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], in[2], 1e-5); },
              {x(3), w(4), randn({8}, 5, f64)});
  expect_grad([](const std::vector<Tensor>& in) { return layer_norm(in[0], in[1], Tensor(), 1e-5); }, {x(6), w(7)});
  // Both outputs of the fused add+norm carry gradient (the residual stream continues to the next block).
  expect_grad(
      [](const std::vector<Tensor>& in) {
        NormAdd r = rms_norm_add(in[0], in[1], in[2], 1e-5);
        return add(r.out, mul_scalar(r.residual, 0.7));
      },
      {x(8), x(9), w(10)});
  expect_grad(
      [](const std::vector<Tensor>& in) {
        NormAdd r = layer_norm_add(in[0], in[1], in[2], in[3], 1e-5);
        return add(r.out, mul_scalar(r.residual, 0.7));
      },
      {x(11), x(12), w(13), randn({8}, 14, f64)});
  expect_grad([](const std::vector<Tensor>& in) { return rms_norm_add(in[0], Tensor(), in[1], 1e-5).out; },
              {x(15), w(16)});
  expect_grad([](const std::vector<Tensor>& in) { return rms_norm_add(in[0], in[1], in[2], 1e-5).residual; },
              {x(17), x(18), w(19)});
  for (int64_t group : {8, 4, 2}) {
    for (bool nbg : {false, true}) {
      SCOPED_TRACE("group " + std::to_string(group) + " norm_before_gate " + std::to_string(nbg));
      expect_grad([&](const std::vector<Tensor>& in) { return gated_rms_norm(in[0], in[1], in[2], group, 1e-5, nbg); },
                  {x(20), x(21), w(22)});
    }
    expect_grad([&](const std::vector<Tensor>& in) { return gated_rms_norm(in[0], Tensor(), in[1], group, 1e-5); },
                {x(23), w(24)});
  }
}

TEST(Norm, Errors) {
  Tensor x = randn({2, 8}, 1), w = randn({8}, 2);
  expect_error([&] { rms_norm(x, randn({7}, 2), 1e-5); }, "[rms_norm] w has shape [7], expected [8]");
  expect_error([&] { rms_norm(x, w.to(DType::f64), 1e-5); }, "w is f64 but x is f32");
  expect_error([&] { layer_norm(x, w, randn({4}, 3), 1e-5); }, "b has shape [4], expected [8]");
  expect_error([&] { rms_norm_add(x, randn({2, 7}, 3), w, 1e-5); }, "[rms_norm_add] residual has shape");
  expect_error([&] { gated_rms_norm(x, Tensor(), w, 3, 1e-5); }, "group_size 3 must be >= 1 and divide the 8");
  expect_error([&] { gated_rms_norm(x, randn({2, 4}, 3), w, 4, 1e-5); }, "z has shape [2, 4], expected [2, 8]");
  expect_error([&] { rms_norm(x, w, -1); }, "eps must be finite and >= 0");
  expect_error([&] { rms_norm(x, Tensor(), 1e-5); }, "w is undefined");
}

}  // namespace
}  // namespace ssm
