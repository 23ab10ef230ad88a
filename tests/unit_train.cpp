// Training loop: resuming from a checkpoint continues bit-identically (2k steps in one run equal
// k steps + checkpoint + resume + k steps), text samples equal the generator's output from the
// exported weights, the peak-RSS summary against /proc, AdamW against a hand-computed step, the LR
// schedule. Bad inputs: unit_train_errors.cpp.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ssm/generate.h"
#include "ssm/safetensors.h"
#include "ssm/train.h"
#include "ssm/trainer.h"
#include "testing.h"
#include "train_testing.h"

using namespace ssm;
namespace fs = std::filesystem;

namespace {
using ssm::testing::slurp;
using ssm::testing::tiny_config;
using ssm::testing::write_text;

TEST(Train, ResumeIsBitIdentical) {
  std::string data = write_text("train_resume.txt");
  std::string a = ::testing::TempDir() + "/run_a", b = ::testing::TempDir() + "/run_b";
  fs::remove_all(a);
  fs::remove_all(b);
  train::run_training(tiny_config(a, data));  // 6 steps in one go
  train::TrainConfig first = tiny_config(b, data);
  first.stop_after = 3;
  train::run_training(first);  // 3 steps, checkpoint
  ASSERT_TRUE(fs::exists(b + "/checkpoint-00000003.safetensors"));
  train::TrainConfig second = tiny_config(b, data);
  second.resume = true;
  train::run_training(second);  // resume: 3 more steps
  auto wa = io::SafeTensors::open(a + "/model/model.safetensors");
  auto wb = io::SafeTensors::open(b + "/model/model.safetensors");
  ASSERT_EQ(wa.names(), wb.names());
  for (const auto& n : wa.names()) EXPECT_EQ(wa.get(n).to_vector_f32(), wb.get(n).to_vector_f32()) << n;
  // And the run actually trained: weights moved from their initialisation.
  auto init = Model::create(
      [&] {
        ModelConfig c = tiny_config(a, data).model;
        c.vocab_size = c.vocab_size_real = 256;
        return c;
      }(),
      1234);
  bool moved = false;
  for (auto& [n, p] : init->named_parameters()) moved |= p.to_vector_f32() != wa.get(n).to_vector_f32();
  EXPECT_TRUE(moved);
}

// Fine-tuning (--init DIR): training starts from that model's weights and configuration. With
// lr 0 the export equals the source bit for bit (a fresh initialisation, or the differently shaped
// configuration also passed in, would not), config.json and tokenizer.json included.
TEST(Train, FineTuneStartsFromTheGivenModel) {
  std::string data = write_text("train_finetune.txt");
  std::string src = ::testing::TempDir() + "/ft_src", dst = ::testing::TempDir() + "/ft_dst";
  fs::remove_all(src);
  fs::remove_all(dst);
  train::TrainConfig base = tiny_config(src, data);
  base.steps = 30;
  train::run_training(base);
  train::TrainConfig ft = tiny_config(dst, data);
  ft.init_from = src + "/model";
  ft.model.d_model = 8;  // ignored: the configuration comes from the model directory
  ft.steps = 1;
  ft.lr = ft.min_lr = 0;
  ft.warmup = 0;
  train::run_training(ft);
  auto a = io::SafeTensors::open(src + "/model/model.safetensors");
  auto b = io::SafeTensors::open(dst + "/model/model.safetensors");
  ASSERT_EQ(a.names(), b.names());
  for (const auto& n : a.names()) EXPECT_EQ(a.get(n).to_vector_f32(), b.get(n).to_vector_f32()) << n;
  EXPECT_EQ(slurp(src + "/model/config.json"), slurp(dst + "/model/config.json"));
  EXPECT_EQ(slurp(src + "/model/tokenizer.json"), slurp(dst + "/model/tokenizer.json"));
  // A vocabulary that does not fit is a clear error.
  train::TrainConfig bad = tiny_config(dst, "");
  bad.data.clear();
  bad.task = "induction";
  bad.init_from = src + "/model";
  ssm::testing::expect_error([&] { train::run_training(bad); }, "its vocabulary has 256 tokens, the task needs 16");
}

// Tokens/s of a synthetic task counts the task's sequences (induction: task_len tokens; selective
// copying: region + markers), not the unused text --seq-len.
TEST(Train, TaskThroughputCountsTheTaskSequence) {
  for (const char* task : {"induction", "selective_copying"}) {
    std::string out = ::testing::TempDir() + "/task_tok_" + task;
    fs::remove_all(out);
    train::TrainConfig t = tiny_config(out, "");
    t.data.clear();
    t.task = task;
    t.task_len = 12;
    t.task_memorize = 5;
    t.steps = 2;
    const double want = double(t.batch) * (t.task == "induction" ? 12 : 17);
    train::run_training(t);
    std::istringstream in(slurp(out + "/train.jsonl"));
    int n = 0;
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (!j.contains("loss") || !j.contains("tok_s")) continue;
      EXPECT_NEAR(j["tok_s"].get<double>() * j["ms"].get<double>() / 1000, want, 1e-6 * want) << task;
      ++n;
    }
    EXPECT_EQ(n, 2) << task;
  }
}

