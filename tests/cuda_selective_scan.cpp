// The fused CUDA selective scan (forward and backward) against the CPU op on the same inputs
// (label cuda; skips without a GPU). Inputs are drawn in f32, rounded to the activation dtype, and
// the CPU op runs in f32 on the rounded values, so the only differences are the kernels' fp32
// rounding (ex2.approx, summation order) and, for bf16/f16, the rounding of the outputs.
#include "ssm/ops.h"
#include "ssm/tensor.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;

namespace {

struct Case {
  int64_t B, L, D, N, G;
  bool z, Dskip, bias, softplus, h0;
  DType act;
};

// Tolerances (max abs error <= rtol * max|ref|): activation-dtype results carry the output rounding
// (bf16 2^-9, f16 2^-12 relative, with margin for values near the maximum summed in fp32 first);
// f32 results only the fp32 differences, which grow slowly with L.
double act_rtol(DType t) { return t == DType::bf16 ? 1e-2 : t == DType::f16 ? 2e-3 : 1e-4; }
constexpr double kF32Rtol = 2e-4;

struct Inputs {
  std::vector<Tensor> cpu, gpu;  // u, delta, A, B, C, D, z, delta_bias, initial_state (f32 on the CPU)
  Tensor dy_cpu, dy_gpu, dhT_cpu, dhT_gpu;
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  Inputs in;
  auto act = [&](const Shape& s, uint64_t k, double mean, double sd) {  // rounded to the activation dtype
    Tensor t = Tensor::randn(s, seed * 100 + k, mean, sd).to(c.act);
    in.cpu.push_back(t.to(DType::f32));
    in.gpu.push_back(t.to(Device::cuda));
  };
  auto param = [&](Tensor t) {
    in.cpu.push_back(t);
    in.gpu.push_back(t.defined() ? t.to(Device::cuda) : Tensor());
  };
  const Shape x = {c.B, c.L, c.D}, bc = {c.B, c.L, c.G, c.N};
  act(x, 1, 0, 1);  // u
  if (c.softplus)   // delta: raw (softplus) or already positive
    act(x, 2, -1.5, 1);
  else
    in.cpu.push_back(Tensor()), in.gpu.push_back(Tensor());
  param(Tensor::rand({c.D, c.N}, seed * 100 + 3, -3, -0.2));  // A
  act(bc, 4, 0, 1);                                           // B
  act(bc, 5, 0, 1);                                           // C
  param(c.Dskip ? Tensor::randn({c.D}, seed * 100 + 6) : Tensor());
  if (c.z)
    act(x, 7, 0, 1.5);
  else
    in.cpu.push_back(Tensor()), in.gpu.push_back(Tensor());
  param(c.bias ? Tensor::randn({c.D}, seed * 100 + 8, 0, 0.5) : Tensor());
  param(c.h0 ? Tensor::randn({c.B, c.D, c.N}, seed * 100 + 9) : Tensor());
  if (!c.softplus) {  // positive step sizes
    Tensor t = Tensor::rand(x, seed * 100 + 2, 0.01, 0.3).to(c.act);
    in.cpu[1] = t.to(DType::f32);
    in.gpu[1] = t.to(Device::cuda);
  }
  Tensor dy = Tensor::randn(x, seed * 100 + 10).to(c.act);
  in.dy_cpu = dy.to(DType::f32);
  in.dy_gpu = dy.to(Device::cuda);
  in.dhT_cpu = Tensor::randn({c.B, c.D, c.N}, seed * 100 + 11);
  in.dhT_gpu = in.dhT_cpu.to(Device::cuda);
  return in;
}

SelectiveScanArgs args_of(std::vector<Tensor> t, bool softplus) {
  SelectiveScanArgs a;
  for (auto& x : t)
    if (x.defined()) x.set_requires_grad(true);
  a.u = t[0], a.delta = t[1], a.A = t[2], a.B = t[3], a.C = t[4], a.D = t[5], a.z = t[6], a.delta_bias = t[7];
  a.initial_state = t[8];
  a.delta_softplus = softplus;
  return a;
}

Tensor host_f32(const Tensor& t) { return t.to(Device::cpu).to(DType::f32); }

void check_case(const Case& c, uint64_t seed) {
  SCOPED_TRACE("B=" + std::to_string(c.B) + " L=" + std::to_string(c.L) + " D=" + std::to_string(c.D) +
               " N=" + std::to_string(c.N) + " G=" + std::to_string(c.G) + " " + dtype_name(c.act));
  Inputs in = make_inputs(c, seed);
  const std::vector<Tensor> leaves_cpu = in.cpu, leaves_gpu = in.gpu;
  SelectiveScanArgs ac = args_of(leaves_cpu, c.softplus), ag = args_of(leaves_gpu, c.softplus);
  ScanOut rc = selective_scan(ac), rg = selective_scan(ag);
  ASSERT_EQ(rg.y.device(), Device::cuda);
  ASSERT_EQ(rg.y.dtype(), c.act);
  ASSERT_EQ(rg.final_state.dtype(), DType::f32);
  const double ar = act_rtol(c.act);
  EXPECT_TRUE(AllClose(host_f32(rg.y), rc.y, ar)) << "y";
  EXPECT_TRUE(AllClose(host_f32(rg.final_state), rc.final_state, kF32Rtol)) << "final_state";
  // Backward with both output gradients (dy and d final_state), straight through the op's node.
  std::vector<Tensor> gc = rc.y.grad_fn()->backward({in.dy_cpu, in.dhT_cpu});
  std::vector<Tensor> gg = rg.y.grad_fn()->backward({in.dy_gpu, in.dhT_gpu});
  const char* names[] = {"u", "delta", "A", "B", "C", "D", "z", "delta_bias", "initial_state"};
  const bool is_act[] = {true, true, false, true, true, false, true, false, false};
  for (size_t i = 0; i < 9; ++i) {
    if (!in.cpu[i].defined()) continue;
    ASSERT_TRUE(gg[i].defined()) << names[i];
    EXPECT_EQ(gg[i].dtype(), is_act[i] ? c.act : DType::f32) << names[i];
    EXPECT_TRUE(AllClose(host_f32(gg[i]), gc[i], is_act[i] ? ar : kF32Rtol)) << "grad of " << names[i];
  }
}

class CudaScan : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
};

}  // namespace

