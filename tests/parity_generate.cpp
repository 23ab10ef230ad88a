// Greedy generation against the reference libraries' own generate(): Hugging Face transformers
// (float64, CPU) and mamba_ssm (float32, CUDA kernels), from ../shared/fixtures/*/golden.safetensors:
// gen.prompt [1, 9], gen.sequences [1, 25] (prompt + 16 greedy tokens), gen.scores [1, 16, V].
// Also: a batch of prompts of different lengths generates exactly what each prompt does alone.
#include <algorithm>

#include "ssm/generate.h"
#include "ssm/safetensors.h"
#include "testing.h"

namespace ssm {
namespace {

using testing::AllClose;
using testing::shared_path;

const char* kFixtures[] = {"hf-mamba1-tiny", "hf-mamba2-tiny", "hf-falcon-mamba-tiny", "ssm-mamba1-tiny",
                           "ssm-mamba2-tiny"};

std::vector<int32_t> row_ids(const Tensor& t, int64_t row, int64_t begin, int64_t end) {
  std::vector<int64_t> v = t.select(0, row).slice(0, begin, end).contiguous().to_vector_i64();
  return std::vector<int32_t>(v.begin(), v.end());
}

Tensor scores_tensor(const std::vector<std::vector<float>>& s) {  // [steps, V]
  std::vector<float> flat;
  for (const auto& r : s) flat.insert(flat.end(), r.begin(), r.end());
  return Tensor::from_vector(flat, {int64_t(s.size()), int64_t(s.empty() ? 0 : s[0].size())});
}

GenerateOptions greedy(int64_t n) {
  GenerateOptions o;
  o.max_new_tokens = n;
  o.sampling.temperature = 0;
  o.ignore_eos = true;  // the references generated all 16 tokens (no EOS stop)
  o.keep_scores = true;
  return o;
}

class GenerateParity : public ::testing::TestWithParam<const char*> {};

TEST_P(GenerateParity, GreedyMatchesReference) {
  const std::string dir = std::string("fixtures/") + GetParam();
  SSM_REQUIRE_SHARED(dir + "/golden.safetensors");
  auto model = Model::load(shared_path(dir));
  auto golden = io::SafeTensors::open(shared_path(dir + "/golden.safetensors"));
  Tensor prompt = golden.get("gen.prompt"), seq = golden.get("gen.sequences"), scores = golden.get("gen.scores");
  const int64_t P = prompt.size(1), N = seq.size(1) - P;
  ASSERT_EQ(N, scores.size(1));

  Generator gen(*model, nullptr);
  GenerateResult r = gen.generate({row_ids(prompt, 0, 0, P)}, greedy(N));
  EXPECT_EQ(r.tokens[0], row_ids(seq, 0, P, P + N)) << GetParam();
  EXPECT_EQ(r.finish[0], "length");
  // Tolerance 1e-4 of max |ref|: our f32 prefill + recurrent decode against an f64 (HF) or CUDA f32
  // (mamba_ssm) reference; float32 rounding over 3 layers and 25 steps stays well inside it.
  Tensor want = scores.select(0, 0).slice(1, 0, model->config().vocab_size);  // [N, V]
  EXPECT_TRUE(AllClose(scores_tensor(r.scores[0]), want.contiguous(), 1e-4)) << GetParam();
  EXPECT_EQ(r.timings.prompt_tokens, P);
  EXPECT_EQ(r.timings.eval_runs, N - 1);  // the first token comes from the prefill's logits
}

TEST_P(GenerateParity, BatchEqualsEachAlone) {
  const std::string dir = std::string("fixtures/") + GetParam();
  SSM_REQUIRE_SHARED(dir + "/golden.safetensors");
  auto model = Model::load(shared_path(dir));
  auto golden = io::SafeTensors::open(shared_path(dir + "/golden.safetensors"));
  Tensor ids = golden.get("input_ids");  // [2, 37]
  const std::vector<std::vector<int32_t>> prompts = {row_ids(ids, 0, 0, 9), row_ids(ids, 1, 3, 16),
                                                     row_ids(ids, 1, 20, 21)};  // lengths 9, 13, 1
  Generator gen(*model, nullptr);
  GenerateOptions o = greedy(12);
  std::vector<GenerateResult> alone;
  for (const auto& p : prompts) alone.push_back(gen.generate({p}, o));
  // Make sequence 0 stop early on an end id it generates, so the batch also drops a row mid-way.
  o.ignore_eos = false;
  o.eos_ids = {alone[0].tokens[0][3]};
  for (size_t i = 0; i < prompts.size(); ++i) alone[i] = gen.generate({prompts[i]}, o);
  GenerateResult batch = gen.generate(prompts, o);
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(batch.tokens[i], alone[i].tokens[0]) << GetParam() << " sequence " << i;
    EXPECT_EQ(batch.finish[i], alone[i].finish[0]) << GetParam() << " sequence " << i;
    // Rows of a batched matmul may be summed in another order than a single row: 1e-5 of max |ref|.
    EXPECT_TRUE(AllClose(scores_tensor(batch.scores[i]), scores_tensor(alone[i].scores[0]), 1e-5))
        << GetParam() << " sequence " << i;
  }
  EXPECT_EQ(batch.finish[0], "eos");
  EXPECT_LE(batch.tokens[0].size(), 4u);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GenerateParity, ::testing::ValuesIn(kFixtures), [](const auto& info) {
  std::string n = info.param;
  std::replace(n.begin(), n.end(), '-', '_');
  return n;
});

TEST(Generate, StreamsEveryTokenInOrder) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba1-tiny/golden.safetensors");
  auto model = Model::load(shared_path("fixtures/hf-mamba1-tiny"));
  Generator gen(*model, nullptr);
  std::vector<std::pair<int64_t, int32_t>> seen;
  int lasts = 0;
  GenerateOptions o = greedy(5);
  GenerateResult r = gen.generate({{5, 6, 7}, {8}}, o, [&](const TokenEvent& e) {
    seen.push_back({e.seq, e.token});
    lasts += e.last;
  });
  ASSERT_EQ(seen.size(), 10u);
  EXPECT_EQ(lasts, 2);
  std::vector<int32_t> s0, s1;
  for (auto [s, t] : seen) (s == 0 ? s0 : s1).push_back(t);
  EXPECT_EQ(s0, r.tokens[0]);
  EXPECT_EQ(s1, r.tokens[1]);
}

