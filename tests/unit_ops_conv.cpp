// causal_conv1d: a hand-computed case, fast f32 kernels vs the reference loops (forward and
// backward), chunked == whole (initial_state carries the history), f64 finite-difference gradient
// checks of every input through both outputs, and argument errors.
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

// y and final_state as one flat tensor, so one scalar objective covers both outputs.
Tensor both(const Conv1dOut& o) { return concat({o.y.reshape({-1}), o.final_state.reshape({-1})}, 0); }

TEST(CausalConv1d, HandComputed) {
  // D = 2 channels, W = 3, L = 2, history h = [[1, 10], [2, 20]].
  Tensor x = vec({3, 30, 4, 40}, {1, 2, 2});       // [B=1, L=2, D=2]
  Tensor w = vec({1, 2, 3, 0.5f, 0, -1}, {2, 3});  // [D, W]
  Tensor b = vec({0.25f, 1}, {2});
  Tensor h = vec({1, 10, 2, 20}, {1, 2, 2});  // [B, W-1, D]
  // ch0: t0 = 1·1 + 2·2 + 3·3 = 14, t1 = 1·2 + 2·3 + 3·4 = 20
  // ch1: t0 = .5·10 - 30 = -25, t1 = .5·20 - 40 = -30
  Tensor want = vec({14.25f, -24, 20.25f, -29}, {1, 2, 2});
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    Conv1dOut o = causal_conv1d(x, w, b, h, false);
    EXPECT_TRUE(AllClose(o.y, want, 0)) << "exact small numbers";
    EXPECT_TRUE(AllClose(o.final_state, x, 0)) << "last W-1 = 2 inputs";
    // No history = zeros: t0 = 3·x0 only.
    Conv1dOut z = causal_conv1d(x, w, Tensor(), Tensor(), false);
    EXPECT_TRUE(AllClose(z.y, vec({9, -30, 2 * 3 + 3 * 4, 0 * 30 - 40}, {1, 2, 2}), 0));
    // L = 1 < W - 1: the final state keeps one step of history.
    Conv1dOut s = causal_conv1d(x.slice(1, 0, 1), w, b, h, true);
    EXPECT_TRUE(AllClose(s.final_state, vec({2, 20, 3, 30}, {1, 2, 2}), 0));
    const float p0 = 14.25f, p1 = -24;
    EXPECT_TRUE(AllClose(s.y, vec({p0 / (1 + std::exp(-p0)), p1 / (1 + std::exp(-p1))}, {1, 1, 2}), 1e-6))
        << "SiLU, f32 rounding";
  }
}

TEST(CausalConv1d, FastMatchesReference) {
  // rtol 2e-5: W-term f32 sums vs double sums, then SiLU with the branch-free exp (~2 ulp); the
  // weight gradient sums B·L products per channel in blocks vs sequentially.
  for (int64_t L : {1, 2, 7, 33, 257, 2049}) {
    for (int64_t W : {2, 4, 8}) {
      const int64_t D = L > 257 ? 37 : 64 + 3;
      SCOPED_TRACE("L " + std::to_string(L) + " W " + std::to_string(W));
      Tensor x = randn({2, L, D}, L), w = randn({D, W}, W), b = randn({D}, 3), h = randn({2, W - 1, D}, 4);
      for (bool silu : {false, true}) {
        auto f = [silu](const std::vector<Tensor>& in) {
          return both(causal_conv1d(in[0], in[1], in[2], in[3], silu));
        };
        RunResult fast = run(f, {x, w, b, h}), ref;
        {
          ReferenceKernelsGuard g(true);
          ref = run(f, {x, w, b, h});
        }
        EXPECT_TRUE(AllClose(fast.out, ref.out, 2e-5)) << "forward silu=" << silu;
        for (size_t i = 0; i < 4; ++i) EXPECT_TRUE(AllClose(fast.grads[i], ref.grads[i], 2e-5)) << "grad " << i;
      }
      // Without bias and history, and gradient only through y.
      auto g = [](const std::vector<Tensor>& in) { return causal_conv1d(in[0], in[1], Tensor(), Tensor(), true).y; };
      RunResult fast = run(g, {x, w}), ref;
      {
        ReferenceKernelsGuard guard(true);
        ref = run(g, {x, w});
      }
      EXPECT_TRUE(AllClose(fast.out, ref.out, 2e-5));
      EXPECT_TRUE(AllClose(fast.grads[0], ref.grads[0], 2e-5));
      EXPECT_TRUE(AllClose(fast.grads[1], ref.grads[1], 2e-5));
    }
  }
}

