// The backward of every op a Mamba-1 training step runs on the GPU, against the CPU backward of the
// same op on the same f32 values (label cuda; skips without a GPU). Each check builds the op on CPU
// leaves and on GPU copies of them, takes loss = sum(out * w) with a fixed random w, and compares the
// outputs and the gradient of every input. Tolerances (max abs err <= rtol * max |ref|): fp32 on both
// sides, so only rounding and summation order differ: kElem = 1e-5 for per-element math; kSum = 1e-4
// where a gradient sums thousands of terms in another order (GEMMs, reductions, the parameter
// gradients of norms, conv and embedding, which the GPU sums in per-block partials).
#include <random>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/tensor.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;

namespace {

constexpr double kElem = 1e-5, kSum = 1e-4;
const Device gpu = Device::cuda;
Tensor host(const Tensor& t) { return t.to(Device::cpu).to(DType::f32); }

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;
struct In {
  Tensor t;
  bool grad = true;
};

class CudaBackward : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
  // Runs f on CPU leaves and on GPU leaves holding the same values; compares output and gradients.
  static void check(const std::string& name, const Fn& f, const std::vector<In>& ins, double rtol) {
    std::vector<Tensor> c, g;
    for (const In& i : ins) {
      Tensor a = i.t.defined() ? i.t.clone() : Tensor(), b = i.t.defined() ? i.t.to(gpu) : Tensor();
      if (i.grad && i.t.defined()) a.set_requires_grad(true), b.set_requires_grad(true);
      c.push_back(a);
      g.push_back(b);
    }
    Tensor oc = f(c), og = f(g);
    ASSERT_EQ(og.device(), gpu) << name;
    EXPECT_TRUE(AllClose(host(og), oc.to(DType::f32), rtol)) << name << ": output";
    Tensor w = Tensor::randn(oc.shape(), 777);
    sum(mul(oc, w.to(oc.dtype()))).backward();
    sum(mul(og, w.to(og.dtype()).to(gpu))).backward();
    for (size_t k = 0; k < ins.size(); ++k) {
      if (!ins[k].grad || !ins[k].t.defined()) continue;
      ASSERT_TRUE(g[k].grad().defined()) << name << ": no gradient reached GPU input " << k;
      EXPECT_EQ(g[k].grad().device(), gpu) << name << " input " << k;
      EXPECT_TRUE(AllClose(host(g[k].grad()), c[k].grad(), rtol)) << name << ": gradient of input " << k;
    }
  }
};

Tensor rnd(const Shape& s, uint64_t seed, double mean = 0, double sd = 1) { return Tensor::randn(s, seed, mean, sd); }

}  // namespace

TEST_F(CudaBackward, Unary) {
  Tensor x = rnd({3, 37, 65}, 1, 0, 3);
  check(
      "neg", [](auto& v) { return neg(v[0]); }, {{x}}, kElem);
  check(
      "exp", [](auto& v) { return exp(v[0]); }, {{rnd({3, 37, 65}, 2)}}, kElem);
  check(
      "silu", [](auto& v) { return silu(v[0]); }, {{x}}, kElem);
  check(
      "softplus", [](auto& v) { return softplus(v[0]); }, {{x}}, kElem);
  check(
      "softplus threshold 1", [](auto& v) { return softplus(v[0], 1.0); }, {{x}}, kElem);
  check(
      "add_scalar", [](auto& v) { return add_scalar(v[0], 0.75); }, {{x}}, kElem);
  check(
      "mul_scalar", [](auto& v) { return mul_scalar(v[0], -1.5); }, {{x}}, kElem);
}

TEST_F(CudaBackward, BinaryWithBroadcastReductions) {
  Tensor a = rnd({2, 5, 7}, 3), b = rnd({5, 1}, 4, 3, 0.5), c = rnd({7}, 5, 2, 0.3);
  check(
      "add", [](auto& v) { return add(v[0], v[1]); }, {{a}, {b}}, kSum);
  check(
      "sub", [](auto& v) { return sub(v[1], v[0]); }, {{a}, {b}}, kSum);
  check(
      "mul", [](auto& v) { return mul(v[0], v[1]); }, {{a}, {c}}, kSum);
  check(
      "div", [](auto& v) { return div(v[0], v[1]); }, {{a}, {b}}, kSum);
  check(
      "div same shape", [](auto& v) { return div(v[0], v[1]); }, {{a}, {rnd({2, 5, 7}, 6, 3, 0.5)}}, kElem);
}

