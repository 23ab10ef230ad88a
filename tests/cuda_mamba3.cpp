// Mamba-3 SISO on the GPU (label cuda; skips without a GPU or ../shared):
//  - the mamba3_siso_scan op against the CPU op on the same inputs (q, k, v, z rounded to the activation
//    dtype; the per-step scalars, biases, D and the states f32 on both sides): f32 1e-4 of max |ref| (the
//    GPU's tanhf / sincosf / expf against the CPU's libm, amplified slightly through the angles over L),
//    bf16 1e-2 for y (output rounding) and 1e-4 for the f32 final states;
//  - the ssm-mamba3-tiny model on the GPU in f32 against the CPU model (1e-4 of max |logit|) and against the
//    golden logits with the CPU parity test's bound (1.5e-2: mamba_ssm's in-kernel bf16 roundings);
//    the bf16 checkpoint run in bf16 on the GPU against the golden logits within kBf16Tol;
//  - prefill + token-by-token forward and Model::step (the op path) equal the full forward (1e-4).
#include "ssm/autograd.h"
#include "ssm/model.h"
#include "ssm/ops.h"
#include "ssm/ops_mamba3.h"
#include "ssm/safetensors.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;

namespace {

// bf16 activations everywhere (2^-9 relative per op boundary), compounded over 3 layers; the golden
// logits carry mamba_ssm's own bf16 noise (1.1e-2 of max |logit| against our f32 CPU model).
constexpr double kBf16Tol = 3e-2;

struct Sizes {
  int64_t B, L, H, P, N, G, S;
  bool state;
};

const Sizes kSizes[] = {
    {2, 1, 4, 16, 32, 1, 8, true},     // one step (decode through the op path)
    {2, 37, 8, 16, 32, 1, 8, false},   // the fixture's shape
    {1, 100, 4, 8, 16, 2, 8, true},    // full rotation (S = N/2), groups
    {1, 300, 2, 16, 64, 1, 16, true},  // half rotation, N = 64
    {1, 50, 3, 24, 128, 3, 32, true},  // N = 128, G = H
    {1, 20, 2, 8, 40, 1, 10, false},   // N not a multiple of 32
};

class CudaMamba3 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
  autograd::NoGradGuard ng_;
};

TEST_F(CudaMamba3, ScanMatchesCpu) {
  uint64_t seed = 1;
  for (const Sizes& s : kSizes)
    for (DType act : {DType::f32, DType::bf16}) {
      seed += 20;
      Mamba3SisoArgs c, g;
      auto rounded = [&](const Shape& sh, uint64_t k, double mean, double sd, Tensor& tc, Tensor& tg) {
        Tensor t = Tensor::randn(sh, seed + k, mean, sd).to(act);
        tc = t.to(DType::f32);
        tg = t.to(Device::cuda);
      };
      auto f32 = [&](Tensor t, Tensor& tc, Tensor& tg) {
        tc = t;
        tg = t.to(Device::cuda);
      };
      rounded({s.B, s.L, s.G, s.N}, 1, 0, 1, c.q, g.q);
      rounded({s.B, s.L, s.G, s.N}, 2, 0, 1, c.k, g.k);
      rounded({s.B, s.L, s.H, s.P}, 3, 0, 1, c.v, g.v);
      rounded({s.B, s.L, s.H, s.P}, 4, 0, 1, c.z, g.z);
      Tensor dt = Tensor::rand({s.B, s.L, s.H}, seed + 5, 0.01, 0.5);
      f32(dt, c.dt, g.dt);
      f32(mul(dt, Tensor::rand({s.B, s.L, s.H}, seed + 6, -2.0, -0.05)), c.adt, g.adt);
      f32(Tensor::randn({s.B, s.L, s.H}, seed + 7, 0, 2), c.trap, g.trap);
      f32(Tensor::randn({s.H, s.N}, seed + 8, 1, 0.3), c.q_bias, g.q_bias);
      f32(Tensor::randn({s.H, s.N}, seed + 9, 1, 0.3), c.k_bias, g.k_bias);
      f32(Tensor::randn({s.B, s.L, s.S}, seed + 10, 0, 2), c.angles, g.angles);
      f32(Tensor::randn({s.H}, seed + 11, 1, 0.5), c.D, g.D);
      if (s.state) {
        f32(Tensor::rand({s.B, s.H, s.S}, seed + 12, 0, 6.28), c.angle_state, g.angle_state);
        f32(Tensor::randn({s.B, s.H, s.P, s.N}, seed + 13), c.ssm_state, g.ssm_state);
        f32(Tensor::randn({s.B, s.H, s.N}, seed + 14), c.k_state, g.k_state);
        f32(Tensor::randn({s.B, s.H, s.P}, seed + 15), c.v_state, g.v_state);
      }
      Mamba3SisoOut want = mamba3_siso_scan(c), got = mamba3_siso_scan(g);
      ASSERT_EQ(got.y.dtype(), act);
      const double ty = act == DType::f32 ? 1e-4 : 1e-2;
      const std::string what = std::string(dtype_name(act)) + " L=" + std::to_string(s.L) +
                               " N=" + std::to_string(s.N) + " S=" + std::to_string(s.S) + " G=" + std::to_string(s.G);
      Tensor y = got.y.to(Device::cpu).to(DType::f32);
      ErrStats e = compare(y, want.y);
      std::printf("[%s] y %.2e of max |ref|\n", what.c_str(), e.max_abs / e.ref_max);
      EXPECT_TRUE(AllClose(y, want.y, ty)) << what << " y";
      EXPECT_TRUE(AllClose(got.ssm_state.to(Device::cpu), want.ssm_state, 1e-4)) << what << " ssm_state";
      EXPECT_TRUE(AllClose(got.k_state.to(Device::cpu), want.k_state, 1e-4)) << what << " k_state";
      EXPECT_TRUE(AllClose(got.v_state.to(Device::cpu), want.v_state, 0)) << what << " v_state";
      EXPECT_TRUE(AllClose(got.angle_state.to(Device::cpu), want.angle_state, 1e-4)) << what << " angle_state";
    }
}