TEST(Generate, RejectsBadInput) {
  SSM_REQUIRE_SHARED("fixtures/hf-mamba1-tiny/config.json");
  auto model = Model::load(shared_path("fixtures/hf-mamba1-tiny"));
  Generator gen(*model, nullptr);
  GenerateOptions o = greedy(3);
  EXPECT_THROW(gen.generate({}, o), Error);
  EXPECT_THROW(gen.generate({{}}, o), Error);
  EXPECT_THROW(gen.generate({{1, 320}}, o), Error);  // id past the vocabulary
  EXPECT_THROW(gen.generate({{1, -1}}, o), Error);
  o.stop = {"x"};
  EXPECT_THROW(gen.generate({{1}}, o), Error);  // stop strings need a tokenizer
  o.stop.clear();
  o.max_new_tokens = -2;
  EXPECT_THROW(gen.generate({{1}}, o), Error);
  o.max_new_tokens = 0;
  EXPECT_TRUE(gen.generate({{1}}, o).tokens[0].empty());
  // A tokenizer larger than the model's vocabulary does not belong to it.
  Tokenizer bytes = Tokenizer::byte_level();  // 256 ids < 320: fits
  EXPECT_NO_THROW(Generator(*model, &bytes));
  EXPECT_EQ(Generator(*model, &bytes).vocab_real(), 256);
}

}  // namespace
}  // namespace ssm
