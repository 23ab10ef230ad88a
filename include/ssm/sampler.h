// ssm.cpp — next-token sampling from a row of logits.
//
// One Sampler per sequence. The chain, applied in this order to the logits of the real vocabulary
// (ids >= vocab_real, the padding rows of the embedding, are never sampled):
//   1. repetition penalty (CTRL, as HF and mamba_ssm): for every distinct id among the last
//      `repeat_last_n` accepted tokens, a positive logit is divided by `repeat_penalty` and a
//      negative one multiplied by it;
//   2. greedy when temperature <= 0 or top_k == 1: the arg max (lowest id on ties);
//   3. top-k: keep the k largest logits (0 = keep all);
//   4. min-p: keep ids whose probability is >= min_p × the largest probability (before temperature,
//      as llama.cpp and mamba_ssm);
//   5. temperature: logits / temperature (mamba_ssm: after top-k, before top-p);
//   6. top-p: keep the smallest set of most probable ids whose mass reaches top_p (the id that
//      crosses the threshold is kept; top_p <= 0 or >= 1 = off, as mamba_ssm's 0.0 and HF's 1.0);
//   7. draw from the renormalised distribution with std::mt19937_64 seeded by `seed`.
// No heap allocation per call after construction (buffers are reused).
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace ssm {

struct SamplerParams {
  double temperature = 1.0;     // <= 0: greedy
  int64_t top_k = 0;            // 0: off; 1: greedy
  double top_p = 1.0;           // <= 0 or >= 1: off
  double min_p = 0.0;           // <= 0: off
  double repeat_penalty = 1.0;  // 1: off
  int64_t repeat_last_n = 64;   // tokens of history penalised; -1: all; 0: off
  uint64_t seed = 0;
  bool greedy() const { return temperature <= 0 || top_k == 1; }
};

class Sampler {
 public:
  // vocab_real: ids that may be sampled (the logits row may be longer). Throws on bad parameters.
  Sampler(const SamplerParams& params, int64_t vocab_real);

  // Adds a token to the history (the prompt's tokens and every token generated).
  void accept(int32_t token);
  void reset();  // clears the history and reseeds the generator
  const SamplerParams& params() const { return p_; }

  // Picks the next id from logits[0 .. n) (n >= vocab_real).
  int32_t sample(const float* logits, int64_t n);

  // The distribution sample() would draw from: the kept ids and their probabilities (sum 1), most
  // probable first. Greedy gives the single arg max with probability 1. For tests and logprobs;
  // the reference stays valid until the next call.
  struct Candidate {
    int32_t id;
    float logit;
    double p;
  };
  const std::vector<Candidate>& distribution(const float* logits, int64_t n);

 private:
  // Fills cand_ with the kept ids and their probabilities (sum 1); most probable first when
  // `sorted` (or top-p is on), else in an unspecified but deterministic order.
  void filter(const float* logits, int64_t n, bool sorted);
  double uniform();  // [0, 1), 53 bits

  SamplerParams p_;
  int64_t vocab_;
  std::mt19937_64 rng_;
  std::vector<float> work_;       // [vocab_real] penalised logits
  std::vector<Candidate> cand_;   // [<= vocab_real] kept candidates
  std::vector<int32_t> history_;  // ring buffer of the last repeat_last_n tokens (or all when -1)
  size_t hist_pos_ = 0;           // next slot of the ring when full
  std::vector<uint8_t> seen_;     // [vocab_real] marks for distinct ids while penalising
};

}  // namespace ssm
