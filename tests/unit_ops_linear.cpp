// matmul, linear, embedding: hand-computed cases, fast f32 kernels vs the reference loops (forward
// and backward), f64 finite-difference gradient checks, bf16/f16 weights vs their f32 widening, errors.
#include <functional>
#include <string>
#include <vector>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ops/matvec.h"
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

// ---- matmul -------------------------------------------------------------------------------------

TEST(Matmul, HandComputed) {
  Tensor a = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});     // [2, 3]
  Tensor b = Tensor::from_vector(std::vector<float>{7, 8, 9, 10, 11, 12}, {3, 2});  // [3, 2]
  Tensor want = Tensor::from_vector(std::vector<float>{58, 64, 139, 154}, {2, 2});
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    EXPECT_TRUE(AllClose(matmul(a, b), want, 0)) << "exact small integers";
    // The same product from transposed storage.
    Tensor at = a.transpose(0, 1).contiguous(), bt = b.transpose(0, 1).contiguous();
    EXPECT_TRUE(AllClose(matmul(at, b, true, false), want, 0));
    EXPECT_TRUE(AllClose(matmul(a, bt, false, true), want, 0));
    EXPECT_TRUE(AllClose(matmul(at, bt, true, true), want, 0));
    // One row / one column (the GEMV paths).
    EXPECT_TRUE(AllClose(matmul(a.slice(0, 1, 2), b), want.slice(0, 1, 2).contiguous(), 0));
    EXPECT_TRUE(AllClose(matmul(a, b.slice(1, 1, 2).contiguous()), want.slice(1, 1, 2).contiguous(), 0));
    EXPECT_TRUE(AllClose(matmul(at.slice(1, 1, 2).contiguous(), bt, true, true), want.slice(0, 1, 2).contiguous(), 0));
    EXPECT_TRUE(AllClose(matmul(at, bt.slice(0, 0, 1).contiguous(), true, true), want.slice(1, 0, 1).contiguous(), 0));
  }
}

TEST(Matmul, FastMatchesReference) {
  // rtol 1e-5: same products, different summation order in f32 (K <= 70).
  for (int64_t M : {1, 7, 33, 257}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        SCOPED_TRACE("M=" + std::to_string(M) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
        const int64_t K = 67, N = 19;
        Shape sa = ta ? Shape{3, K, M} : Shape{3, M, K};
        Tensor a = randn(sa, 1 + M), bb = randn(tb ? Shape{3, N, K} : Shape{3, K, N}, 2 + M);
        Tensor b2 = randn(tb ? Shape{N, K} : Shape{K, N}, 3 + M);
        auto f = [&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); };
        expect_fast_matches_reference(f, {a, bb}, 1e-5);
        expect_fast_matches_reference(f, {a, b2}, 1e-5);
        expect_fast_matches_reference(f, {a.select(0, 1).contiguous(), b2}, 1e-5);
      }
    }
  }
}

TEST(Matmul, GradCheckF64) {
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      SCOPED_TRACE("ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
      auto f = [&](const std::vector<Tensor>& in) { return matmul(in[0], in[1], ta, tb); };
      const int64_t M = 3, K = 4, N = 5;
      auto a = [&](uint64_t seed) { return randn(ta ? Shape{2, K, M} : Shape{2, M, K}, seed, DType::f64); };
      expect_grad(f, {a(11), randn(tb ? Shape{2, N, K} : Shape{2, K, N}, 12, DType::f64)});
      expect_grad(f, {a(12), randn(tb ? Shape{N, K} : Shape{K, N}, 13, DType::f64)});  // b 2-D: batch-summed
      expect_grad(f, {a(13).select(0, 0).contiguous(), randn(tb ? Shape{N, K} : Shape{K, N}, 14, DType::f64)});
      expect_grad(f, {randn(ta ? Shape{K, 1} : Shape{1, K}, 15, DType::f64),
                      randn(tb ? Shape{N, K} : Shape{K, N}, 16, DType::f64)});
    }
}

TEST(Matmul, Errors) {
  Tensor a = randn({2, 3}, 1), b = randn({4, 5}, 2);
  expect_error([&] { matmul(a, b); }, "[matmul] inner dims differ");
  expect_error([&] { matmul(randn({2, 2, 3}, 1), randn({3, 3, 5}, 2)); }, "batch dims differ");
  expect_error([&] { matmul(a, randn({3, 5}, 2, DType::f64)); }, "a is f32 but b is f64");
  expect_error([&] { matmul(randn({3}, 1), b); }, "at least 2 dims");
  expect_error([&] { matmul(a, Tensor()); }, "b is undefined");
}

// ---- linear -------------------------------------------------------------------------------------

