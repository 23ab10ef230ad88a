// The non-selective (LTI) Mamba-1 ablation: its layer against an independent computation (the SSM as
// an explicit convolution kernel, not the scan), parameter gradients against central finite
// differences, chunked recurrent decoding against one pass, and the config.json / checkpoint round trip.
#include <cmath>
#include <filesystem>
#include <fstream>

#include "ssm/model.h"
#include "ssm/ops.h"
#include "ssm/safetensors.h"
#include "ssm/train.h"
#include "testing.h"

using namespace ssm;
namespace fs = std::filesystem;

namespace {
ModelConfig lti_config(int64_t n_layer) {
  ModelConfig c;
  c.arch = Arch::mamba1;
  c.selective = false;
  c.d_model = 8;
  c.n_layer = n_layer;
  c.d_state = 4;
  c.expand = 2;
  c.d_inner = 16;
  c.dt_rank = 1;
  c.vocab_size = c.vocab_size_real = 11;
  return c;
}

// Model with every LTI parameter redrawn (B starts at ones, which would hide a B/C mix-up).
std::unique_ptr<Model> make_model(int64_t n_layer) {
  auto m = Model::create(lti_config(n_layer), 7);
  uint64_t s = 100;
  for (auto& [n, p] : m->named_parameters()) {
    bool lti = n.ends_with("mixer.B") || n.ends_with("mixer.C") || n.ends_with("mixer.dt_bias") ||
               n.ends_with("A_log") || n.ends_with(".D") || n.ends_with("conv1d.bias");
    if (!lti) continue;
    Tensor r = n.ends_with("dt_bias") ? Tensor::rand(p.shape(), ++s, -3, -1) : Tensor::rand(p.shape(), ++s, 0.2, 1.5);
    p.copy_(r);
  }
  return m;
}

Tensor param(const Model& m, const std::string& suffix) {
  for (auto& [n, p] : m.named_parameters())
    if (n.ends_with(suffix)) return p;
  ADD_FAILURE() << "no parameter " << suffix;
  return Tensor();
}

Tensor ids_of(int64_t B, int64_t L, uint64_t seed) {
  std::vector<int64_t> v(size_t(B * L));
  for (size_t i = 0; i < v.size(); ++i) v[i] = int64_t((i * 7 + seed * 3 + i / 5) % 11);
  return Tensor::from_vector(v, {B, L});
}
}  // namespace

TEST(LTI, ConfigRoundTripAndErrors) {
  ModelConfig c = lti_config(2);
  std::string j = c.to_hf_json();
  EXPECT_NE(j.find("\"selective\": false"), std::string::npos) << j;
  ModelConfig back = ModelConfig::from_json_text(j, "lti.json");
  EXPECT_FALSE(back.selective);
  EXPECT_NE(back.summary().find("LTI"), std::string::npos);
  ModelConfig sel = lti_config(2);
  sel.selective = true;
  EXPECT_EQ(sel.to_hf_json().find("selective"), std::string::npos);  // selective models keep the HF form
  EXPECT_TRUE(ModelConfig::from_json_text(sel.to_hf_json(), "sel.json").selective);
  std::string falcon = j;
  falcon.replace(falcon.find("\"mamba\""), 7, "\"falcon_mamba\"");
  ssm::testing::expect_error([&] { ModelConfig::from_json_text(falcon, "f.json"); }, "only for Mamba-1");
  // Parameters: B, C, dt_bias replace x_proj and dt_proj.
  auto m = Model::create(c, 1);
  for (auto& [n, p] : m->named_parameters()) {
    EXPECT_EQ(n.find("x_proj"), std::string::npos) << n;
    EXPECT_EQ(n.find("dt_proj"), std::string::npos) << n;
  }
  EXPECT_EQ(param(*m, "layers.1.mixer.B").shape(), (Shape{16, 4}));
  EXPECT_EQ(param(*m, "layers.1.mixer.C").shape(), (Shape{16, 4}));
  EXPECT_EQ(param(*m, "layers.1.mixer.dt_bias").shape(), (Shape{16}));
  EXPECT_TRUE(train::no_weight_decay("backbone.layers.0.mixer.B"));
  EXPECT_FALSE(train::no_weight_decay("backbone.layers.0.mixer.C"));
}

