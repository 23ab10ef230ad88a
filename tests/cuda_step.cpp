// Model::step on the GPU (label cuda; skips without a GPU or ../shared): the fused decode step of the
// Mamba-1 fixtures (hf-mamba1-tiny, ssm-mamba1-tiny, hf-falcon-mamba-tiny) after a prefill, at batch
// 1 and 3 (the GEMV kernels) and 10 (cuBLASLt GEMMs), with CUDA graphs and without:
//  - f32: equal to forward() of the whole sequence on the GPU and to the CPU's step within 1e-4 of
//    max |logit| (fp32 everywhere; only the order of the sums differs);
//  - bf16 weights and activations: within kBf16Tol of max |logit| of the f32 CPU step and of the bf16
//    GPU forward (bf16 rounds the activations to 2^-9 relative; the step computes dt in fp32);
//  - a forward() on the state between steps (which replaces the state's tensors) is taken up;
//  - after the first step on a state, further steps request no device memory at all;
//  - greedy generation on the GPU (prefill, then steps) reproduces the fixtures' gen.sequences.
#include <cstdlib>

#include "ssm/autograd.h"
#include "ssm/generate.h"
#include "ssm/model.h"
#include "ssm/safetensors.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;

namespace {

constexpr double kF32Tol = 1e-4;
constexpr double kBf16Tol = 1.5e-2;

struct Case {
  const char* fixture;
  int64_t batch;
  bool graphs;
};

class CudaStep : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
    rel_ = std::string("fixtures/") + GetParam().fixture;
    SSM_REQUIRE_SHARED(rel_ + "/golden.safetensors");
    setenv("SSM_CUDA_GRAPHS", GetParam().graphs ? "1" : "0", 1);
  }
  void TearDown() override { unsetenv("SSM_CUDA_GRAPHS"); }
  std::unique_ptr<Model> load(DType wd, Device dev) const {
    LoadOptions o;
    o.weight_dtype = wd;
    o.device = dev;
    return Model::load(shared_path(rel_), o);
  }
  std::string rel_;
  autograd::NoGradGuard ng_;
};

// ids [B, L]: distinct sequences of in-range tokens.
Tensor make_ids(int64_t B, int64_t L, int64_t V) {
  std::vector<int64_t> v;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t) v.push_back((b * 37 + t * 11 + 5) % V);
  return Tensor::from_vector(v, {B, L});
}

std::vector<int64_t> column(const Tensor& ids, int64_t t) {
  std::vector<int64_t> all = ids.to_vector_i64(), col;
  const int64_t L = ids.size(1);
  for (int64_t b = 0; b < ids.size(0); ++b) col.push_back(all[size_t(b * L + t)]);
  return col;
}

TEST_P(CudaStep, StepEqualsForwardAndCpuStep) {
  const int64_t B = GetParam().batch, P = 5, L = 13, forward_at = 9;
  auto cpu = load(DType::f32, Device::cpu);
  const int64_t V = cpu->config().vocab_size;
  Tensor ids = make_ids(B, L, cpu->config().vocab_size_real > 0 ? cpu->config().vocab_size_real : V);
  Tensor prefix = ids.slice(1, 0, P).contiguous();
  // The CPU's fused step: the reference for every GPU dtype.
  std::vector<Tensor> want;
  {
    InferenceState st = cpu->new_state(B);
    cpu->forward(prefix, &st, 1);
    for (int64_t t = P; t < L; ++t) want.push_back(cpu->step(column(ids, t), st).clone());
  }
  for (DType wd : {DType::f32, DType::bf16}) {
    const double tol = wd == DType::f32 ? kF32Tol : kBf16Tol;
    auto gpu = load(wd, Device::cuda);
    Tensor full = gpu->forward(ids).to(Device::cpu);  // [B, L, V]
    InferenceState st = gpu->new_state(B);
    gpu->forward(prefix, &st, 1);
    double worst_fwd = 0, worst_cpu = 0;
    uint64_t allocs = 0;
    for (int64_t t = P; t < L; ++t) {
      Tensor got;
      if (t == forward_at) {  // forward() with the state between steps (it replaces the state tensors)
        got = gpu->forward(ids.slice(1, t, t + 1).contiguous(), &st, 1).view({B, V});
        allocs = cuda_alloc_calls();  // forward() allocates; the next step copies the state back in
      } else {
        const Tensor& lg = gpu->step(column(ids, t), st);
        EXPECT_EQ(lg.device(), Device::cuda);
        if (t > P) {
          EXPECT_EQ(cuda_alloc_calls(), allocs) << "device memory requested by step " << t - P + 1;
        }
        allocs = cuda_alloc_calls();
        got = lg.to(Device::cpu);
      }
      Tensor ref = full.slice(1, t, t + 1).contiguous().view({B, V});
      ErrStats e1 = compare(got, ref), e2 = compare(got, want[size_t(t - P)]);
      worst_fwd = std::max(worst_fwd, e1.max_abs / e1.ref_max);
      worst_cpu = std::max(worst_cpu, e2.max_abs / e2.ref_max);
      EXPECT_TRUE(AllClose(got, ref, tol)) << dtype_name(wd) << " vs GPU forward, position " << t;
      EXPECT_TRUE(AllClose(got, want[size_t(t - P)], tol)) << dtype_name(wd) << " vs CPU step, position " << t;
    }
    std::printf("[%s B=%lld %s graphs=%d] max err / max|logit|: %.2e vs GPU forward, %.2e vs CPU step\n",
                GetParam().fixture, static_cast<long long>(B), dtype_name(wd), int(GetParam().graphs), worst_fwd,
                worst_cpu);
  }
}

TEST_P(CudaStep, GreedyGenerationMatchesFixture) {
  if (GetParam().batch != 1) GTEST_SKIP() << "once per fixture";
  auto gpu = load(DType::f32, Device::cuda);
  auto g = io::SafeTensors::open(shared_path(rel_ + "/golden.safetensors"));
  std::vector<int64_t> prompt = g.get("gen.prompt").to_vector_i64(), want = g.get("gen.sequences").to_vector_i64();
  GenerateOptions o;
  o.max_new_tokens = int64_t(want.size() - prompt.size());
  o.sampling.temperature = 0;
  o.ignore_eos = true;
  const std::vector<int32_t> p(prompt.begin(), prompt.end());
  GenerateResult r = Generator(*gpu, nullptr).generate({p, p, p}, o);  // three sequences decoded together
  for (const auto& toks : r.tokens) {
    std::vector<int64_t> got(prompt.begin(), prompt.end());
    got.insert(got.end(), toks.begin(), toks.end());
    EXPECT_EQ(got, want);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaStep,
                         ::testing::Values(Case{"hf-mamba1-tiny", 1, true}, Case{"hf-mamba1-tiny", 3, true},
                                           Case{"hf-mamba1-tiny", 10, true}, Case{"hf-mamba1-tiny", 3, false},
                                           Case{"ssm-mamba1-tiny", 1, true}, Case{"ssm-mamba1-tiny", 3, true},
                                           Case{"ssm-mamba1-tiny", 10, false}, Case{"hf-falcon-mamba-tiny", 1, true},
                                           Case{"hf-falcon-mamba-tiny", 3, true},
                                           Case{"hf-falcon-mamba-tiny", 10, true},
                                           Case{"hf-falcon-mamba-tiny", 1, false}),
                         [](const auto& info) {
                           std::string n = std::string(info.param.fixture) + "_B" + std::to_string(info.param.batch) +
                                           (info.param.graphs ? "_graph" : "_eager");
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

}  // namespace