TEST(Linear, HandComputed) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3, -1, 0, 2}, {2, 3});     // [2, 3]
  Tensor w = Tensor::from_vector(std::vector<float>{1, 0, 1, 2, -1, 0.5f}, {2, 3});  // [2, 3]
  Tensor b = Tensor::from_vector(std::vector<float>{0.5f, -1}, {2});
  // row 0: [1+3, 2-2+1.5] ; row 1: [-1+2, -2+1]
  Tensor want = Tensor::from_vector(std::vector<float>{4.5f, 0.5f, 1.5f, -2}, {2, 2});
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    EXPECT_TRUE(AllClose(linear(x, w, b), want, 0)) << "exact in f32";
    EXPECT_TRUE(AllClose(linear(x.slice(0, 0, 1), w, b), want.slice(0, 0, 1).contiguous(), 0));
    EXPECT_TRUE(AllClose(linear(x.select(0, 1), w, b), want.select(0, 1).contiguous(), 0)) << "1-D x";
    for (DType dt : {DType::bf16, DType::f16})  // all values are exact in bf16 and f16
      EXPECT_TRUE(AllClose(linear(x.view({2, 1, 3}), w.to(dt), b.to(dt)), want.view({2, 1, 2}), 0));
  }
}

TEST(Linear, FastMatchesReference) {
  // rtol 1e-5: f32 sums of <= 67 products in a different order.
  for (int64_t R : {1, 7, 33, 257, 2049}) {
    SCOPED_TRACE("rows " + std::to_string(R));
    const int64_t I = 67, O = 40;
    Tensor x = randn({1, R, I}, R), w = randn({O, I}, R + 1), b = randn({O}, R + 2);
    expect_fast_matches_reference([](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); }, {x, w, b},
                                  1e-5);
    expect_fast_matches_reference([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w}, 1e-5);
  }
}

TEST(Linear, HalfWeightsMatchWidenedF32) {
  // Rows 1..9 cover the 4/2/1-row groupings of the GEMV kernel, 33 and 257 the widened-block GEMM;
  // I covers the 32/24/16-wide steps, the 8-wide step and the scalar tail; O = 600 with I = 1024
  // spans three widened blocks. rtol 1e-5: identical products, different summation order.
  struct Case {
    int64_t I, O;
  };
  for (Case c : {Case{5, 7}, Case{67, 33}, Case{100, 50}, Case{1024, 600}}) {
    for (int64_t R : {1, 2, 3, 4, 5, 6, 7, 8, 9, 33, 257}) {
      if (c.I == 1024 && R > 33) continue;
      for (DType dt : {DType::bf16, DType::f16}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " I=" + std::to_string(c.I) + " O=" + std::to_string(c.O) +
                     " R=" + std::to_string(R));
        Tensor x = randn({R, c.I}, R * 7 + c.I), wh = randn({c.O, c.I}, 5).to(dt), bh = randn({c.O}, 6).to(dt);
        Tensor w32 = wh.to(DType::f32), b32 = bh.to(DType::f32);
        // bf16 weights run the AVX-512 BF16 kernels where the CPU has them (the dot-product matvec
        // up to 8 rows, the GEMM beyond), which round x to bf16 first (as PyTorch's bf16 matmul
        // does): compare with the f32 product of the rounded x. Products of two bf16 values are
        // exact in f32, so the same 1e-5.
        const bool rounds_x = dt == DType::bf16 && kernels::have_avx512_bf16();
        Tensor xq = rounds_x ? x.to(DType::bf16).to(DType::f32) : x;
        Tensor want, want_exact;
        {
          ReferenceKernelsGuard g(true);
          want = linear(xq, w32, b32);
          want_exact = linear(x, w32, b32);
        }
        EXPECT_TRUE(AllClose(linear(x, wh, bh), want, 1e-5));
        EXPECT_TRUE(AllClose(linear(x, wh), linear(xq, w32), 1e-5));
        {
          ReferenceKernelsGuard g(true);
          EXPECT_TRUE(AllClose(linear(x, wh, bh), want_exact, 1e-6)) << "reference path widens the same values";
        }
        if (R == 1 || R == 33) {  // dx through the frozen half weight equals dx through its f32 copy
          RunResult h = run([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, wh});
          RunResult f =
              run([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); }, {x, w32}, {false, true});
          EXPECT_TRUE(AllClose(h.grads[0], f.grads[0], 1e-5));
        }
      }
    }
  }
  // Empty shapes: no input features (the output is the bias), no rows.
  Tensor b5 = randn({5}, 9);
  EXPECT_TRUE(AllClose(linear(Tensor::zeros({3, 0}), Tensor::zeros({5, 0}).to(DType::bf16), b5),
                       b5.unsqueeze(0).expand({3, 5}).contiguous(), 0));
  EXPECT_TRUE(AllClose(linear(Tensor::zeros({3, 0}), Tensor::zeros({5, 0}), b5),
                       b5.unsqueeze(0).expand({3, 5}).contiguous(), 0));
  EXPECT_EQ(linear(Tensor::zeros({0, 4}), randn({5, 4}, 1)).shape(), (Shape{0, 5}));
  // f64 activations with a bf16 weight run the reference loop in double.
  Tensor x = randn({3, 20}, 1, DType::f64), wh = randn({6, 20}, 2).to(DType::bf16);
  EXPECT_TRUE(AllClose(linear(x, wh), linear(x, wh.to(DType::f64)), 1e-12));
}

