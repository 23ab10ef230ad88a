// The forward CUDA kernels behind the ops (src/ops/cuda_ops.cpp) against the CPU ops on the same
// inputs (label cuda; skips without a GPU). Inputs are drawn in f32 and rounded to the activation
// dtype; the CPU op runs in f32 on the rounded values. Tolerances (max abs err <= rtol * max|ref|):
// f32 results only see fp32 rounding and summation order (1e-5; GEMMs of K <= 200: 2e-5); bf16 / f16
// results also carry the rounding of the output (2^-9 / 2^-12 relative, so 1e-2 / 2e-3).
// Copies, casts, gathers and concat are exact.
#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/tensor.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;

namespace {

constexpr DType kActs[] = {DType::f32, DType::bf16, DType::f16};
double rtol(DType t) { return t == DType::bf16 ? 1e-2 : t == DType::f16 ? 2e-3 : 1e-5; }

const Device gpu = Device::cuda;
Tensor host(const Tensor& t) { return t.to(Device::cpu).to(DType::f32); }

// f32 values representable in dtype t (so the CPU reference sees exactly the GPU's inputs).
Tensor rnd(const Shape& s, uint64_t seed, DType t, double mean = 0, double sd = 1) {
  return Tensor::randn(s, seed, mean, sd).to(t).to(DType::f32);
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
  autograd::NoGradGuard ng_;
};

}  // namespace

TEST_F(CudaOps, StridedCopiesAndCastsAreExact) {
  Tensor x = Tensor::randn({3, 5, 7}, 1);
  Tensor g = x.to(gpu);
  EXPECT_TRUE(AllClose(host(g.transpose(0, 2).contiguous()), x.transpose(0, 2).contiguous(), 0));
  EXPECT_TRUE(AllClose(host(g.slice(1, 1, 4).contiguous()), x.slice(1, 1, 4).contiguous(), 0));
  for (DType t : {DType::bf16, DType::f16}) {
    Tensor c = g.to(t);
    EXPECT_EQ(c.device(), gpu);
    EXPECT_TRUE(AllClose(host(c), x.to(t).to(DType::f32), 0)) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(c.transpose(0, 1).contiguous().to(DType::f32)),
                         x.to(t).to(DType::f32).transpose(0, 1).contiguous(), 0));
  }
  // Host <-> GPU copies into strided views, with a cast.
  Tensor dst = Tensor::zeros({5, 3}, DType::bf16, gpu);
  dst.transpose(0, 1).copy_(x.select(2, 0));
  EXPECT_TRUE(AllClose(host(dst), x.select(2, 0).to(DType::bf16).to(DType::f32).transpose(0, 1).contiguous(), 0));
  Tensor back = Tensor::zeros({3, 5});
  back.copy_(dst.transpose(0, 1));
  EXPECT_TRUE(AllClose(back, x.select(2, 0).to(DType::bf16).to(DType::f32), 0));
  Tensor i = Tensor::from_vector(std::vector<int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  EXPECT_EQ(i.to(gpu).transpose(0, 1).contiguous().to_vector_i64(), (std::vector<int64_t>{1, 4, 2, 5, 3, 6}));
}

TEST_F(CudaOps, UnaryMatchCpu) {
  for (DType t : kActs) {
    Tensor x = rnd({3, 37, 65}, 2, t, 0, 3);
    Tensor g = x.to(t).to(gpu);
    EXPECT_TRUE(AllClose(host(neg(g)), neg(x), rtol(t))) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(exp(g)), exp(x), rtol(t))) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(silu(g)), silu(x), rtol(t))) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(softplus(g)), softplus(x), rtol(t))) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(softplus(g, 1.0)), softplus(x, 1.0), rtol(t))) << dtype_name(t);
    EXPECT_EQ(silu(g).dtype(), t);
  }
}

