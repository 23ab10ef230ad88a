// Next-token sampler: repetition penalty → greedy | top-k → min-p → temperature → top-p → draw.
// See include/ssm/sampler.h for the exact semantics of each step.
#include "ssm/sampler.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "ssm/base.h"

namespace ssm {

namespace {
// Larger logit first; the lower id first on ties, so every order is deterministic.
bool before(const Sampler::Candidate& a, const Sampler::Candidate& b) {
  return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}
}  // namespace

Sampler::Sampler(const SamplerParams& params, int64_t vocab_real) : p_(params), vocab_(vocab_real) {
  const char* w = "sampler";
  SSM_CHECK(vocab_real >= 1 && vocab_real <= (int64_t(1) << 31) - 1, w,
            "vocabulary size must be in [1, 2^31), got " + std::to_string(vocab_real));
  SSM_CHECK(std::isfinite(p_.temperature), w, "temperature must be a finite number");
  SSM_CHECK(p_.top_k >= 0, w, "top_k must be >= 0 (0 = off), got " + std::to_string(p_.top_k));
  SSM_CHECK(std::isfinite(p_.top_p) && p_.top_p >= 0, w, "top_p must be in [0, 1], got " + std::to_string(p_.top_p));
  SSM_CHECK(std::isfinite(p_.min_p) && p_.min_p >= 0 && p_.min_p <= 1, w,
            "min_p must be in [0, 1], got " + std::to_string(p_.min_p));
  SSM_CHECK(std::isfinite(p_.repeat_penalty) && p_.repeat_penalty > 0, w,
            "repeat penalty must be a positive number, got " + std::to_string(p_.repeat_penalty));
  SSM_CHECK(p_.repeat_last_n >= -1, w,
            "repeat_last_n must be >= -1 (-1 = whole history), got " + std::to_string(p_.repeat_last_n));
  cand_.reserve(size_t(vocab_));
  work_.reserve(size_t(vocab_));
  seen_.assign(size_t(vocab_), 0);
  if (p_.repeat_last_n > 0) history_.reserve(size_t(std::min<int64_t>(p_.repeat_last_n, 1 << 16)));
  reset();
}

void Sampler::reset() {
  rng_.seed(p_.seed);
  history_.clear();
  hist_pos_ = 0;
}

void Sampler::accept(int32_t token) {
  if (p_.repeat_penalty == 1.0 || p_.repeat_last_n == 0) return;  // history unused
  if (p_.repeat_last_n < 0 || int64_t(history_.size()) < p_.repeat_last_n) {
    history_.push_back(token);
  } else {
    history_[hist_pos_] = token;
    hist_pos_ = (hist_pos_ + 1) % history_.size();
  }
}

double Sampler::uniform() { return double(rng_() >> 11) * 0x1.0p-53; }

void Sampler::filter(const float* logits, int64_t n, bool sorted) {
  SSM_CHECK(logits != nullptr && n >= vocab_, "sampler",
            "logits row has " + std::to_string(n) + " entries but the vocabulary has " + std::to_string(vocab_));
  work_.assign(logits, logits + vocab_);  // within the reserved capacity: no allocation
  if (p_.repeat_penalty != 1.0 && !history_.empty()) {
    const float r = float(p_.repeat_penalty);
    for (int32_t t : history_) {
      if (t < 0 || t >= vocab_ || seen_[size_t(t)]) continue;
      seen_[size_t(t)] = 1;  // each distinct id once
      float& l = work_[size_t(t)];
      l = l > 0 ? l / r : l * r;
    }
    for (int32_t t : history_)
      if (t >= 0 && t < vocab_) seen_[size_t(t)] = 0;
  }
  size_t best = 0;
  for (size_t i = 0; i < work_.size(); ++i) {
    const float l = work_[i];
    if (std::isnan(l) || l == INFINITY)
      fail("sampler", "logit of token " + std::to_string(i) + " is " + (std::isnan(l) ? "NaN" : "+inf") +
                          " (the model produced non-finite values)");
    if (l > work_[best]) best = i;  // strict: the lowest id wins ties
  }
  const float top = work_[best];
  SSM_CHECK(top != -INFINITY, "sampler", "every token has probability 0 (all logits are -inf)");
  cand_.clear();
  if (p_.greedy()) {
    cand_.push_back({int32_t(best), top, 1.0});
    return;
  }
  // top-k and min-p (p_i / p_max = exp(l_i - l_max), before temperature). Both keep a top set, so
  // their order does not matter; -inf logits (probability 0) are never candidates.
  const size_t k = p_.top_k > 0 ? std::min<size_t>(size_t(p_.top_k), work_.size()) : work_.size();
  if (p_.min_p <= 0 && k < work_.size()) {
    // One pass with a heap of the k best so far; its front is the worst of them.
    for (size_t i = 0; i < work_.size(); ++i) {
      const Candidate c{int32_t(i), work_[i], 0.0};
      if (c.logit == -INFINITY) continue;
      if (cand_.size() < k) {
        cand_.push_back(c);
        std::push_heap(cand_.begin(), cand_.end(), before);
      } else if (c.logit >= cand_.front().logit && before(c, cand_.front())) {
        std::pop_heap(cand_.begin(), cand_.end(), before);
        cand_.back() = c;
        std::push_heap(cand_.begin(), cand_.end(), before);
      }
    }
  } else {
    const double cut = p_.min_p > 0 ? double(top) + std::log(p_.min_p) : -INFINITY;
    for (size_t i = 0; i < work_.size(); ++i)
      if (work_[i] != -INFINITY && double(work_[i]) >= cut) cand_.push_back({int32_t(i), work_[i], 0.0});
    if (cand_.size() > k) {
      std::nth_element(cand_.begin(), cand_.begin() + ptrdiff_t(k - 1), cand_.end(), before);
      cand_.resize(k);
    }
  }
  // temperature, then probabilities (in double).
  const double inv_t = 1.0 / p_.temperature;
  double total = 0;
  for (auto& c : cand_) {
    c.p = std::exp((double(c.logit) - double(top)) * inv_t);
    total += c.p;
  }
  if (p_.top_p > 0 && p_.top_p < 1) {
    // top-p: keep id i (most probable first) while the mass before it is < top_p. Sort a growing
    // prefix only: the nucleus is usually a small part of the vocabulary.
    const double target = p_.top_p * total;
    size_t m = std::min<size_t>(64, cand_.size()), keep = 0;
    while (true) {
      if (4 * m >= cand_.size()) {  // heap-based partial sort loses to a full sort here
        m = cand_.size();
        std::sort(cand_.begin(), cand_.end(), before);
      } else {
        std::partial_sort(cand_.begin(), cand_.begin() + ptrdiff_t(m), cand_.end(), before);
      }
      double cum = 0;
      keep = 0;
      while (keep < m && cum < target) cum += cand_[keep++].p;
      if (cum >= target || m == cand_.size()) break;
      m = std::min(2 * m, cand_.size());
    }
    cand_.resize(std::max<size_t>(keep, 1));
    total = 0;
    for (const auto& c : cand_) total += c.p;
  } else if (sorted) {
    std::sort(cand_.begin(), cand_.end(), before);
  }
  for (auto& c : cand_) c.p /= total;
}

const std::vector<Sampler::Candidate>& Sampler::distribution(const float* logits, int64_t n) {
  filter(logits, n, true);
  return cand_;
}

int32_t Sampler::sample(const float* logits, int64_t n) {
  filter(logits, n, false);  // the draw needs no order
  const auto& d = cand_;
  if (d.size() == 1) return d[0].id;
  double u = uniform(), cum = 0;
  for (const auto& c : d) {
    cum += c.p;
    if (u < cum) return c.id;
  }
  return d.back().id;  // u within rounding of 1
}

}  // namespace ssm
