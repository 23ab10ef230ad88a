// Training on the GPU (label cuda; skips without a GPU or, for the fixtures, without ../shared):
//  - a few AdamW steps of a tiny Mamba-1 on the GPU in f32 against the same steps on the CPU;
//  - bf16 (mixed precision) training learns and tracks f32 training;
//  - the gradient of every parameter of the tiny fixtures, on the GPU, against the golden gradients;
//  - `ssm train --device cuda` (run_training): checkpoints in the CPU format, resume, export;
//  - two identical GPU runs give bit-identical gradients and weights (f32 and bf16).
// Tolerances are given at each test.
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "ssm/autograd.h"
#include "ssm/data.h"
#include "ssm/model.h"
#include "ssm/safetensors.h"
#include "ssm/train.h"
#include "ssm/trainer.h"
#include "testing.h"
#include "train_testing.h"

using namespace ssm;
using namespace ssm::testing;
namespace fs = std::filesystem;

namespace {

const Device gpu = Device::cuda;

class CudaTrain : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  }
};

ModelConfig tiny_mamba1(int64_t vocab) {
  ModelConfig c;
  c.arch = Arch::mamba1;
  c.d_model = 32;
  c.n_layer = 2;
  c.d_state = 16;
  c.d_inner = 64;
  c.dt_rank = 2;
  c.vocab_size = c.vocab_size_real = vocab;
  return c;
}

// Byte tokens of a repetitive text, in random windows (the same for every caller with the same seed).
std::vector<Tensor> text_batches(int n, int64_t batch, int64_t len, uint64_t seed) {
  std::string s;
  for (int i = 0; i < 300; ++i) s += "the quick brown fox " + std::to_string(i % 17) + " jumps over the lazy dog.\n";
  std::vector<int32_t> ids(s.begin(), s.end());
  data::BatchLoader loader(ids, batch, len, seed);
  std::vector<Tensor> out;
  for (int i = 0; i < n; ++i) out.push_back(loader.next());
  return out;
}

struct Trainer {
  std::unique_ptr<Model> model;
  std::vector<std::pair<std::string, Tensor>> params;
  std::unique_ptr<train::AdamW> opt;
  Trainer(const ModelConfig& c, Device dev, DType act) {
    model = Model::create(c, 7, DType::f32, dev);
    if (dev == gpu) model->set_activation_dtype(act);
    params = model->named_parameters();
    for (auto& [n, p] : params) p.set_requires_grad(true);
    opt = std::make_unique<train::AdamW>(params, train::AdamWConfig{});
  }
  // One step; returns {loss, gradient norm before clipping}.
  std::pair<double, double> step(const Tensor& ids, double lr) {
    opt->zero_grad();
    Tensor loss = train::lm_loss(*model, ids);
    const double l = loss.item();
    loss.backward();
    const double norm = train::clip_grad_norm(params, 1.0);
    opt->step(lr);
    return {l, norm};
  }
};

}  // namespace

// f32 on both sides. Losses and gradient norms: 1e-4 relative (fp32 rounding and summation order).
// Weights after the steps: AdamW's first steps move each weight by about ±lr whatever the size of its
// gradient, so an element whose tiny gradient has opposite signs on the two sides differs by up to
// 2·lr per step: the max abs difference is bounded by 2·lr·steps; the mean abs difference, where such
// flips are rare, must stay below 1e-2·lr.
TEST_F(CudaTrain, F32StepsMatchCpu) {
  const ModelConfig c = tiny_mamba1(256);
  Trainer cpu(c, Device::cpu, DType::f32), dev(c, gpu, DType::f32);
  for (size_t k = 0; k < cpu.params.size(); ++k)
    ASSERT_TRUE(AllClose(dev.params[k].second.to(Device::cpu), cpu.params[k].second, 0)) << cpu.params[k].first;
  const double lr = 1e-3;
  const int steps = 4;
  auto batches = text_batches(steps, 3, 40, 11);
  for (int s = 0; s < steps; ++s) {
    auto [lc, nc] = cpu.step(batches[size_t(s)], lr);
    auto [lg, ng] = dev.step(batches[size_t(s)], lr);
    std::printf("step %d: loss cpu %.7f gpu %.7f | grad norm cpu %.7f gpu %.7f\n", s, lc, lg, nc, ng);
    EXPECT_NEAR(lg, lc, 1e-4 * lc) << "step " << s;
    EXPECT_NEAR(ng, nc, 1e-4 * nc) << "step " << s;
  }
  double worst_max = 0, worst_mean = 0;
  for (size_t k = 0; k < cpu.params.size(); ++k) {
    ErrStats e = compare(dev.params[k].second.to(Device::cpu), cpu.params[k].second);
    worst_max = std::max(worst_max, e.max_abs);
    worst_mean = std::max(worst_mean, e.mean_abs);
    EXPECT_LE(e.max_abs, 2 * lr * steps) << cpu.params[k].first;
    EXPECT_LE(e.mean_abs, 1e-2 * lr) << cpu.params[k].first;
  }
  std::printf("weights after %d steps: worst max abs diff %.3g, worst mean abs diff %.3g (lr %g)\n", steps, worst_max,
              worst_mean, lr);
  // The optimizer state lives on the GPU and checkpoints as the CPU's does.
  auto st = dev.opt->state();
  ASSERT_EQ(st.size(), cpu.opt->state().size());
  EXPECT_EQ(st[0].second.device(), gpu);
}