TEST(CausalConv1d, ChunkedEqualsWhole) {
  // Running the sequence in pieces, each starting from the previous final_state, gives the same y
  // and final state as one pass: exact, since every output sums the same terms in the same order.
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    for (int64_t W : {2, 4, 5}) {
      const int64_t B = 2, L = 50, D = 19;
      Tensor x = randn({B, L, D}, 1), w = randn({D, W}, 2), b = randn({D}, 3), h0 = randn({B, W - 1, D}, 4);
      Conv1dOut whole = causal_conv1d(x, w, b, h0, true);
      std::vector<Tensor> ys;
      Tensor state = h0;
      int64_t t = 0;
      for (int64_t n : {13, 0, 1, 2, 1, 33}) {  // includes an empty chunk and chunks shorter than W - 1
        Conv1dOut part = causal_conv1d(x.slice(1, t, t + n), w, b, state, true);
        ys.push_back(part.y);
        state = part.final_state;
        t += n;
      }
      EXPECT_TRUE(AllClose(concat(ys, 1), whole.y, 0)) << "W " << W << " ref " << ref;
      EXPECT_TRUE(AllClose(state, whole.final_state, 0));
    }
  }
}

TEST(CausalConv1d, GradCheckF64) {
  const DType f64 = DType::f64;
  for (int64_t W : {2, 4}) {
    for (int64_t L : {1, 6}) {  // L = 1 < W - 1 routes history into the final state
      for (bool silu : {false, true}) {
        SCOPED_TRACE("W " + std::to_string(W) + " L " + std::to_string(L) + " silu " + std::to_string(silu));
        const int64_t B = 2, D = 3;
        expect_grad(
            [silu](const std::vector<Tensor>& in) { return both(causal_conv1d(in[0], in[1], in[2], in[3], silu)); },
            {randn({B, L, D}, 1, f64), randn({D, W}, 2, f64), randn({D}, 3, f64), randn({B, W - 1, D}, 4, f64)});
        expect_grad(
            [silu](const std::vector<Tensor>& in) { return causal_conv1d(in[0], in[1], Tensor(), Tensor(), silu).y; },
            {randn({B, L, D}, 5, f64), randn({D, W}, 6, f64)});
        expect_grad(
            [silu](const std::vector<Tensor>& in) {
              return causal_conv1d(in[0], in[1], in[2], in[3], silu).final_state;
            },
            {randn({B, L, D}, 7, f64), randn({D, W}, 8, f64), randn({D}, 9, f64), randn({B, W - 1, D}, 10, f64)});
      }
    }
  }
}

TEST(CausalConv1d, Errors) {
  Tensor x = randn({2, 5, 4}, 1), w = randn({4, 3}, 2);
  expect_error(
      [&] {
        causal_conv1d(x, randn({4, 1}, 2), Tensor(), Tensor(), false);
      },
      "[causal_conv1d] kernel width W=1 is not in [2, 8]");
  expect_error([&] { causal_conv1d(x, randn({4, 9}, 2), Tensor(), Tensor(), false); }, "W=9");
  expect_error([&] { causal_conv1d(x, randn({5, 3}, 2), Tensor(), Tensor(), false); }, "has D=4");
  expect_error(
      [&] {
        causal_conv1d(x, w, Tensor(), randn({2, 3, 4}, 3), false);
      },
      "initial_state has shape [2, 3, 4], expected [2, 2, 4]");
  expect_error([&] { causal_conv1d(x, w, randn({3}, 3), Tensor(), false); }, "bias has shape [3], expected [4]");
  expect_error([&] { causal_conv1d(x, w.to(DType::f64), Tensor(), Tensor(), false); }, "w is f64 but x is f32");
  expect_error([&] { causal_conv1d(randn({5, 4}, 1), w, Tensor(), Tensor(), false); }, "x [B, L, D] must have 3 dims");
}

}  // namespace
}  // namespace ssm