TEST_F(CudaScan, F32MatchesCpu) {
  // Partial tiles and slabs, one chunk; several chunks with uniform groups; groups that split a slab.
  check_case({2, 37, 40, 16, 1, true, true, true, true, true, DType::f32}, 1);
  check_case({1, 200, 48, 8, 3, false, false, false, false, false, DType::f32}, 2);
  check_case({3, 131, 36, 16, 4, true, true, true, true, true, DType::f32}, 3);
  check_case({1, 1, 16, 16, 1, true, true, false, true, false, DType::f32}, 4);
  check_case({2, 1000, 16, 16, 2, true, false, true, true, false, DType::f32}, 5);
}

TEST_F(CudaScan, Bf16MatchesCpu) {
  check_case({2, 37, 40, 16, 1, true, true, true, true, true, DType::bf16}, 11);
  check_case({3, 131, 36, 13, 4, true, true, true, true, true, DType::bf16}, 12);
  check_case({2, 300, 64, 16, 1, false, true, false, true, false, DType::bf16}, 13);
}

TEST_F(CudaScan, F16MatchesCpu) { check_case({2, 77, 40, 16, 2, true, true, true, true, true, DType::f16}, 21); }

TEST_F(CudaScan, BackwardThroughAutograd) {  // leaf gradients on the GPU via Tensor::backward
  Case c{2, 50, 32, 16, 1, true, true, true, true, false, DType::bf16};
  Inputs in = make_inputs(c, 31);
  SelectiveScanArgs ac = args_of(in.cpu, true), ag = args_of(in.gpu, true);
  selective_scan(ac).y.backward(in.dy_cpu);
  selective_scan(ag).y.backward(in.dy_gpu);
  ASSERT_EQ(ag.u.grad().device(), Device::cuda);
  EXPECT_TRUE(AllClose(host_f32(ag.u.grad()), ac.u.grad(), act_rtol(c.act)));
  EXPECT_TRUE(AllClose(host_f32(ag.A.grad()), ac.A.grad(), kF32Rtol));
}

TEST_F(CudaScan, BadInputsNameTheProblem) {
  Case c{1, 8, 16, 16, 1, false, false, false, true, false, DType::bf16};
  Inputs in = make_inputs(c, 41);
  auto run = [&](std::vector<Tensor> t) { return selective_scan(args_of(t, true)); };
  std::vector<Tensor> t = in.gpu;
  t[2] = in.cpu[2].to(DType::bf16).to(Device::cuda);
  expect_error([&] { run(t); }, "A on the GPU must be f32");
  t = in.gpu;
  t[2] = in.cpu[2];
  expect_error([&] { run(t); }, "A is on cpu but u is on cuda");
  t = in.gpu;
  t[0] = Tensor::randn({1, 16, 8}, 1).to(DType::bf16).to(Device::cuda).transpose(1, 2);
  expect_error([&] { run(t); }, "u on the GPU must be contiguous");
  Case big{1, 8, 16, 32, 1, false, false, false, true, false, DType::f32};
  Inputs ib = make_inputs(big, 42);
  expect_error([&] { run(ib.gpu); }, "state size N <= 16");
}