// bf16 activations (f32 master weights): over 40 steps the loss must fall below 75 % of its start,
// and stay within 5 % (+0.02) of the f32 run's loss at every step — bf16 rounds each activation to
// 2^-9 relative, which perturbs the trajectory but not what it learns.
TEST_F(CudaTrain, Bf16LearnsAndTracksF32) {
  const ModelConfig c = tiny_mamba1(256);
  Trainer f32(c, gpu, DType::f32), bf16(c, gpu, DType::bf16);
  auto batches = text_batches(40, 4, 64, 12);
  double first = 0, last = 0, worst = 0;
  for (size_t s = 0; s < batches.size(); ++s) {
    const double lr = 5e-3;
    auto [l32, n32] = f32.step(batches[s], lr);
    auto [l16, n16] = bf16.step(batches[s], lr);
    if (s == 0) first = l16;
    last = l16;
    worst = std::max(worst, std::fabs(l16 - l32) / l32);
    EXPECT_NEAR(l16, l32, 0.05 * l32 + 0.02) << "step " << s;
    EXPECT_TRUE(std::isfinite(n16)) << "step " << s;
  }
  std::printf("bf16: loss %.4f -> %.4f; worst relative difference to f32 %.4f\n", first, last, worst);
  EXPECT_LT(last, 0.75 * first);
}

// Determinism: two GPU runs with the same seed and batches give bit-identical losses, gradient norms,
// gradients and weights after every AdamW step, in f32 and bf16 (no float atomics: every sum across
// threads has a fixed order). The byte text repeats token ids many times per batch (the embedding's
// scatter-add sums many rows per id); d_inner 96 spans 6 scan blocks and B·L = 4·200 spans several
// conv chunks and norm blocks. Tolerance: none (byte equality).
TEST_F(CudaTrain, RunsAreBitIdentical) {
  ModelConfig c = tiny_mamba1(256);
  c.d_model = 48;
  c.d_inner = 96;
  for (DType act : {DType::f32, DType::bf16}) {
    Trainer a(c, gpu, act), b(c, gpu, act);
    auto batches = text_batches(3, 4, 200, 13);
    for (size_t s = 0; s < batches.size(); ++s) {
      auto [la, na] = a.step(batches[s], 1e-3);
      auto [lb, nb] = b.step(batches[s], 1e-3);
      EXPECT_EQ(la, lb) << dtype_name(act) << " step " << s;
      EXPECT_EQ(na, nb) << dtype_name(act) << " step " << s;
    }
    for (size_t k = 0; k < a.params.size(); ++k) {
      const std::string& n = a.params[k].first;
      const Tensor &pa = a.params[k].second, &pb = b.params[k].second;
      ASSERT_TRUE(pa.grad().defined() && pb.grad().defined()) << n;
      const std::vector<float> ga = pa.grad().to(Device::cpu).to_vector_f32(),
                               gb = pb.grad().to(Device::cpu).to_vector_f32();
      const std::vector<float> wa = pa.to(Device::cpu).to_vector_f32(), wb = pb.to(Device::cpu).to_vector_f32();
      EXPECT_EQ(0, std::memcmp(ga.data(), gb.data(), ga.size() * sizeof(float))) << dtype_name(act) << " grad " << n;
      EXPECT_EQ(0, std::memcmp(wa.data(), wb.data(), wa.size() * sizeof(float))) << dtype_name(act) << " weight " << n;
    }
  }
}

// The golden gradients of the fixtures (Hugging Face, f64) for f32 on the GPU: 2e-4 of each tensor's
// largest magnitude (the CPU test's 1e-4, doubled for the GPU's other summation order).
class CudaGradParity : public ::testing::TestWithParam<const char*> {};