// The layer's output from the explicit kernel y_t = Σ_s Σ_n C B Δ exp((t-s) Δ A) x_s + D x_t, gated.
TEST(LTI, LayerMatchesConvolutionKernel) {
  auto m = make_model(1);
  const ModelConfig& c = m->config();
  const int64_t B = 2, L = 9, Dm = c.d_model, Di = c.d_inner, N = c.d_state, W = c.d_conv;
  Tensor ids = ids_of(B, L, 1);
  std::vector<Tensor> hidden;
  m->forward(ids, nullptr, 0, &hidden);
  auto got = hidden[0].to_vector_f64();  // residual stream after layer 0
  auto emb = param(*m, "embeddings.weight").to_vector_f64(), nw = param(*m, "layers.0.norm.weight").to_vector_f64();
  auto inw = param(*m, "in_proj.weight").to_vector_f64(), cw = param(*m, "conv1d.weight").to_vector_f64();
  auto cb = param(*m, "conv1d.bias").to_vector_f64(), Bp = param(*m, "mixer.B").to_vector_f64();
  auto Cp = param(*m, "mixer.C").to_vector_f64(), dtb = param(*m, "mixer.dt_bias").to_vector_f64();
  auto alog = param(*m, "A_log").to_vector_f64(), Dp = param(*m, ".D").to_vector_f64();
  auto ow = param(*m, "out_proj.weight").to_vector_f64();
  auto id = ids.to_vector_i64();
  auto silu = [](double v) { return v / (1 + std::exp(-v)); };
  double worst = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> x(size_t(L * Di)), z(size_t(L * Di)), xc(size_t(L * Di));
    for (int64_t t = 0; t < L; ++t) {
      const double* e = &emb[size_t(id[size_t(b * L + t)] * Dm)];
      double ms = 0;
      for (int64_t k = 0; k < Dm; ++k) ms += e[k] * e[k];
      double inv = 1 / std::sqrt(ms / double(Dm) + c.norm_eps);
      for (int64_t o = 0; o < 2 * Di; ++o) {
        double s = 0;
        for (int64_t k = 0; k < Dm; ++k) s += inw[size_t(o * Dm + k)] * e[k] * inv * nw[size_t(k)];
        (o < Di ? x[size_t(t * Di + o)] : z[size_t(t * Di + o - Di)]) = s;
      }
    }
    for (int64_t t = 0; t < L; ++t)
      for (int64_t d = 0; d < Di; ++d) {
        double s = cb[size_t(d)];
        for (int64_t k = 0; k < W; ++k)
          if (t - (W - 1) + k >= 0) s += cw[size_t(d * W + k)] * x[size_t((t - (W - 1) + k) * Di + d)];
        xc[size_t(t * Di + d)] = silu(s);
      }
    for (int64_t t = 0; t < L; ++t) {
      std::vector<double> y(static_cast<size_t>(Di));
      for (int64_t d = 0; d < Di; ++d) {
        double dt = std::log1p(std::exp(dtb[size_t(d)])), s = Dp[size_t(d)] * xc[size_t(t * Di + d)];
        for (int64_t u = 0; u <= t; ++u)
          for (int64_t n = 0; n < N; ++n)
            s += Cp[size_t(d * N + n)] * Bp[size_t(d * N + n)] * dt *
                 std::exp(double(t - u) * dt * -std::exp(alog[size_t(d * N + n)])) * xc[size_t(u * Di + d)];
        y[size_t(d)] = s * silu(z[size_t(t * Di + d)]);
      }
      const double* e = &emb[size_t(id[size_t(b * L + t)] * Dm)];
      for (int64_t o = 0; o < Dm; ++o) {
        double s = e[o];
        for (int64_t d = 0; d < Di; ++d) s += ow[size_t(o * Di + d)] * y[size_t(d)];
        worst = std::max(worst, std::fabs(s - got[size_t((b * L + t) * Dm + o)]));
      }
    }
  }
  EXPECT_LT(worst, 2e-5);
}

// Autograd gradients of the loss in B, C, dt_bias, A_log against central differences (f32 model,
// step 1e-2: truncation ~1e-5, rounding ~1e-5 of the loss's magnitude).
TEST(LTI, ParameterGradientsMatchFiniteDifferences) {
  auto m = make_model(2);
  Tensor in = ids_of(2, 12, 3);
  std::vector<int64_t> tg(24, -100);
  for (size_t i = 6; i < 24; i += 3) tg[i] = int64_t(i % 11);
  Tensor targets = Tensor::from_vector(tg, {2, 12});
  for (auto& [n, p] : m->named_parameters()) p.set_requires_grad(true);
  train::masked_lm_loss(*m, in, targets).backward();
  for (const char* name : {"layers.0.mixer.B", "layers.1.mixer.C", "layers.0.mixer.dt_bias", "layers.1.mixer.A_log"}) {
    Tensor p = param(*m, name);
    auto g = p.grad().to_vector_f64();
    double gmax = 0;
    for (double v : g) gmax = std::max(gmax, std::fabs(v));
    ASSERT_GT(gmax, 1e-4) << name;
    float* w = p.data<float>();
    for (int64_t i = 0; i < p.numel(); i += 5) {
      autograd::NoGradGuard ng;
      const float w0 = w[i], h = 1e-2f;
      w[i] = w0 + h;
      double up = train::masked_lm_loss(*m, in, targets).item();
      w[i] = w0 - h;
      double down = train::masked_lm_loss(*m, in, targets).item();
      w[i] = w0;
      double fd = (up - down) / (2 * double(h));
      EXPECT_NEAR(g[size_t(i)], fd, 0.01 * gmax + 2e-5) << name << "[" << i << "]";
    }
  }
}

TEST(LTI, RecurrentChunksMatchOnePass) {
  auto m = make_model(2);
  Tensor ids = ids_of(2, 10, 5);
  Tensor full = m->forward(ids);
  InferenceState st = m->new_state(2);
  Tensor a = m->forward(ids.slice(1, 0, 6).contiguous(), &st);
  Tensor b = m->forward(ids.slice(1, 6, 10).contiguous(), &st);
  EXPECT_TRUE(ssm::testing::AllClose(concat({a, b}, 1), full, 1e-5, 1e-6));
}

TEST(LTI, SavedModelLoadsBack) {
  auto m = make_model(2);
  std::string dir = ::testing::TempDir() + "/lti_model";
  fs::create_directories(dir);
  io::save_safetensors(dir + "/model.safetensors", m->named_parameters());
  std::ofstream(dir + "/config.json") << m->config().to_hf_json();
  auto back = Model::load(dir);
  EXPECT_FALSE(back->config().selective);
  Tensor ids = ids_of(1, 7, 2);
  EXPECT_TRUE(ssm::testing::AllClose(back->forward(ids), m->forward(ids), 0));
  // A selective checkpoint under an LTI config names the missing tensor.
  ModelConfig sel = lti_config(2);
  sel.selective = true;
  auto s = Model::create(sel, 3);
  io::save_safetensors(dir + "/model.safetensors", s->named_parameters());
  ssm::testing::expect_error([&] { Model::load(dir); }, "mixer.B");
}
