// Model::step, the fused one-token decode: equal to forward() position by position for every
// architecture and configuration branch (batch, weight dtypes, LayerNorm blocks, groups, D per
// channel, dt limits, biases), and no heap allocation after its first call (counted by replacing
// the global operator new in this test program).
#include <atomic>
#include <cstdlib>
#include <new>

#include "ssm/autograd.h"
#include "ssm/model.h"
#include "testing.h"

// GCC cannot see that the replaced operator new and delete below are a malloc/free pair.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"

namespace {
std::atomic<long> g_allocs{0};
}
void* operator new(std::size_t n) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

using namespace ssm;
using ssm::testing::AllClose;

namespace {

struct Case {
  const char* name;
  const char* json;
  DType dtype;
};

// mamba_ssm and Hugging Face configs; vocab 100 pads to 104 (mamba_ssm) so padded rows are covered.
const Case kCases[] = {
    {"mamba1", R"({"d_model": 48, "n_layer": 2, "vocab_size": 100})", DType::f32},
    {"mamba1_bf16", R"({"d_model": 48, "n_layer": 2, "vocab_size": 100})", DType::bf16},
    {"mamba1_f16", R"({"d_model": 48, "n_layer": 2, "vocab_size": 100})", DType::f16},
    {"mamba1_layernorm_bias",
     R"({"d_model": 40, "n_layer": 2, "vocab_size": 100, "rms_norm": false, "ssm_cfg": {"d_state": 12, "bias": true,
         "d_conv": 3}})",
     DType::f32},
    {"falcon_mamba", R"({"model_type": "falcon_mamba", "hidden_size": 48, "num_hidden_layers": 2,
         "vocab_size": 100, "state_size": 8, "mixer_rms_eps": 1e-6})",
     DType::f32},
    {"mamba2_groups_limits",
     R"({"d_model": 64, "n_layer": 2, "vocab_size": 100, "ssm_cfg": {"layer": "Mamba2", "d_state": 16,
         "headdim": 16, "ngroups": 2, "chunk_size": 8, "dt_limit": [0.01, 0.5]}})",
     DType::f32},
    {"mamba2_bf16_dhdim_gate_first",
     R"({"d_model": 64, "n_layer": 2, "vocab_size": 100, "ssm_cfg": {"layer": "Mamba2", "d_state": 20,
         "headdim": 16, "D_has_hdim": true, "norm_before_gate": true, "chunk_size": 8}})",
     DType::bf16},
    {"mamba2_no_norm", R"({"d_model": 32, "n_layer": 2, "vocab_size": 100, "ssm_cfg": {"layer": "Mamba2",
         "d_state": 8, "headdim": 8, "rmsnorm": false, "chunk_size": 4}})",
     DType::f32},
    {"mamba3", R"({"d_model": 32, "n_layer": 2, "vocab_size": 64, "ssm_cfg": {"layer": "Mamba3", "d_state": 16,
         "headdim": 8, "chunk_size": 4}})",
     DType::f32},
};

class Step : public ::testing::TestWithParam<Case> {};

// Tolerance 1e-5 of the largest logit: a one-token forward and the step run the same kernels
// (matvec for every product), so only the order of a few f32 sums differs.
TEST_P(Step, EqualsForwardAtEveryPosition) {
  const Case& c = GetParam();
  auto m = Model::create(ModelConfig::from_json_text(c.json, c.name), 11, c.dtype);
  autograd::NoGradGuard ng;
  const int64_t B = 3, L = 9, V = m->config().vocab_size;
  std::vector<int64_t> ids(size_t(B * L));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int64_t((i * 37 + 5) % size_t(m->config().vocab_size_real));
  Tensor idt = Tensor::from_vector(ids, {B, L});
  InferenceState ref = m->new_state(B), st = m->new_state(B);
  std::vector<int64_t> tok(static_cast<size_t>(B));
  for (int64_t t = 0; t < L; ++t) {
    for (int64_t b = 0; b < B; ++b) tok[size_t(b)] = ids[size_t(b * L + t)];
    Tensor want = m->forward(idt.slice(1, t, t + 1).contiguous(), &ref, 1).view({B, V});
    const Tensor& got = m->step(tok, st);
    ASSERT_EQ(got.shape(), (Shape{B, V}));
    ASSERT_TRUE(AllClose(got, want, 1e-5)) << "position " << t;
  }
  EXPECT_EQ(st.bytes(), size_t(B) * m->state_bytes_per_sequence());
}

// After a prefill through forward() the step continues from its state.
TEST_P(Step, ContinuesAfterPrefill) {
  const Case& c = GetParam();
  auto m = Model::create(ModelConfig::from_json_text(c.json, c.name), 12, c.dtype);
  autograd::NoGradGuard ng;
  const int64_t L = 12, V = m->config().vocab_size;
  std::vector<int64_t> ids;
  for (int64_t i = 0; i < L; ++i) ids.push_back((i * 13 + 1) % m->config().vocab_size_real);
  Tensor full = m->forward(Tensor::from_vector(ids, {1, L}));  // [1, L, V]
  InferenceState st = m->new_state(1);
  m->forward(Tensor::from_vector(std::vector<int64_t>(ids.begin(), ids.begin() + 7), {1, 7}), &st, 1);
  for (int64_t t = 7; t < L; ++t) {
    const Tensor& got = m->step(std::span<const int64_t>(&ids[size_t(t)], 1), st);
    ASSERT_TRUE(AllClose(got.view({1, 1, V}), full.slice(1, t, t + 1).contiguous(), 1e-4)) << "position " << t;
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, Step, ::testing::ValuesIn(kCases), [](const auto& info) { return info.param.name; });

// The brief and the inference issue: no heap allocation per decoded token (Mamba-1 and Mamba-2;
// Mamba-3 decodes through its parallel mixer and is not held to it).
TEST(Step, AllocatesNothingAfterTheFirstCall) {
  for (const Case& c : kCases) {
    if (std::string(c.name) == "mamba3") continue;
    SCOPED_TRACE(c.name);
    auto m = Model::create(ModelConfig::from_json_text(c.json, c.name), 13, c.dtype);
    InferenceState st = m->new_state(4);
    std::vector<int64_t> tok{1, 2, 3, 4};
    m->step(tok, st);
    m->step(tok, st);  // the thread pool is up, every buffer sized
    const long before = g_allocs.load();
    for (int i = 0; i < 5; ++i) {
      tok[size_t(i % 4)] = 7 + i;
      m->step(tok, st);
    }
    EXPECT_EQ(g_allocs.load() - before, 0) << "heap allocations in 5 decode steps";
  }
}

TEST(Step, BadInput) {
  auto m = Model::create(ModelConfig::from_json_text(kCases[0].json, "cfg"), 1);
  InferenceState st = m->new_state(2);
  std::vector<int64_t> one{1}, bad{1, 104}, neg{-1, 0};
  ssm::testing::expect_error([&] { m->step(one, st); }, "holds 2 sequences but 1 token ids");
  ssm::testing::expect_error([&] { m->step(bad, st); }, "token id 104 is out of range for a vocabulary of 104");
  ssm::testing::expect_error([&] { m->step(neg, st); }, "token id -1 is out of range");
  InferenceState empty;
  ssm::testing::expect_error([&] { m->step(one, empty); }, "not made by new_state");
}

}  // namespace
