// The Mamba-3 SISO scan on the GPU (label cuda; skips without a GPU) against the CPU op on the same
// inputs: the activations q, k, v, z drawn in f32 and rounded to the activation dtype (the per-token
// scalars, parameters and states are f32 on the GPU), so the CPU op (f32) sees exactly the GPU's inputs. Tolerances (max abs error <= rtol * max |CPU value|):
//  - f32 activations: 1e-4; only fp32 rounding differs (libm cos/sin/exp/tanh, the order of the
//    N-term read-out sums), over <= 300 steps with decays <= 1;
//  - bf16 / f16 activations: y is rounded to the activation dtype (2^-9 / 2^-12 relative): 1e-2 / 2e-3;
//    the f32 states see only fp32 differences: 1e-4.
// Also: a sequence split in two (state passed on the GPU) equals the whole; bad arguments fail.
#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/ops_mamba3.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;

namespace {

struct Case {
  int64_t B, L, H, P, N, G, S;
  bool state, D, z;
  DType act;
};

struct Pair {
  Mamba3SisoArgs cpu, gpu;
};

Pair make(const Case& c, uint64_t seed) {
  Pair p;
  auto act = [&](const Shape& s, uint64_t k) {
    Tensor t = Tensor::randn(s, seed * 100 + k).to(c.act);
    return std::pair{t.to(DType::f32), t.to(Device::cuda)};
  };
  auto par = [&](Tensor t) { return std::pair{t, t.defined() ? t.to(Device::cuda) : Tensor()}; };
  auto set = [](Tensor Mamba3SisoArgs::*m, Pair& p, std::pair<Tensor, Tensor> v) {
    p.cpu.*m = v.first;
    p.gpu.*m = v.second;
  };
  const int64_t B = c.B, L = c.L, H = c.H;
  set(&Mamba3SisoArgs::q, p, act({B, L, c.G, c.N}, 1));
  set(&Mamba3SisoArgs::k, p, act({B, L, c.G, c.N}, 2));
  set(&Mamba3SisoArgs::v, p, act({B, L, H, c.P}, 3));
  Tensor dt = Tensor::rand({B, L, H}, seed * 100 + 4, 0.01, 0.5);
  set(&Mamba3SisoArgs::dt, p, par(dt));
  set(&Mamba3SisoArgs::adt, p, par(mul(dt, Tensor::rand({B, L, H}, seed * 100 + 5, -2.0, -0.05))));
  set(&Mamba3SisoArgs::trap, p, par(Tensor::randn({B, L, H}, seed * 100 + 6, 0, 2)));
  set(&Mamba3SisoArgs::q_bias, p, par(Tensor::randn({H, c.N}, seed * 100 + 7, 1, 0.3)));
  set(&Mamba3SisoArgs::k_bias, p, par(Tensor::randn({H, c.N}, seed * 100 + 8, 1, 0.3)));
  set(&Mamba3SisoArgs::angles, p, par(Tensor::randn({B, L, c.S}, seed * 100 + 9, 0, 2)));
  if (c.D) set(&Mamba3SisoArgs::D, p, par(Tensor::randn({H}, seed * 100 + 10, 1, 0.5)));
  if (c.z) set(&Mamba3SisoArgs::z, p, act({B, L, H, c.P}, 11));
  if (c.state) {
    set(&Mamba3SisoArgs::angle_state, p, par(Tensor::rand({B, H, c.S}, seed * 100 + 12, 0, 6.28)));
    set(&Mamba3SisoArgs::ssm_state, p, par(Tensor::randn({B, H, c.P, c.N}, seed * 100 + 13)));
    set(&Mamba3SisoArgs::k_state, p, par(Tensor::randn({B, H, c.N}, seed * 100 + 14)));
    set(&Mamba3SisoArgs::v_state, p, par(Tensor::randn({B, H, c.P}, seed * 100 + 15)));
  }
  return p;
}

double y_rtol(DType t) { return t == DType::bf16 ? 1e-2 : t == DType::f16 ? 2e-3 : 1e-4; }

void expect_close(const Mamba3SisoOut& gpu, const Mamba3SisoOut& cpu, DType act) {
  EXPECT_EQ(gpu.y.dtype(), act);
  EXPECT_EQ(gpu.ssm_state.dtype(), DType::f32);
  const std::pair<const Tensor*, const Tensor*> outs[] = {{&gpu.y, &cpu.y},
                                                          {&gpu.angle_state, &cpu.angle_state},
                                                          {&gpu.ssm_state, &cpu.ssm_state},
                                                          {&gpu.k_state, &cpu.k_state},
                                                          {&gpu.v_state, &cpu.v_state}};
  const char* names[] = {"y", "angle_state", "ssm_state", "k_state", "v_state"};
  for (size_t i = 0; i < 5; ++i) {
    Tensor g = outs[i].first->to(Device::cpu).to(DType::f32);
    ErrStats s = compare(g, *outs[i].second);
    const double tol = i == 0 ? y_rtol(act) : 1e-4;
    EXPECT_LE(s.max_abs, tol * s.ref_max) << names[i] << ": max abs err " << s.max_abs << " of " << s.ref_max;
  }
}

class CudaMamba3 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
  autograd::NoGradGuard ng_;
};