TEST_F(CudaOps, BinaryBroadcastMatchCpu) {
  for (DType t : kActs) {
    Tensor a = rnd({2, 5, 7}, 3, t), b = rnd({5, 1}, 4, t, 3, 0.5);
    Tensor ga = a.to(t).to(gpu), gb = b.to(t).to(gpu);
    EXPECT_TRUE(AllClose(host(add(ga, gb)), add(a, b), rtol(t))) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(sub(gb, ga)), sub(b, a), rtol(t))) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(mul(ga.transpose(1, 2), gb.transpose(0, 1))), mul(a.transpose(1, 2), b.transpose(0, 1)),
                         rtol(t)));
    EXPECT_TRUE(AllClose(host(div(ga, gb)), div(a, b), rtol(t))) << dtype_name(t);
  }
}

TEST_F(CudaOps, EmbeddingIsExact) {
  std::vector<int64_t> ids = {3, 0, 9, 9, 1, 4};
  Tensor idt = Tensor::from_vector(ids, {2, 3});
  for (DType t : kActs) {
    Tensor w = rnd({10, 33}, 5, t);
    Tensor out = embedding(w.to(t).to(gpu), idt);
    EXPECT_EQ(out.dtype(), DType::f32);
    EXPECT_EQ(out.device(), gpu);
    EXPECT_TRUE(AllClose(host(out), embedding(w, idt), 0)) << dtype_name(t);
    EXPECT_TRUE(AllClose(host(embedding(w.to(t).to(gpu), idt.to(gpu))), embedding(w, idt), 0)) << "ids on the GPU";
  }
  expect_error(
      [&] {
        embedding(Tensor::zeros({10, 4}).to(gpu), Tensor::from_vector(std::vector<int64_t>{10}, {1}));
      },
      "id 10 at position 0 is out of range");
}

TEST_F(CudaOps, RmsNormMatchCpu) {
  for (DType t : kActs) {
    for (int64_t C : {64, 768, 1000}) {
      Tensor x = rnd({2, 9, C}, 6, t), res = Tensor::randn({2, 9, C}, 7), w = Tensor::randn({C}, 8, 1, 0.2);
      Tensor gx = x.to(t).to(gpu), gres = res.to(gpu), gw = w.to(gpu);
      Tensor y = rms_norm(gx, gw, 1e-5);
      EXPECT_EQ(y.dtype(), t);
      EXPECT_TRUE(AllClose(host(y), rms_norm(x, w, 1e-5), rtol(t))) << dtype_name(t) << " C=" << C;
      NormAdd g = rms_norm_add(gx, gres, gw, 1e-5), c = rms_norm_add(x, res, w, 1e-5);
      EXPECT_EQ(g.residual.dtype(), DType::f32);
      EXPECT_TRUE(AllClose(host(g.residual), c.residual, 1e-7)) << dtype_name(t);
      EXPECT_TRUE(AllClose(host(g.out), c.out, rtol(t))) << dtype_name(t) << " C=" << C;
      NormAdd g0 = rms_norm_add(gx, Tensor(), gw, 1e-5), c0 = rms_norm_add(x, Tensor(), w, 1e-5);
      EXPECT_TRUE(AllClose(host(g0.residual), c0.residual, 0));
      EXPECT_TRUE(AllClose(host(g0.out), c0.out, rtol(t)));
    }
  }
}

