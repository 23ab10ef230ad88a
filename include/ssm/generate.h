// ssm.cpp — text generation: prefill each prompt with the parallel scan, then decode all live
// sequences together one token per step through the recurrent state.
//
// Each sequence has its own Sampler (sequence i is seeded with seed + i) and its own stopping:
// an end-of-sequence id, a stop string, or max_new_tokens. A finished sequence leaves the batch
// (its rows are dropped from the state), so the others keep decoding at full speed.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "ssm/model.h"
#include "ssm/sampler.h"
#include "ssm/tokenizer.h"

namespace ssm {

struct GenerateOptions {
  int64_t max_new_tokens = 128;  // -1: until every sequence stops (EOS or a stop string)
  SamplerParams sampling;
  std::vector<int32_t> eos_ids;  // generation of one of these ends the sequence (the id is kept)
  bool ignore_eos = false;
  std::vector<std::string> stop;  // stop strings (need a tokenizer); the text is cut before them
  bool keep_scores = false;       // keep the raw logits of every step (GenerateResult::scores)
};

// Streaming output: called once per generated token, in order, for each sequence.
struct TokenEvent {
  int64_t seq = 0;    // index of the prompt
  int32_t token = 0;  // the id just generated
  std::string text;   // text safe to print now (complete UTF-8, not part of a stop string)
  bool last = false;  // the sequence has stopped (text then also flushes what was held back)
};
using TokenCallback = std::function<void(const TokenEvent&)>;

struct GenerateTimings {
  double prompt_ms = 0;  // prefill of all prompts
  int64_t prompt_tokens = 0;
  double eval_ms = 0;       // decode steps (the model's forward), excluding sampling
  int64_t eval_runs = 0;    // decode steps (one step advances every live sequence)
  int64_t eval_tokens = 0;  // tokens consumed by decode steps, summed over sequences
  double sample_ms = 0;
  int64_t sampled = 0;  // tokens sampled
  double total_ms = 0;
};

struct GenerateResult {
  std::vector<std::vector<int32_t>> tokens;  // [n_prompts][generated] (EOS kept when it ended the sequence)
  std::vector<std::string> text;             // decoded generated text (empty without a tokenizer), stop string cut
  std::vector<std::string> finish;           // "eos", "stop" or "length"
  std::vector<std::vector<std::vector<float>>> scores;  // keep_scores: [seq][step][V] raw logits
  GenerateTimings timings;
};

// Holds back bytes of generated text until they are complete UTF-8 and cannot be the start of a
// stop string; reports whether a stop string has appeared (the text is cut before it).
class TextStream {
 public:
  explicit TextStream(std::vector<std::string> stop = {}) : stop_(std::move(stop)) {}
  // Appends raw token bytes; returns the text that is safe to emit now.
  std::string push(const std::string& bytes);
  // Returns what is still held back (invalid UTF-8 replaced by U+FFFD), unless stopped.
  std::string flush();
  bool stopped() const { return stopped_; }
  const std::string& text() const { return emitted_; }  // everything emitted so far

 private:
  std::vector<std::string> stop_;
  std::string pending_, emitted_;
  bool stopped_ = false;
};

class Generator {
 public:
  // `tokenizer` may be null: no text then (ids only), and stop strings are refused.
  Generator(const Model& model, const Tokenizer* tokenizer);

  // The number of ids that may be sampled: the model's real vocabulary, capped by the tokenizer's.
  int64_t vocab_real() const { return vocab_real_; }

  // Generates a continuation of every prompt (each non-empty). Throws ssm::Error on bad input.
  GenerateResult generate(const std::vector<std::vector<int32_t>>& prompts, const GenerateOptions& opts,
                          const TokenCallback& on_token = {}) const;

 private:
  const Model& model_;
  const Tokenizer* tok_;
  int64_t vocab_real_;
};

// ---- helpers shared by the command-line tools ----
// `tokenizer_file` when non-empty, else DIR/tokenizer.json; a missing file's error says where to get
// the GPT-NeoX-20B tokenizer and how to pass it (--tokenizer FILE).
Tokenizer load_tokenizer(const std::string& model_dir, const std::string& tokenizer_file);
bool tokenizer_available(const std::string& model_dir, const std::string& tokenizer_file);
// End-of-sequence ids: the tokenizer's when it has one, else a Hugging Face config's eos_token_id
// (mamba_ssm configs name none).
std::vector<int32_t> default_eos_ids(const ModelConfig& cfg, const Tokenizer* tok);
// "f32" | "bf16" | "f16" (also "float32", "bfloat16", "float16").
DType parse_weight_dtype(const std::string& s);
// "cpu" | "cuda". When "cuda" is asked for but no GPU is visible (or the build has no CUDA backend):
// with cpu_fallback, a warning on stderr and Device::cpu (inference commands); without, an error
// ("no CUDA device found; use --device cpu": benchmarks and training, where the CPU would mislead).
Device parse_device(const std::string& s, bool cpu_fallback = false);
// Tensor `name` (i64 or i32, [B, L], B, L >= 1) of a safetensors file, as rows of ids.
std::vector<std::vector<int32_t>> read_ids_file(const std::string& path, const std::string& name = "input_ids");
// Writes rows as tensor `name` i64 [B, L]; shorter rows are right-padded with `pad`.
void write_ids_file(const std::string& path, const std::vector<std::vector<int32_t>>& rows, int64_t pad,
                    const std::string& name = "output_ids");

}  // namespace ssm