TEST_F(CudaBackward, SumAndMean) {
  Tensor x = rnd({4, 9, 33}, 7);
  check(
      "sum dim 1 keepdim", [](auto& v) { return sum(v[0], {1}, true); }, {{x}}, kSum);
  check(
      "sum dims 0, 2",
      [](auto& v) {
        return sum(v[0], {0, 2});
      },
      {{x}}, kSum);
  check(
      "sum all", [](auto& v) { return sum(v[0]).view({1}); }, {{x}}, kSum);
  check(
      "mean last", [](auto& v) { return mean(v[0], {-1}); }, {{x}}, kSum);
  check(
      "sum of a transposed view", [](auto& v) { return sum(v[0].transpose(0, 2), {1}); }, {{x}}, kSum);
}

TEST_F(CudaBackward, ViewsCastsAndConcat) {
  Tensor x = rnd({3, 8, 12}, 8), y = rnd({3, 2, 12}, 9);
  check(
      "slice contiguous view",
      [](auto& v) {
        return v[0].slice(2, 3, 10).contiguous().view({3, 56});
      },
      {{x}}, kElem);
  // f32 -> f16 -> f32 rounds the values and (in the backward) the gradient, both sides the same way.
  check(
      "cast", [](auto& v) { return mul(v[0].to(DType::f16).to(DType::f32), v[0]); }, {{x}}, kElem);
  check(
      "concat",
      [](auto& v) {
        return concat({v[0], v[1]}, 1);
      },
      {{x}, {y}}, kElem);
}

TEST_F(CudaBackward, Linear) {
  Tensor x = rnd({2, 9, 33}, 10), w = rnd({17, 33}, 11, 0, 0.2), b = rnd({17}, 12);
  check(
      "linear + bias", [](auto& v) { return linear(v[0], v[1], v[2]); }, {{x}, {w}, {b}}, kSum);
  check(
      "linear", [](auto& v) { return linear(v[0], v[1]); }, {{rnd({40, 64}, 13)}, {rnd({96, 64}, 14)}}, kSum);
  check(
      "linear frozen w", [](auto& v) { return linear(v[0], v[1]); }, {{x}, {w, false}}, kSum);
  check(
      "linear frozen x", [](auto& v) { return linear(v[0], v[1], v[2]); }, {{x, false}, {w}, {b}}, kSum);
}

TEST_F(CudaBackward, Embedding) {
  std::mt19937_64 r(15);
  std::vector<int64_t> ids(21);
  for (auto& i : ids) i = int64_t(r() % 10);  // repeats: the scatter-add accumulates
  Tensor id = Tensor::from_vector(ids, {3, 7});
  check(
      "embedding", [id](auto& v) { return embedding(v[0], id); }, {{rnd({50, 12}, 16)}}, kSum);
  // 3000 ids over 7 rows of 40: each id's run in the sorted ids spans many 64-entry chunks (the
  // chunked, then per-run, ordered sums); row 7 of 9 never occurs (its gradient stays zero).
  std::vector<int64_t> many(3000);
  for (auto& i : many) i = int64_t(r() % 7);
  many[1234] = 8;
  Tensor idm = Tensor::from_vector(many, {6, 500});
  check(
      "embedding, long runs", [idm](auto& v) { return embedding(v[0], idm); }, {{rnd({9, 40}, 39)}}, kSum);
}

TEST_F(CudaBackward, RmsNorm) {
  Tensor x = rnd({4, 6, 40}, 17), res = rnd({4, 6, 40}, 18), w = rnd({40}, 19, 1, 0.2);
  check(
      "rms_norm_add",
      [](auto& v) {
        NormAdd n = rms_norm_add(v[0], v[1], v[2], 1e-5);
        return add(n.out, mul_scalar(n.residual, 0.5));  // both outputs carry a gradient
      },
      {{x}, {res}, {w}}, kSum);
  check(
      "rms_norm_add without residual",
      [](auto& v) {
        NormAdd n = rms_norm_add(v[0], Tensor(), v[1], 1e-5);
        return add(n.out, mul_scalar(n.residual, -2.0));
      },
      {{x}, {w}}, kSum);
  check(
      "rms_norm_add, out only", [](auto& v) { return rms_norm_add(v[0], v[1], v[2], 1e-5).out; }, {{x}, {res}, {w}},
      kSum);
  check(
      "rms_norm", [](auto& v) { return rms_norm(v[0], v[1], 1e-6); }, {{rnd({33, 16}, 20)}, {w.slice(0, 0, 16)}}, kSum);
  check(
      "rms_norm frozen w", [](auto& v) { return rms_norm(v[0], v[1], 1e-6); },
      {{rnd({33, 16}, 21)}, {Tensor::full({16}, 1.0), false}}, kSum);
}