TEST(Train, SamplesAreTheGeneratorsOutputFromTheCurrentWeights) {
  std::string data = write_text("train_sample.txt");
  std::string out = ::testing::TempDir() + "/run_sample";
  fs::remove_all(out);
  train::TrainConfig t = tiny_config(out, data);
  t.sample_every = 3;
  t.sample_len = 24;
  t.sample_prompt = "the ";
  t.sample_temp = 0.7;
  train::run_training(t);
  std::vector<nlohmann::json> samples;
  nlohmann::json summary;
  std::istringstream log(slurp(out + "/train.jsonl"));
  for (std::string line; std::getline(log, line);) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("sample")) samples.push_back(j);
    if (j.contains("summary")) summary = j;
  }
  ASSERT_EQ(samples.size(), 2u);  // after steps 3 and 6
  EXPECT_EQ(samples[0]["step"], 2);
  EXPECT_EQ(samples[1]["step"], 5);
  // The last sample was drawn from the final weights: the exported model, the same prompt, seed and
  // temperature through the generator give the same text.
  auto m = Model::load(out + "/model");
  Tokenizer tok = Tokenizer::byte_level();
  GenerateOptions go;
  go.max_new_tokens = 24;
  go.sampling.temperature = 0.7;
  go.sampling.seed = t.seed;
  go.ignore_eos = true;
  GenerateResult r = Generator(*m, &tok).generate({tok.encode("the ")}, go);
  ASSERT_EQ(r.tokens[0].size(), 24u);
  EXPECT_EQ(samples[1]["sample"].get<std::string>(), "the " + r.text[0]);
  // The summary: 6 steps, tokens/s consistent with the median step time, and the peak RSS.
  ASSERT_TRUE(summary.is_object());
  EXPECT_EQ(summary["steps"], 6);
  EXPECT_NEAR(summary["median_tok_s"].get<double>(), 2 * 16 / (summary["median_ms"].get<double>() / 1000), 1e-6);
  EXPECT_GT(summary["peak_rss_mib"].get<double>(), 1.0);
  EXPECT_LE(summary["peak_rss_mib"].get<double>() * (1 << 20), double(peak_rss_bytes()));
}

TEST(Train, PeakRssMatchesProcStatus) {
  // The kernel's high-water mark of this process, in kB, from /proc/self/status (VmHWM).
  auto vm_hwm = []() -> int64_t {
    std::istringstream st(slurp("/proc/self/status"));
    for (std::string line; std::getline(st, line);)
      if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
    return int64_t(-1);
  };
  std::vector<char> big(size_t(64) << 20, 1);  // touch 64 MiB: the peak rises by about that much
  volatile char sink = big[12345];
  (void)sink;
  int64_t ours = peak_rss_bytes(), proc = vm_hwm();
  ASSERT_GT(proc, 0) << "no VmHWM in /proc/self/status";
  EXPECT_NEAR(double(ours), double(proc), 0.01 * double(proc));
  EXPECT_GE(ours, int64_t(64) << 20);
}

TEST(Optim, AdamWMatchesAHandComputedStep) {
  // One parameter, decayed (a matrix name), lr 0.1, wd 0.1, beta (0.9, 0.95), eps 1e-8, grad 2:
  // m = 0.2, v = 0.2 → m̂ = 2, v̂ = 4; p ← p − lr·wd·p = 1 − 0.01 = 0.99; p ← 0.99 − 0.1·2/(2 + 1e-8).
  Tensor p = Tensor::full({1}, 1.0);
  p.set_requires_grad(true);
  p.set_grad(Tensor::full({1}, 2.0));
  train::AdamW opt({{"backbone.layers.0.mixer.in_proj.weight", p}}, train::AdamWConfig{});
  opt.step(0.1);
  EXPECT_NEAR(p.item(), 0.99 - 0.1 * 2.0 / (2.0 + 1e-8), 1e-6);
  // No weight decay on A_log / D / norms / biases.
  Tensor q = Tensor::full({1}, 1.0);
  q.set_requires_grad(true);
  q.set_grad(Tensor::full({1}, 2.0));
  train::AdamW opt2({{"backbone.layers.0.mixer.A_log", q}}, train::AdamWConfig{});
  opt2.step(0.1);
  EXPECT_NEAR(q.item(), 1.0 - 0.1, 1e-6);
  EXPECT_TRUE(train::no_weight_decay("backbone.norm_f.weight"));
  EXPECT_FALSE(train::no_weight_decay("backbone.embeddings.weight"));
}

TEST(Optim, ClipAndSchedule) {
  Tensor p = Tensor::full({4}, 0.0);
  p.set_requires_grad(true);
  p.set_grad(Tensor::full({4}, 3.0));  // norm 6
  double n = train::clip_grad_norm({{"w", p}}, 3.0);
  EXPECT_NEAR(n, 6.0, 1e-9);
  EXPECT_NEAR(p.grad().to_vector_f32()[0], 1.5, 1e-5);
  EXPECT_NEAR(train::cosine_lr(0, 10, 100, 1.0, 0.1), 0.1, 1e-12);    // warmup starts at max/warmup
  EXPECT_NEAR(train::cosine_lr(9, 10, 100, 1.0, 0.1), 1.0, 1e-12);    // warmup ends at max
  EXPECT_NEAR(train::cosine_lr(55, 10, 100, 1.0, 0.1), 0.55, 1e-12);  // halfway: the mean
  EXPECT_NEAR(train::cosine_lr(100, 10, 100, 1.0, 0.1), 0.1, 1e-12);  // end: min
}
}  // namespace