std::unique_ptr<Model> load(const std::string& fixture, DType wd, Device dev) {
  LoadOptions o;
  o.weight_dtype = wd;
  o.device = dev;
  return Model::load(shared_path("fixtures/" + fixture), o);
}

TEST_F(CudaMamba3, ModelLogits) {
  SSM_REQUIRE_SHARED("fixtures/ssm-mamba3-tiny/golden.safetensors");
  SSM_REQUIRE_SHARED("fixtures/ssm-mamba3-tiny-bf16/golden.safetensors");
  auto g = io::SafeTensors::open(shared_path("fixtures/ssm-mamba3-tiny/golden.safetensors"));
  Tensor ids = g.get("input_ids");
  Tensor cpu = load("ssm-mamba3-tiny", DType::f32, Device::cpu)->forward(ids);
  Tensor gpu = load("ssm-mamba3-tiny", DType::f32, Device::cuda)->forward(ids);
  ErrStats e = compare(gpu, cpu), eg = compare(gpu, g.get("logits"));
  std::printf("[ssm-mamba3-tiny f32] vs CPU %.2e, vs golden %.2e of max |logit|\n", e.max_abs / e.ref_max,
              eg.max_abs / eg.ref_max);
  EXPECT_TRUE(AllClose(gpu, cpu, 1e-4));
  EXPECT_TRUE(AllClose(gpu, g.get("logits"), 1.5e-2));
  auto g16 = io::SafeTensors::open(shared_path("fixtures/ssm-mamba3-tiny-bf16/golden.safetensors"));
  Tensor b16 = load("ssm-mamba3-tiny-bf16", DType::bf16, Device::cuda)->forward(g16.get("input_ids"));
  ErrStats e16 = compare(b16, g16.get("logits"));
  std::printf("[ssm-mamba3-tiny-bf16 bf16] vs golden %.2e of max |logit| (mean %.2e)\n", e16.max_abs / e16.ref_max,
              e16.mean_abs / e16.ref_max);
  EXPECT_TRUE(AllClose(b16, g16.get("logits"), kBf16Tol));
}

TEST_F(CudaMamba3, StepwiseAndStepEqualForward) {
  SSM_REQUIRE_SHARED("fixtures/ssm-mamba3-tiny/golden.safetensors");
  auto model = load("ssm-mamba3-tiny", DType::f32, Device::cuda);
  Tensor ids = io::SafeTensors::open(shared_path("fixtures/ssm-mamba3-tiny/golden.safetensors")).get("input_ids");
  Tensor full = model->forward(ids).to(Device::cpu);
  const int64_t B = ids.size(0), L = ids.size(1), V = full.size(2), split = 5;
  InferenceState st = model->new_state(B);
  model->forward(ids.slice(1, 0, split).contiguous(), &st, 1);
  std::vector<int64_t> all = ids.to_vector_i64();
  for (int64_t t = split; t < L; ++t) {
    Tensor got;
    if (t % 2) {
      got = model->forward(ids.slice(1, t, t + 1).contiguous(), &st, 1).to(Device::cpu).view({B, V});
    } else {
      std::vector<int64_t> col;
      for (int64_t b = 0; b < B; ++b) col.push_back(all[size_t(b * L + t)]);
      got = model->step(col, st).to(Device::cpu);
    }
    ASSERT_TRUE(AllClose(got, full.slice(1, t, t + 1).contiguous().view({B, V}), 1e-4)) << "position " << t;
  }
}

}  // namespace
