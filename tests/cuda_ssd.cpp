// The Mamba-2 ops on the GPU against the CPU ops on the same inputs (label cuda; skips without a GPU):
// ssd_scan with both GPU kernels (the fp32 recurrence, and the chunked tensor-core kernel for bf16/f16),
// gated_rms_norm and clamp. Inputs are drawn in f32 and rounded to the activation dtype; the CPU op runs
// in f32 on the rounded values (A and the initial state stay f32 on both sides), so the differences are:
//  - recurrent kernel: fp32 summation order and the output rounding: f32 2e-4 of max |ref| (the CPU
//    regroups the sums chunk-wise; the error grows slowly with L), bf16 1e-2 and f16 2e-3 (output
//    rounding 2^-9 / 2^-12 relative, with margin); the f32 final state 2e-4;
//  - chunked kernel (bf16/f16 operands, fp32 accumulation): additionally the decay-weighted C·B matrix,
//    the decay-scaled B and the entering state are rounded to the input dtype before their products,
//    as in mamba_ssm: y and final state 2e-2 (bf16) / 5e-3 (f16) of max |ref|.
#include <cstdlib>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/tensor.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;

namespace {

struct Case {
  int64_t B, L, H, P, N, G;
  bool h0;
};

const Case kCases[] = {
    {2, 1, 2, 16, 16, 1, true},      // one step (the op-path decode)
    {1, 7, 4, 8, 16, 2, true},       // shorter than a chunk
    {2, 100, 4, 16, 32, 2, true},    // groups; 100 = 64 + 36
    {1, 257, 3, 8, 24, 1, true},     // N = 24 padded to 32; last chunk of 1 token
    {1, 130, 4, 24, 16, 4, false},   // P = 24: a partial slice of head channels; G = H
    {2, 200, 80, 64, 128, 1, true},  // the mamba2 head shape, enough heads for 32-channel slices
    {1, 300, 2, 64, 256, 1, true},   // N = 256
    {1, 2049, 2, 16, 64, 1, true},   // long: 33 chunks
};

enum class Kern { automatic, recurrent, chunked };

struct Guard {  // sets SSM_SSD_KERNEL for the scope
  explicit Guard(Kern k) {
    if (k == Kern::recurrent) setenv("SSM_SSD_KERNEL", "recurrent", 1);
    if (k == Kern::chunked) setenv("SSM_SSD_KERNEL", "chunked", 1);
  }
  ~Guard() { unsetenv("SSM_SSD_KERNEL"); }
};

bool chunked_applies(const Case& c, DType t) { return t != DType::f32 && c.N % 8 == 0 && c.N <= 256 && c.P % 8 == 0; }

class CudaSSD : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
  autograd::NoGradGuard ng_;
};

void run_case(const Case& c, DType act, Kern k, uint64_t seed) {
  SSDArgs cpu, gpu;
  auto rounded = [&](const Shape& s, uint64_t key, double sd, Tensor& dc, Tensor& dg) {
    Tensor t = Tensor::randn(s, seed * 10 + key, 0, sd).to(act);
    dc = t.to(DType::f32);
    dg = t.to(Device::cuda);
  };
  rounded({c.B, c.L, c.H, c.P}, 1, 1.0, cpu.x, gpu.x);
  rounded({c.B, c.L, c.G, c.N}, 2, 0.5, cpu.B, gpu.B);
  rounded({c.B, c.L, c.G, c.N}, 3, 0.5, cpu.C, gpu.C);
  cpu.A = Tensor::rand({c.B, c.L, c.H}, seed * 10 + 4, -0.6, -0.01);
  gpu.A = cpu.A.to(Device::cuda);
  if (c.h0) {
    cpu.initial_state = Tensor::randn({c.B, c.H, c.P, c.N}, seed * 10 + 5);
    gpu.initial_state = cpu.initial_state.to(Device::cuda);
  }
  cpu.chunk_size = gpu.chunk_size = 64;
  ScanOut want = ssd_scan(cpu);
  ScanOut got;
  {
    Guard g(k);
    got = ssd_scan(gpu);
  }
  ASSERT_EQ(got.y.device(), Device::cuda);
  ASSERT_EQ(got.y.dtype(), act);
  ASSERT_EQ(got.final_state.dtype(), DType::f32);
  const bool chunked = k == Kern::chunked || (k == Kern::automatic && chunked_applies(c, act) && c.L > 16);
  const double ty = chunked ? (act == DType::bf16 ? 2e-2 : 5e-3)
                            : (act == DType::bf16  ? 1e-2
                               : act == DType::f16 ? 2e-3
                                                   : 2e-4);
  const double ts = chunked ? ty : 2e-4;
  Tensor y = got.y.to(Device::cpu), hT = got.final_state.to(Device::cpu);
  ErrStats ey = compare(y, want.y), es = compare(hT, want.final_state);
  const std::string what = std::string(dtype_name(act)) + (chunked ? " chunked" : " recurrent") +
                           " B=" + std::to_string(c.B) + " L=" + std::to_string(c.L) + " H=" + std::to_string(c.H) +
                           " P=" + std::to_string(c.P) + " N=" + std::to_string(c.N) + " G=" + std::to_string(c.G);
  std::printf("[%s] y %.2e, final state %.2e of max |ref|\n", what.c_str(), ey.max_abs / ey.ref_max,
              es.max_abs / es.ref_max);
  EXPECT_TRUE(AllClose(y, want.y, ty)) << what << " y";
  EXPECT_TRUE(AllClose(hT, want.final_state, ts)) << what << " final state";
}