TEST_F(CudaMamba3, MatchesCpuOp) {
  const Case cases[] = {
      // N = 20: lanes beyond N idle; S = 5 < N/2 leaves unrotated pairs; G = 2; odd lengths.
      {2, 7, 4, 6, 20, 2, 5, false, true, true, DType::f32},
      {2, 33, 4, 6, 20, 2, 5, true, true, true, DType::f32},
      {1, 1, 4, 6, 20, 1, 10, true, false, false, DType::f32},
      // Mamba-3 layer-like: P = 64 over 8 warps, N = 128 (4 columns per lane), S = 32.
      {2, 300, 8, 64, 128, 1, 32, true, true, true, DType::f32},
      {2, 300, 8, 64, 128, 1, 32, true, true, true, DType::bf16},
      {1, 65, 3, 10, 16, 3, 8, false, true, true, DType::f16},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE("B=" + std::to_string(c.B) + " L=" + std::to_string(c.L) + " H=" + std::to_string(c.H) +
                 " P=" + std::to_string(c.P) + " N=" + std::to_string(c.N) + " " + dtype_name(c.act));
    Pair p = make(c, uint64_t(c.L * 7 + c.N));
    expect_close(mamba3_siso_scan(p.gpu), mamba3_siso_scan(p.cpu), c.act);
  }
}

// The first 13 tokens, then the rest from the returned state, equals the whole sequence.
TEST_F(CudaMamba3, SplitSequenceContinuesFromState) {
  const Case c{2, 40, 4, 16, 32, 2, 8, true, true, true, DType::f32};
  Pair p = make(c, 5);
  Mamba3SisoOut whole = mamba3_siso_scan(p.gpu);
  auto part = [](const Mamba3SisoArgs& a, int64_t t0, int64_t t1) {
    Mamba3SisoArgs r = a;
    for (Tensor* t : {&r.q, &r.k, &r.v, &r.adt, &r.dt, &r.trap, &r.angles, &r.z}) *t = t->slice(1, t0, t1);
    return r;
  };
  Mamba3SisoOut first = mamba3_siso_scan(part(p.gpu, 0, 13));
  Mamba3SisoArgs rest = part(p.gpu, 13, 40);
  rest.angle_state = first.angle_state;
  rest.ssm_state = first.ssm_state;
  rest.k_state = first.k_state;
  rest.v_state = first.v_state;
  Mamba3SisoOut second = mamba3_siso_scan(rest);
  Tensor y = concat({first.y, second.y}, 1).to(Device::cpu);
  EXPECT_TRUE(AllClose(y, whole.y.to(Device::cpu), 1e-5));
  EXPECT_TRUE(AllClose(second.ssm_state.to(Device::cpu), whole.ssm_state.to(Device::cpu), 1e-5));
}

TEST_F(CudaMamba3, BadArgumentsFail) {
  const Case c{1, 4, 2, 4, 8, 1, 2, true, true, true, DType::bf16};
  Pair p = make(c, 9);
  Mamba3SisoArgs a = p.gpu;
  a.q_bias = a.q_bias.to(DType::bf16);
  expect_error([&] { mamba3_siso_scan(a); }, "[mamba3_siso_scan] q_bias on the GPU must be f32");
  a = p.gpu;
  a.z = a.z.to(DType::f16);
  expect_error([&] { mamba3_siso_scan(a); }, "z");
  a = p.gpu;
  a.k = p.cpu.k;
  expect_error([&] { mamba3_siso_scan(a); }, "k is on cpu but v is on cuda");
  a = p.gpu;
  Tensor v = a.v.to(DType::f32);
  v.set_requires_grad(true);
  a.v = v;
  a.q = a.q.to(DType::f32), a.k = a.k.to(DType::f32), a.z = a.z.to(DType::f32);
  autograd::set_grad_enabled(true);  // the fixture's NoGradGuard restores the previous mode
  expect_error([&] { mamba3_siso_scan(a); }, "no CUDA backward yet");
}

}  // namespace
