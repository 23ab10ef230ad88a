// Training loop: resuming from a checkpoint continues bit-identically (2k steps in one run equal
// k steps + checkpoint + resume + k steps), AdamW against a hand-computed step, the LR schedule,
// bad inputs.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "ssm/safetensors.h"
#include "ssm/train.h"
#include "ssm/trainer.h"
#include "testing.h"

using namespace ssm;
namespace fs = std::filesystem;

namespace {
train::TrainConfig tiny_config(const std::string& out, const std::string& data) {
  train::TrainConfig t;
  t.data = data;
  t.model.arch = Arch::mamba1;
  t.model.d_model = 16;
  t.model.n_layer = 2;
  t.model.d_state = 4;
  t.model.d_inner = 32;
  t.model.dt_rank = 1;
  t.model.vocab_size = 1;
  t.steps = 6;
  t.batch = 2;
  t.seq_len = 16;
  t.warmup = 2;
  t.eval_every = 3;
  t.eval_batches = 1;
  t.ckpt_every = 0;
  t.log_every = 0;
  t.out = out;
  return t;
}

std::string write_text(const std::string& name) {
  std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream o(path);
  for (int i = 0; i < 200; ++i) o << "the quick brown fox " << i << " jumps over the lazy dog.\n";
  return path;
}

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
  auto init = Model::create([&] {
    ModelConfig c = tiny_config(a, data).model;
    c.vocab_size = c.vocab_size_real = 256;
    return c;
  }(), 1234);
  bool moved = false;
  for (auto& [n, p] : init->named_parameters()) moved |= p.to_vector_f32() != wa.get(n).to_vector_f32();
  EXPECT_TRUE(moved);
}

TEST(Train, ResumeFromAnotherArchitectureFails) {
  std::string data = write_text("train_arch.txt");
  std::string out = ::testing::TempDir() + "/run_arch";
  fs::remove_all(out);
  train::TrainConfig t = tiny_config(out, data);
  t.stop_after = 1;
  train::run_training(t);
  train::TrainConfig other = tiny_config(out, data);
  other.model.d_model = 24;
  other.model.d_inner = 48;
  other.resume = true;
  try {
    train::run_training(other);
    FAIL() << "resume with another architecture must fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("another model configuration"), std::string::npos) << e.what();
  }
}

TEST(Train, TinyDatasetAndMissingFileAreClearErrors) {
  std::string tiny = ::testing::TempDir() + "/tiny.txt";
  std::ofstream(tiny) << "abc";
  std::string out = ::testing::TempDir() + "/run_tiny";
  EXPECT_THROW(train::run_training(tiny_config(out, tiny)), Error);
  EXPECT_THROW(train::run_training(tiny_config(out, "/nonexistent/data.txt")), Error);
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
  EXPECT_NEAR(train::cosine_lr(0, 10, 100, 1.0, 0.1), 0.1, 1e-12);     // warmup starts at max/warmup
  EXPECT_NEAR(train::cosine_lr(9, 10, 100, 1.0, 0.1), 1.0, 1e-12);     // warmup ends at max
  EXPECT_NEAR(train::cosine_lr(55, 10, 100, 1.0, 0.1), 0.55, 1e-12);   // halfway: the mean
  EXPECT_NEAR(train::cosine_lr(100, 10, 100, 1.0, 0.1), 0.1, 1e-12);   // end: min
}
}  // namespace
