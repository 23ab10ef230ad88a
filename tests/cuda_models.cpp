// Mamba-1 / Falcon-Mamba inference on the GPU (label cuda; skips without a GPU or ../shared) against
// the fixtures' golden logits (Hugging Face in f64, mamba_ssm in f32):
//  - f32 weights and activations: 1e-4 of max |logit|, as the CPU parity tests (exact fp32 GEMMs, no TF32);
//  - bf16 weights and activations (f32 residual stream and SSM state): kBf16Tol of max |logit|: bf16
//    rounds every activation to 2^-9 relative, and the error compounds over the layers;
//  - prefill + token-by-token forward with the state on the GPU equals the full forward;
//  - `ssm logits` and `ssm generate` with --device cuda (the binary from SSM_BIN, else the build's).
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "ssm/autograd.h"
#include "ssm/model.h"
#include "ssm/safetensors.h"
#include "testing.h"

using namespace ssm;
using namespace ssm::testing;
namespace fs = std::filesystem;

namespace {

constexpr double kF32Tol = 1e-4;
constexpr double kBf16Tol = 1.5e-2;  // measured on an H100: 4.4e-3 to 5.9e-3 on the three fixtures

class CudaModel : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
    rel_ = std::string("fixtures/") + GetParam();
    SSM_REQUIRE_SHARED(rel_ + "/golden.safetensors");
  }
  std::unique_ptr<Model> load(DType wd) const {
    LoadOptions o;
    o.weight_dtype = wd;
    o.device = Device::cuda;
    return Model::load(shared_path(rel_), o);
  }
  io::SafeTensors golden() const { return io::SafeTensors::open(shared_path(rel_ + "/golden.safetensors")); }
  std::string rel_;
  autograd::NoGradGuard ng_;
};

TEST_P(CudaModel, F32LogitsAndHiddenStatesMatchGolden) {
  auto model = load(DType::f32);
  EXPECT_EQ(model->device(), Device::cuda);
  auto g = golden();
  std::vector<Tensor> hidden;
  Tensor logits = model->forward(g.get("input_ids"), nullptr, 0, &hidden);
  EXPECT_EQ(logits.dtype(), DType::f32);
  EXPECT_EQ(logits.device(), Device::cuda);
  ErrStats s = compare(logits, g.get("logits"));
  std::printf("[%s f32] max abs err %.3g of max |logit| %.3g (%.2e relative)\n", GetParam(), s.max_abs, s.ref_max,
              s.max_abs / s.ref_max);
  EXPECT_TRUE(AllClose(logits, g.get("logits"), kF32Tol));
  for (size_t i = 0; g.has("hidden_states." + std::to_string(i)); ++i) {
    ASSERT_LT(i, hidden.size());
    EXPECT_TRUE(AllClose(hidden[i], g.get("hidden_states." + std::to_string(i)), kF32Tol)) << "hidden " << i;
  }
  // The last position only (the head on a strided slice).
  Tensor last = model->forward(g.get("input_ids"), nullptr, 1);
  const int64_t L = g.get("input_ids").size(1);
  EXPECT_TRUE(AllClose(last, g.get("logits").slice(1, L - 1, L).contiguous(), kF32Tol));
}

TEST_P(CudaModel, Bf16LogitsMatchGolden) {
  auto model = load(DType::bf16);
  auto g = golden();
  Tensor logits = model->forward(g.get("input_ids"));
  EXPECT_EQ(logits.dtype(), DType::f32);
  ErrStats s = compare(logits, g.get("logits"));
  std::printf("[%s bf16] max abs err %.3g of max |logit| %.3g (%.2e relative), mean abs err %.3g\n", GetParam(),
              s.max_abs, s.ref_max, s.max_abs / s.ref_max, s.mean_abs);
  EXPECT_TRUE(AllClose(logits, g.get("logits"), kBf16Tol));
}

TEST_P(CudaModel, StepwiseDecodeEqualsPrefill) {
  auto model = load(DType::f32);
  Tensor ids = golden().get("input_ids");
  Tensor full = model->forward(ids);
  const int64_t L = ids.size(1), split = 5;
  InferenceState st = model->new_state(ids.size(0));
  Tensor pre = model->forward(ids.slice(1, 0, split).contiguous(), &st, 0);
  EXPECT_TRUE(AllClose(pre, full.slice(1, 0, split).contiguous(), kF32Tol)) << "prefill";
  for (const auto& layer : st.layers)
    for (const Tensor& t : layer) EXPECT_EQ(t.device(), Device::cuda);
  for (int64_t t = split; t < L; ++t) {
    Tensor step = model->forward(ids.slice(1, t, t + 1).contiguous(), &st, 1);  // [2, 1, V]
    ASSERT_TRUE(AllClose(step, full.slice(1, t, t + 1).contiguous(), kF32Tol)) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaModel,
                         ::testing::Values("hf-mamba1-tiny", "ssm-mamba1-tiny", "hf-falcon-mamba-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// ---- the command line ----
class CudaCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
    bin_ = ssm_binary();
    if (!fs::exists(bin_)) GTEST_SKIP() << "no ssm binary at " << bin_ << " (set SSM_BIN)";
    dir_ = fs::temp_directory_path() / ("ssm_cuda_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }
  std::string tmp(const std::string& n) const { return (dir_ / n).string(); }
  int ssm(const std::string& args, std::string* err) const {
    int st = std::system((bin_ + " " + args + " > " + tmp("out.txt") + " 2> " + tmp("err.txt")).c_str());
    *err = slurp(tmp("err.txt"));
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  }
  std::string bin_;
  fs::path dir_;
};

TEST_F(CudaCli, LogitsAndGreedyGenerateMatchGolden) {
  for (const char* name : {"hf-mamba1-tiny", "hf-falcon-mamba-tiny"}) {
    const std::string fx = std::string("fixtures/") + name;
    SSM_REQUIRE_SHARED(fx + "/golden.safetensors");
    auto golden = io::SafeTensors::open(shared_path(fx + "/golden.safetensors"));
    io::save_safetensors(tmp("in.safetensors"), {{"input_ids", golden.get("input_ids")}});
    std::string err;
    ASSERT_EQ(ssm("logits --device cuda -m " + shared_path(fx) + " --input-ids " + tmp("in.safetensors") + " --out " +
                      tmp("logits.safetensors"),
                  &err),
              0)
        << err;
    EXPECT_TRUE(AllClose(io::SafeTensors::open(tmp("logits.safetensors")).get("logits"), golden.get("logits"), kF32Tol))
        << name;
    io::save_safetensors(tmp("prompt.safetensors"), {{"input_ids", golden.get("gen.prompt")}});
    ASSERT_EQ(ssm("generate --device cuda -m " + shared_path(fx) + " --input-ids " + tmp("prompt.safetensors") +
                      " --output-ids " + tmp("gen.safetensors") + " --temp 0 -n 16 --ignore-eos --parallel 3",
                  &err),
              0)
        << err;
    Tensor got = io::SafeTensors::open(tmp("gen.safetensors")).get("output_ids");  // [3, 25]: three equal rows
    std::vector<int64_t> want = golden.get("gen.sequences").to_vector_i64(), all;
    for (int i = 0; i < 3; ++i) all.insert(all.end(), want.begin(), want.end());
    EXPECT_EQ(got.to_vector_i64(), all) << name;
  }
}

}  // namespace