TEST_F(CudaOps, LinearMatchCpu) {
  const int64_t I = 96, O = 130;
  Tensor bias = Tensor::randn({O}, 11);
  for (DType t : kActs) {
    Tensor x = rnd({2, 33, I}, 9, t), w = rnd({O, I}, 10, t, 0, 0.1);
    const double tol = t == DType::f32 ? 2e-5 : rtol(t);
    Tensor gx = x.to(t).to(gpu), gw = w.to(t).to(gpu);
    Tensor y = linear(gx, gw, bias.to(gpu));
    EXPECT_EQ(y.dtype(), t);
    EXPECT_TRUE(AllClose(host(y), linear(x, w, bias), tol)) << dtype_name(t);
    // A strided input (a slice of the last dim) and an odd row offset.
    Tensor xs = rnd({3, 20, I + 8}, 12, t);
    EXPECT_TRUE(AllClose(host(linear(xs.to(t).to(gpu).slice(2, 3, 3 + I).slice(1, 1, 20), gw)),
                         linear(xs.slice(2, 3, 3 + I).slice(1, 1, 20), w), tol))
        << dtype_name(t) << " strided";
    if (t == DType::f32) continue;
    // Mixed: the f32 operand is rounded to the half dtype; the output has x's dtype.
    Tensor x32 = Tensor::randn({4, I}, 13);
    Tensor ym = linear(x32.to(gpu), gw);
    EXPECT_EQ(ym.dtype(), DType::f32);
    EXPECT_TRUE(AllClose(host(ym), linear(x32.to(t).to(DType::f32), w), 2e-5)) << dtype_name(t) << " f32 x";
    Tensor w32 = Tensor::randn({O, I}, 14, 0, 0.1);
    Tensor yw = linear(gx, w32.to(gpu));
    EXPECT_EQ(yw.dtype(), t);
    EXPECT_TRUE(AllClose(host(yw), linear(x, w32.to(t).to(DType::f32)), rtol(t))) << dtype_name(t) << " f32 w";
  }
}

TEST_F(CudaOps, CausalConvMatchCpu) {
  const int64_t D = 40, W = 4;
  Tensor w = Tensor::randn({D, W}, 20, 0, 0.5), bias = Tensor::randn({D}, 21);
  for (DType t : kActs) {
    for (int64_t L : {1, 2, 37}) {
      for (bool state : {false, true}) {
        Tensor x = rnd({2, L, D}, 22, t), h0 = state ? rnd({2, W - 1, D}, 23, t) : Tensor();
        Conv1dOut c = causal_conv1d(x, w, bias, h0, true);
        Conv1dOut g =
            causal_conv1d(x.to(t).to(gpu), w.to(gpu), bias.to(gpu), state ? h0.to(t).to(gpu) : Tensor(), true);
        EXPECT_EQ(g.y.dtype(), t);
        EXPECT_TRUE(AllClose(host(g.y), c.y, rtol(t))) << dtype_name(t) << " L=" << L << " state " << state;
        EXPECT_TRUE(AllClose(host(g.final_state), c.final_state, 0)) << dtype_name(t) << " L=" << L;
      }
    }
    Tensor x = rnd({1, 9, D}, 24, t);
    EXPECT_TRUE(AllClose(host(causal_conv1d(x.to(t).to(gpu), w.to(gpu), Tensor(), Tensor(), false).y),
                         causal_conv1d(x, w, Tensor(), Tensor(), false).y, rtol(t)))
        << dtype_name(t) << " no bias, no SiLU";
  }
}

TEST_F(CudaOps, ConcatIsExact) {
  Tensor a = Tensor::randn({2, 3, 4}, 30), b = Tensor::randn({2, 5, 4}, 31);
  EXPECT_TRUE(AllClose(host(concat({a.to(gpu), b.to(gpu)}, 1)), concat({a, b}, 1), 0));
  EXPECT_TRUE(AllClose(host(concat({a.to(gpu), a.to(gpu)}, 0)), concat({a, a}, 0), 0));
}

TEST_F(CudaOps, ClearErrors) {
  Tensor g = Tensor::randn({2, 3}, 40).to(gpu);
  expect_error([&] { sigmoid(g); }, "[sigmoid] no CUDA kernel for this op yet");
  expect_error([&] { linear(g, Tensor::randn({4, 3}, 41)); }, "w is on the CPU but the op runs on the GPU");
  expect_error([&] { add(g, Tensor::randn({2, 3}, 42)); }, "b is on the CPU");
  expect_error(
      [&] {
        linear(g.to(DType::bf16), Tensor::randn({4, 3}, 43).to(DType::f16).to(gpu));
      },
      "x is bf16 but w is f16");
  Tensor w = Tensor::randn({4, 3}, 44).to(gpu);
  w.set_requires_grad(true);
  autograd::set_grad_enabled(true);
  EXPECT_TRUE(linear(g, w).requires_grad());  // GPU ops record their backward (tests/cuda_train_ops.cpp)
  autograd::set_grad_enabled(false);
}