TEST_F(CudaBackward, CausalConv1d) {
  for (int64_t L : {2, 37, 150}) {  // L = 2 < W - 1: the final state holds history
    for (bool silu : {true, false}) {
      Tensor x = rnd({2, L, 24}, 22), w = rnd({24, 4}, 23, 0, 0.5), b = rnd({24}, 24), h0 = rnd({2, 3, 24}, 25);
      std::string name = "causal_conv1d L=" + std::to_string(L) + (silu ? " silu" : "");
      check(
          name,
          [silu](auto& v) {
            Conv1dOut o = causal_conv1d(v[0], v[1], v[2], v[3], silu);
            return concat({o.y, o.final_state}, 1);
          },
          {{x}, {w}, {b}, {h0}}, kSum);
      check(
          name + " no bias, no state",
          [silu](auto& v) { return causal_conv1d(v[0], v[1], Tensor(), Tensor(), silu).y; }, {{x}, {w}}, kSum);
    }
  }
  // Odd channel counts (scalar loads, not 16-byte vectors), widths other than 4 (the runtime-width
  // kernels), several time chunks (L = 200), and y read by two and three consumers: the backward gets
  // the parts of y's gradient separately (split_sums) and adds them in the kernel.
  for (int64_t W : {2, 3, 4, 5}) {
    Tensor x = rnd({3, 200, 13}, 26), w = rnd({13, W}, 27, 0, 0.5), b = rnd({13}, 28), h0 = rnd({3, W - 1, 13}, 29);
    check(
        "causal_conv1d D=13 W=" + std::to_string(W),
        [](auto& v) {
          Conv1dOut o = causal_conv1d(v[0], v[1], v[2], v[3], true);
          return concat({o.y, mul_scalar(o.y, -0.5), exp(mul_scalar(o.y, 0.1)), o.final_state}, 1);
        },
        {{x}, {w}, {b}, {h0}}, kSum);
    Tensor x2 = rnd({2, 130, 32}, 30), w2 = rnd({32, W}, 31, 0, 0.5);
    check(
        "causal_conv1d D=32 W=" + std::to_string(W) + " two consumers",
        [](auto& v) {
          Tensor y = causal_conv1d(v[0], v[1], v[2], Tensor(), true).y;
          return add(mul_scalar(y, 2.0), mul(y, y));
        },
        {{x2}, {w2}, {rnd({32}, 32)}}, kSum);
  }
}

// bf16 activations (16-byte loads of 8 channels): the GPU conv and its backward on bf16 inputs against
// the CPU in f32 on the same (bf16-rounded) values. Tolerance 2e-2 of the largest magnitude: the
// output and the input gradients are rounded to bf16 (2^-9 relative) and the GPU's gradient of y is
// bf16 as well; the parameter gradients sum in fp32.
TEST_F(CudaBackward, CausalConv1dBf16) {
  const int64_t B = 2, L = 300, D = 64, W = 4;
  auto r16 = [](const Tensor& t) { return t.to(DType::bf16).to(DType::f32); };
  Tensor x = r16(rnd({B, L, D}, 33)), w = rnd({D, W}, 34, 0, 0.5), b = rnd({D}, 35), h0 = r16(rnd({B, W - 1, D}, 36));
  Tensor xc = x.clone(), wc = w.clone(), bc = b.clone(), hc = h0.clone();
  Tensor xg = x.to(DType::bf16).to(gpu), wg = w.to(gpu), bg = b.to(gpu), hg = h0.to(DType::bf16).to(gpu);
  for (Tensor* t : {&xc, &wc, &bc, &hc, &xg, &wg, &bg, &hg}) t->set_requires_grad(true);
  Conv1dOut oc = causal_conv1d(xc, wc, bc, hc, true), og = causal_conv1d(xg, wg, bg, hg, true);
  EXPECT_TRUE(AllClose(host(og.y), oc.y, 2e-2)) << "y";
  EXPECT_TRUE(AllClose(host(og.final_state), oc.final_state, 0)) << "final state (a copy)";
  Tensor gy = r16(rnd({B, L, D}, 37)), gs = r16(rnd({B, W - 1, D}, 38));
  add(sum(mul(oc.y, gy)), sum(mul(oc.final_state, gs))).backward();
  add(sum(mul(og.y, gy.to(DType::bf16).to(gpu))), sum(mul(og.final_state, gs.to(DType::bf16).to(gpu)))).backward();
  EXPECT_TRUE(AllClose(host(xg.grad()), xc.grad(), 2e-2)) << "dx";
  EXPECT_TRUE(AllClose(host(hg.grad()), hc.grad(), 2e-2)) << "dh0";
  EXPECT_TRUE(AllClose(host(wg.grad()), wc.grad(), 2e-2)) << "dw";
  EXPECT_TRUE(AllClose(host(bg.grad()), bc.grad(), 2e-2)) << "dbias";
}