TEST(Linear, GradCheckF64) {
  auto f = [](const std::vector<Tensor>& in) { return linear(in[0], in[1], in[2]); };
  expect_grad(f, {randn({2, 3, 5}, 1, DType::f64), randn({4, 5}, 2, DType::f64), randn({4}, 3, DType::f64)});
  expect_grad(f, {randn({1, 5}, 4, DType::f64), randn({4, 5}, 5, DType::f64), randn({4}, 6, DType::f64)});
  expect_grad([](const std::vector<Tensor>& in) { return linear(in[0], in[1]); },
              {randn({5}, 7, DType::f64), randn({3, 5}, 8, DType::f64)});
}

TEST(Linear, Errors) {
  Tensor x = randn({2, 3}, 1);
  expect_error([&] { linear(x, randn({4, 5}, 2)); }, "[linear] x has 3 input features");
  expect_error([&] { linear(x, randn({4, 3}, 2, DType::f64)); }, "w is f64 but x is f32");
  expect_error([&] { linear(x, randn({4, 3}, 2), randn({5}, 3)); }, "bias has shape [5], expected [4]");
  expect_error([&] { linear(x, randn({12}, 2)); }, "w must have 2 dims");
  Tensor wh = randn({4, 3}, 2).to(DType::bf16);
  wh.set_requires_grad(true);
  expect_error([&] { linear(x, wh); }, "half-precision weights are frozen");
  autograd::NoGradGuard ng;  // inference with such a tensor is fine
  EXPECT_EQ(linear(x, wh).shape(), (Shape{2, 4}));
}

// ---- embedding ------------------------------------------------------------------------------------

TEST(Embedding, HandComputedAndDtypes) {
  Tensor w = Tensor::from_vector(std::vector<float>{0, 1, 10, 11, 20, 21, 30, 31}, {4, 2});  // [4, 2]
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{3, 0, 3, 2, 1, 1}, {2, 3});
  Tensor want = Tensor::from_vector(std::vector<float>{30, 31, 0, 1, 30, 31, 20, 21, 10, 11, 10, 11}, {2, 3, 2});
  for (bool ref : {false, true}) {
    ReferenceKernelsGuard g(ref);
    EXPECT_TRUE(AllClose(embedding(w, ids), want, 0));
    EXPECT_TRUE(AllClose(embedding(w, ids.to(DType::i32)), want, 0)) << "i32 ids";
    for (DType dt : {DType::bf16, DType::f16, DType::f64}) {  // small integers: exact in every float dtype
      Tensor out = embedding(w.to(dt), ids);
      EXPECT_EQ(out.dtype(), dt == DType::f64 ? DType::f64 : DType::f32);
      EXPECT_TRUE(AllClose(out, want, 0));
    }
  }
  // Non-trivial bf16 values widen exactly.
  Tensor wb = randn({50, 37}, 3).to(DType::bf16);
  Tensor many = Tensor::from_vector(std::vector<int64_t>{49, 0, 7, 7, 13}, {5});
  EXPECT_TRUE(AllClose(embedding(wb, many), embedding(wb.to(DType::f32), many), 0));
}

TEST(Embedding, Gradients) {
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{2, 0, 2, 2}, {2, 2});
  expect_grad([&](const std::vector<Tensor>& in) { return embedding(in[0], ids); }, {randn({3, 4}, 1, DType::f64)});
  // Hand check: each row's gradient is the sum of the output gradients of its occurrences.
  Tensor w = randn({3, 2}, 2);
  w.set_requires_grad(true);
  Tensor dy = Tensor::from_vector(std::vector<float>{1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2});
  embedding(w, ids).backward(dy);
  EXPECT_TRUE(AllClose(w.grad(), Tensor::from_vector(std::vector<float>{3, 4, 0, 0, 13, 16}, {3, 2}), 0));
}

TEST(Embedding, Errors) {
  Tensor w = randn({5, 3}, 1);
  expect_error(
      [&] {
        embedding(w, Tensor::from_vector(std::vector<int64_t>{1, 7}, {2}));
      },
      "[embedding] id 7 at position 1 is out of range for a vocabulary of 5 rows");
  expect_error([&] { embedding(w, Tensor::from_vector(std::vector<int64_t>{-1}, {1})); }, "id -1 at position 0");
  expect_error([&] { embedding(w, randn({2}, 1)); }, "ids must be i64 or i32");
  expect_error([&] { embedding(randn({5}, 1), Tensor::from_vector(std::vector<int64_t>{0}, {1})); },
               "weight must have 2 dims");
}

}  // namespace
}  // namespace ssm