TEST_P(CudaGradParity, LossAndAllGradients) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device visible";
  std::string rel = std::string("fixtures/") + GetParam();
  SSM_REQUIRE_SHARED(rel + "/golden.safetensors");
  LoadOptions o;
  o.device = gpu;
  auto model = Model::load(shared_path(rel), o);
  auto golden = io::SafeTensors::open(shared_path(rel + "/golden.safetensors"));
  auto params = model->named_parameters();
  for (auto& [n, p] : params) p.set_requires_grad(true);
  Tensor loss = train::lm_loss(*model, golden.get("input_ids"));
  EXPECT_EQ(loss.device(), gpu);
  const double ref = golden.get("loss").item();
  EXPECT_NEAR(loss.item(), ref, 1e-4 * std::fabs(ref));
  loss.backward();
  int checked = 0;
  double worst = 0;
  for (auto& [n, p] : params) {
    ASSERT_TRUE(golden.has("grad." + n)) << "no golden gradient for " << n;
    ASSERT_TRUE(p.grad().defined()) << "no gradient reached " << n;
    EXPECT_EQ(p.grad().device(), gpu) << n;
    Tensor want = golden.get("grad." + n);
    ErrStats e = compare(p.grad(), want);
    worst = std::max(worst, e.max_abs / std::max(e.ref_max, 1e-30));
    EXPECT_TRUE(AllClose(p.grad(), want, 2e-4)) << n;
    ++checked;
  }
  std::printf("[%s] %d gradients, worst max abs err %.3g of the tensor's max |grad|\n", GetParam(), checked, worst);
  EXPECT_GT(checked, 10);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaGradParity, ::testing::Values("hf-mamba1-tiny", "hf-falcon-mamba-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// run_training on the GPU (bf16): the checkpoint has the CPU run's tensors (names, dtypes, shapes) and
// metadata keys; --resume continues from it; the export loads on the CPU; the summary reports GPU memory.
TEST_F(CudaTrain, RunTrainingOnGpu) {
  const std::string text = write_text("cuda_train.txt");
  const std::string dir_gpu = ::testing::TempDir() + "/cuda_train_gpu",
                    dir_cpu = ::testing::TempDir() + "/cuda_train_cpu";
  fs::remove_all(dir_gpu);
  fs::remove_all(dir_cpu);
  train::TrainConfig t = tiny_config(dir_gpu, text);
  t.ckpt_every = 3;
  t.keep_last = 5;
  t.sample_every = 3;  // sampling runs the GPU decode step on the f32 master weights
  t.sample_len = 8;
  t.device = gpu;
  t.dtype = DType::bf16;
  t.stop_after = 3;
  train::run_training(t);  // steps 1-3, then a checkpoint and a stop
  t.stop_after = 0;
  t.resume = true;
  const double val = train::run_training(t);  // steps 4-6
  EXPECT_TRUE(std::isfinite(val));
  train::TrainConfig tc = tiny_config(dir_cpu, text);
  tc.ckpt_every = 3;
  train::run_training(tc);

  auto g = io::SafeTensors::open(dir_gpu + "/checkpoint-00000006.safetensors");
  auto c = io::SafeTensors::open(dir_cpu + "/checkpoint-00000006.safetensors");
  EXPECT_EQ(g.names(), c.names());
  for (const auto& n : c.names()) {
    Tensor a = g.get(n), b = c.get(n);
    EXPECT_EQ(a.shape(), b.shape()) << n;
    EXPECT_EQ(a.dtype(), b.dtype()) << n;
  }
  for (const auto& [k, v] : c.metadata()) {
    ASSERT_TRUE(g.metadata().count(k)) << k;
    if (k != "data_position") {
      EXPECT_EQ(g.metadata().at(k), v) << k;
    }
  }
  auto m = Model::load(dir_gpu + "/model");  // the export, on the CPU
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{10, 20, 30, 40, 50, 60}, {1, 6});
  EXPECT_TRUE(std::isfinite(train::lm_loss(*m, ids).item()));
  // The last line of the log is the summary, with the GPU's peak memory.
  std::string log = slurp(dir_gpu + "/train.jsonl"), last;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);)
    if (line.find("\"summary\"") != std::string::npos) last = line;
  auto j = nlohmann::json::parse(last);
  EXPECT_EQ(j.at("device"), "cuda");
  EXPECT_GT(j.at("peak_gpu_mib").get<double>(), 0.0);
  EXPECT_NE(log.find("\"sample\""), std::string::npos);
}