TEST_F(CudaBackward, CrossEntropyAndSoftmax) {
  std::vector<int64_t> t(37);
  std::mt19937_64 r(26);
  for (size_t i = 0; i < t.size(); ++i) t[i] = i % 5 == 3 ? -100 : int64_t(r() % 50);
  Tensor tg = Tensor::from_vector(t, {37});
  Tensor logits = rnd({37, 50}, 27, 0, 2);
  check(
      "cross_entropy", [tg](auto& v) { return cross_entropy(v[0], tg).view({1}); }, {{logits}}, kSum);
  check(
      "cross_entropy, targets on the GPU",
      [tg](auto& v) { return cross_entropy(v[0], v[0].device() == gpu ? tg.to(gpu) : tg).view({1}); }, {{logits}},
      kSum);
  check(
      "log_softmax", [](auto& v) { return log_softmax(v[0], -1); }, {{rnd({7, 300}, 28, 0, 3)}}, kSum);
  check(
      "softmax", [](auto& v) { return softmax(v[0], -1); }, {{rnd({7, 300}, 29, 0, 3)}}, kSum);
}

// bf16 logits (the mixed-precision head) against the CPU op on the same rounded values: the loss is
// computed in f32 from exact inputs (1e-5); the gradient is rounded to bf16 (2^-9 relative: 1e-2).
TEST_F(CudaBackward, CrossEntropyBf16Logits) {
  Tensor logits = rnd({64, 300}, 30, 0, 2).to(DType::bf16).to(DType::f32);
  std::vector<int64_t> t(64);
  for (size_t i = 0; i < t.size(); ++i) t[i] = int64_t(i * 37 % 300);
  Tensor tg = Tensor::from_vector(t, {64});
  Tensor c = logits.clone(), g = logits.to(DType::bf16).to(gpu);
  c.set_requires_grad(true);
  g.set_requires_grad(true);
  Tensor lc = cross_entropy(c, tg), lg = cross_entropy(g, tg);
  EXPECT_EQ(lg.dtype(), DType::f32);
  EXPECT_NEAR(lg.item(), lc.item(), 1e-5 * std::fabs(lc.item()));
  lc.backward();
  lg.backward();
  EXPECT_EQ(g.grad().dtype(), DType::bf16);
  EXPECT_TRUE(AllClose(host(g.grad()), c.grad(), 1e-2));
}

// The scan's backward (its own kernels, tests/cuda_selective_scan.cpp) inside a chain of GPU ops, as
// the Mamba-1 mixer runs it: gradients reach A_log through exp and neg, and B, C through views.
TEST_F(CudaBackward, ScanInsideAChain) {
  const int64_t B = 2, L = 45, D = 16, N = 8;
  Tensor u = rnd({B, L, D}, 31), dt = rnd({B, L, D}, 32, -1, 0.5), A_log = rnd({D, N}, 33, 0, 0.5);
  Tensor bc = rnd({B, L, 2 * N}, 34), z = rnd({B, L, D}, 35), Dp = rnd({D}, 36), bias = rnd({D}, 37, -2, 0.2);
  check(
      "selective_scan chain",
      [B, L, N](auto& v) {
        SelectiveScanArgs a;
        a.u = v[0];
        a.delta = v[1];
        a.A = neg(exp(v[2]));
        a.B = v[3].slice(2, 0, N).contiguous().view({B, L, 1, N});
        a.C = v[3].slice(2, N, 2 * N).contiguous().view({B, L, 1, N});
        a.z = v[4];
        a.D = v[5];
        a.delta_bias = v[6];
        a.delta_softplus = true;
        return selective_scan(a).y;
      },
      {{u}, {dt}, {A_log}, {bc}, {z}, {Dp}, {bias}}, kSum);
}
