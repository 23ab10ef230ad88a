// ssm.cpp — training data: token shards on disk, a shuffling batch loader with a resumable
// position, and the Mamba paper's synthetic tasks.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "ssm/tensor.h"

namespace ssm::data {

// Token shard file: magic "SSMTOK01", u32 version (1), u32 bytes per id (2 or 4), u64 count, ids.
void write_shard(const std::string& path, const std::vector<int32_t>& ids);  // atomic
std::vector<int32_t> read_shard(const std::string& path);                    // validates

// Random windows of length L+1 from a token stream; deterministic for a seed, resumable.
class BatchLoader {
 public:
  BatchLoader(std::vector<int32_t> tokens, int64_t batch, int64_t seq_len, uint64_t seed);
  // ids i64 [batch, seq_len + 1]; the loss uses [:, :-1] → [:, 1:].
  Tensor next();
  uint64_t position() const { return drawn_; }
  void seek(uint64_t drawn);  // replays the generator to the same position
  size_t size() const { return tokens_.size(); }

 private:
  std::vector<int32_t> tokens_;
  int64_t batch_, seq_len_;
  uint64_t seed_, drawn_ = 0;
  std::mt19937_64 rng_;
};

// Synthetic tasks (Mamba paper §4.1, appendix E.1). Each returns inputs [B, L] and targets
// [B, L] (i64) where targets is -100 except at the positions that are scored.
struct TaskBatch {
  Tensor inputs, targets;
};
// Selective copying (the Mamba paper's version of the H3/safari task): `n_memorize` data tokens
// drawn from 2..vocab-1 scattered at random positions among noise tokens (0) in a region of
// `seq_len`, followed by `n_memorize` marker tokens (1); the output at the k-th marker must be the
// k-th data token. Sequences have seq_len + n_memorize tokens; only the marker positions are scored.
TaskBatch selective_copying(int64_t batch, int64_t seq_len, int64_t n_memorize, int64_t vocab, std::mt19937_64& rng);
// Induction heads: `seq_len` tokens drawn from 1..vocab-1, with the special token 0 once at a
// random position p in [0, seq_len-3] and again as the last token; only the last position is scored,
// and its target is the token that followed the first special token (the one at p + 1).
TaskBatch induction_heads(int64_t batch, int64_t seq_len, int64_t vocab, std::mt19937_64& rng);

}  // namespace ssm::data
