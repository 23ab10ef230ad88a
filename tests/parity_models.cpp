// Model parity against the reference implementations (Hugging Face transformers in f64 and
// mamba_ssm in f32): full-sequence logits, hidden states, and decoding token by token == prefill.
#include <filesystem>
#include <fstream>

#include "ssm/autograd.h"
#include "ssm/model.h"
#include "ssm/ops.h"
#include "ssm/safetensors.h"
#include "pytorch_bin_writer.h"
#include "testing.h"

using namespace ssm;
using ssm::testing::AllClose;

namespace {
// Tolerance: 1e-4 of the largest reference magnitude. We compute in f32; the HF references are
// f64 and mamba_ssm's are f32 CUDA kernels, so the error is f32 rounding accumulated over 3 layers
// (observed ~1e-6 relative).
constexpr double kTol = 1e-4;

class ModelParity : public ::testing::TestWithParam<const char*> {};

TEST_P(ModelParity, LogitsAndHiddenStates) {
  std::string rel = std::string("fixtures/") + GetParam();
  SSM_REQUIRE_SHARED(rel + "/golden.safetensors");
  auto model = Model::load(ssm::testing::shared_path(rel));
  auto golden = io::SafeTensors::open(ssm::testing::shared_path(rel + "/golden.safetensors"));
  autograd::NoGradGuard ng;
  std::vector<Tensor> hidden;
  Tensor logits = model->forward(golden.get("input_ids"), nullptr, 0, &hidden);
  EXPECT_TRUE(AllClose(logits, golden.get("logits"), kTol)) << "logits";
  for (size_t i = 0; golden.has("hidden_states." + std::to_string(i)); ++i) {
    ASSERT_LT(i, hidden.size());
    EXPECT_TRUE(AllClose(hidden[i], golden.get("hidden_states." + std::to_string(i)), kTol)) << "hidden " << i;
  }
}

// A fixture's model, its golden input ids [2, 37] and the full-sequence logits [2, 37, V].
struct Loaded {
  std::unique_ptr<Model> model;
  Tensor ids, full;
};
Loaded load_with_logits(const std::string& rel) {
  Loaded r;
  r.model = Model::load(ssm::testing::shared_path(rel));
  r.ids = io::SafeTensors::open(ssm::testing::shared_path(rel + "/golden.safetensors")).get("input_ids");
  autograd::NoGradGuard ng;
  r.full = r.model->forward(r.ids);
  return r;
}

TEST_P(ModelParity, DecodeEqualsPrefill) {
  std::string rel = std::string("fixtures/") + GetParam();
  SSM_REQUIRE_SHARED(rel + "/golden.safetensors");
  auto [model, ids, full] = load_with_logits(rel);
  autograd::NoGradGuard ng;
  const int64_t L = ids.size(1), split = 5;
  InferenceState st = model->new_state(ids.size(0));
  // Prefill the first `split` tokens, then one token at a time.
  Tensor pre = model->forward(ids.slice(1, 0, split).contiguous(), &st, 0);
  EXPECT_TRUE(AllClose(pre, full.slice(1, 0, split).contiguous(), kTol)) << "prefill";
  for (int64_t t = split; t < L; ++t) {
    Tensor step = model->forward(ids.slice(1, t, t + 1).contiguous(), &st, 1);  // [2, 1, V]
    ASSERT_TRUE(AllClose(step, full.slice(1, t, t + 1).contiguous(), kTol)) << "position " << t;
  }
}

// The fused decode step (Model::step) from the same prefill, and from an empty state.
TEST_P(ModelParity, FusedStepEqualsPrefill) {
  std::string rel = std::string("fixtures/") + GetParam();
  SSM_REQUIRE_SHARED(rel + "/golden.safetensors");
  auto [model, ids, full] = load_with_logits(rel);
  autograd::NoGradGuard ng;
  const int64_t B = ids.size(0), L = ids.size(1), V = full.size(2);
  const std::vector<int64_t> idv = ids.to_vector_i64();
  for (int64_t start : {int64_t(0), int64_t(5)}) {
    InferenceState st = model->new_state(B);
    if (start > 0) model->forward(ids.slice(1, 0, start).contiguous(), &st, 1);
    std::vector<int64_t> tok(static_cast<size_t>(B));
    for (int64_t t = start; t < L; ++t) {
      for (int64_t b = 0; b < B; ++b) tok[size_t(b)] = idv[size_t(b * L + t)];
      const Tensor& lg = model->step(tok, st);  // [B, V]
      ASSERT_TRUE(AllClose(lg.view({B, 1, V}), full.slice(1, t, t + 1).contiguous(), kTol))
          << "position " << t << " after a prefill of " << start;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelParity,
                         ::testing::Values("hf-mamba1-tiny", "hf-mamba2-tiny", "hf-falcon-mamba-tiny",
                                           "ssm-mamba1-tiny", "ssm-mamba2-tiny"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

// ---- bad input --------------------------------------------------------------------------------------
namespace fs = std::filesystem;

std::string temp_model_dir(const std::string& name) {
  fs::path d = fs::path(::testing::TempDir()) / ("ssm_model_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string load_error(const std::string& dir) {
  try {
    Model::load(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelLoad, BadInputsGiveClearErrors) {
  EXPECT_NE(load_error("/nonexistent/model").find("not a directory"), std::string::npos);
  std::string d = temp_model_dir("noconfig");
  EXPECT_NE(load_error(d).find("no config.json"), std::string::npos);
  write_file(d + "/config.json", "{\"model_type\": \"llama\", \"hidden_size\": 8}");
  EXPECT_NE(load_error(d).find("unsupported model_type 'llama'"), std::string::npos);
  write_file(d + "/config.json", "{\"model_type\": \"mamba\", ");
  EXPECT_NE(load_error(d).find("config.json"), std::string::npos);
  write_file(d + "/config.json",
             "{\"model_type\": \"mamba\", \"hidden_size\": 8, \"num_hidden_layers\": 1, \"vocab_size\": 16}");
  EXPECT_NE(load_error(d).find("no weights"), std::string::npos);
}

TEST(ModelLoad, ShapeMismatchNamesTensor) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba1-tiny/model.safetensors");
  std::string d = temp_model_dir("mismatch");
  fs::copy_file(ssm::testing::shared_path("fixtures/hf-mamba1-tiny/model.safetensors"), d + "/model.safetensors");
  std::ifstream in(ssm::testing::shared_path("fixtures/hf-mamba1-tiny/config.json"));
  std::string cfg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t p = cfg.find("\"state_size\": 16");
  ASSERT_NE(p, std::string::npos);
  cfg.replace(p, 16, "\"state_size\": 8");
  write_file(d + "/config.json", cfg);
  std::string err = load_error(d);
  EXPECT_NE(err.find("backbone.layers.0.mixer.x_proj.weight"), std::string::npos) << err;
  EXPECT_NE(err.find("expected"), std::string::npos) << err;
}

// An original mamba_ssm directory (config.json + pytorch_model.bin) loads and gives the same
// logits: the .bin is written by our own torch.save-compatible writer from the fixture's weights.
TEST(ModelLoad, PytorchBinCheckpoint) {
  SSM_REQUIRE_SHARED("fixtures/ssm-mamba2-tiny/golden.safetensors");
  std::string src = ssm::testing::shared_path("fixtures/ssm-mamba2-tiny");
  std::string d = temp_model_dir("pytorch_bin");
  fs::copy_file(src + "/config.json", d + "/config.json");
  auto weights = io::SafeTensors::open(src + "/model.safetensors");
  ssm::testing::TorchCheckpointWriter w;
  for (const auto& n : weights.names()) w.add(n, weights.get(n), true);
  w.save(d + "/pytorch_model.bin");
  auto model = Model::load(d);
  auto golden = io::SafeTensors::open(src + "/golden.safetensors");
  autograd::NoGradGuard ng;
  EXPECT_TRUE(AllClose(model->forward(golden.get("input_ids")), golden.get("logits"), kTol));
}

TEST(ModelCreate, RandomInitIsDeterministicAndFinite) {
  ModelConfig c;
  c.arch = Arch::mamba1;
  c.d_model = 32;
  c.n_layer = 2;
  c.vocab_size = c.vocab_size_real = 50;
  c.d_inner = 64;
  c.dt_rank = 2;
  auto a = Model::create(c, 7), b = Model::create(c, 7);
  autograd::NoGradGuard ng;
  Tensor ids = Tensor::from_vector(std::vector<int64_t>{1, 2, 3, 4}, {1, 4});
  Tensor la = a->forward(ids), lb = b->forward(ids);
  EXPECT_EQ(la.to_vector_f32(), lb.to_vector_f32());
  for (float v : la.to_vector_f32()) ASSERT_TRUE(std::isfinite(v));
  // S4D-real initialisation: A = -(n + 1).
  for (auto& [name, t] : a->named_parameters()) {
    if (name == "backbone.layers.0.mixer.A_log") {
      EXPECT_NEAR(t.to_vector_f32()[3], std::log(4.0f), 1e-6);
    }
  }
}
}  // namespace