TEST_F(CudaSSD, RecurrentMatchesCpu) {
  uint64_t seed = 1;
  for (const Case& c : kCases)
    for (DType t : {DType::f32, DType::bf16, DType::f16}) run_case(c, t, Kern::recurrent, seed++);
}

// Both forms of the chunked kernel: loading each chunk when it starts, and fetching the next one ahead.
TEST_F(CudaSSD, ChunkedMatchesCpu) {
  uint64_t seed = 100;
  for (const char* pf : {"0", "1"}) {
    setenv("SSM_SSD_PREFETCH", pf, 1);
    std::printf("SSM_SSD_PREFETCH=%s\n", pf);
    for (const Case& c : kCases)
      for (DType t : {DType::bf16, DType::f16})
        if (chunked_applies(c, t)) run_case(c, t, Kern::chunked, seed++);
  }
  unsetenv("SSM_SSD_PREFETCH");
}

TEST_F(CudaSSD, AutomaticChoiceMatchesCpu) {
  run_case(kCases[2], DType::bf16, Kern::automatic, 7);
  run_case(kCases[1], DType::bf16, Kern::automatic, 8);
  run_case(kCases[3], DType::f32, Kern::automatic, 9);
}

// The final state fed back as the initial state continues the sequence: two halves equal the whole.
TEST_F(CudaSSD, SplitSequenceEqualsWhole) {
  const int64_t B = 2, L = 150, H = 4, P = 16, N = 32, G = 1;
  for (DType act : {DType::f32, DType::bf16}) {
    SSDArgs a;
    a.x = Tensor::randn({B, L, H, P}, 1).to(act).to(Device::cuda);
    a.A = Tensor::rand({B, L, H}, 2, -0.6, -0.01).to(Device::cuda);
    a.B = Tensor::randn({B, L, G, N}, 3, 0, 0.5).to(act).to(Device::cuda);
    a.C = Tensor::randn({B, L, G, N}, 4, 0, 0.5).to(act).to(Device::cuda);
    ScanOut whole = ssd_scan(a);
    const int64_t cut = 70;
    SSDArgs first = a, second = a;
    first.x = a.x.slice(1, 0, cut), first.A = a.A.slice(1, 0, cut);
    first.B = a.B.slice(1, 0, cut), first.C = a.C.slice(1, 0, cut);
    ScanOut s1 = ssd_scan(first);
    second.x = a.x.slice(1, cut, L), second.A = a.A.slice(1, cut, L);
    second.B = a.B.slice(1, cut, L), second.C = a.C.slice(1, cut, L);
    second.initial_state = s1.final_state;
    ScanOut s2 = ssd_scan(second);
    const double tol = act == DType::f32 ? 1e-5 : 2e-2;  // bf16: the chunk boundaries move (rounding of M, S)
    Tensor y = concat({s1.y, s2.y}, 1).to(Device::cpu);
    EXPECT_TRUE(AllClose(y, whole.y.to(Device::cpu), tol)) << dtype_name(act);
    EXPECT_TRUE(AllClose(s2.final_state.to(Device::cpu), whole.final_state.to(Device::cpu), tol)) << dtype_name(act);
  }
}

TEST_F(CudaSSD, Errors) {
  SSDArgs a;
  a.x = Tensor::randn({1, 4, 2, 8}, 1).to(Device::cuda);
  a.A = Tensor::rand({1, 4, 2}, 2, -1, 0).to(Device::cuda);
  a.B = Tensor::randn({1, 4, 1, 8}, 3);  // on the CPU
  a.C = Tensor::randn({1, 4, 1, 8}, 4).to(Device::cuda);
  try {
    ssd_scan(a);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ssd_scan"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("B is on"), std::string::npos) << e.what();
  }
  a.B = a.B.to(Device::cuda);
  Guard g(Kern::chunked);  // f32 has no chunked kernel
  try {
    ssd_scan(a);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chunked GPU kernel needs bf16/f16"), std::string::npos) << e.what();
  }
}

// gated_rms_norm: f32 1e-5 (fp32 both sides, different summation order), bf16/f16 1e-2 / 2e-3 (output
// rounding). clamp: exact.
TEST_F(CudaSSD, GatedRmsNormAndClampMatchCpu) {
  const int64_t C = 48;
  for (DType act : {DType::f32, DType::bf16, DType::f16})
    for (int64_t group : {16, 48})
      for (bool before : {false, true})
        for (bool with_z : {true, false}) {
          Tensor x = Tensor::randn({3, 5, C}, 11).to(act), z = Tensor::randn({3, 5, C}, 12).to(act);
          Tensor w = Tensor::randn({C}, 13, 1, 0.2);
          Tensor want = gated_rms_norm(x.to(DType::f32), with_z ? z.to(DType::f32) : Tensor(), w, group, 1e-5, before);
          Tensor got = gated_rms_norm(x.to(Device::cuda), with_z ? z.to(Device::cuda) : Tensor(), w.to(Device::cuda),
                                      group, 1e-5, before);
          EXPECT_EQ(got.dtype(), act);
          const double tol = act == DType::f32 ? 1e-5 : act == DType::bf16 ? 1e-2 : 2e-3;
          EXPECT_TRUE(AllClose(got.to(Device::cpu).to(DType::f32), want, tol))
              << dtype_name(act) << " group " << group << " before " << before << " z " << with_z;
        }
  Tensor x = Tensor::randn({7, 33}, 5);
  Tensor got = clamp(x.to(Device::cuda), -0.5, 0.25).to(Device::cpu);
  EXPECT_TRUE(AllClose(got, clamp(x, -0.5, 0.25), 0));
}

}  // namespace
