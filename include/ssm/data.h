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
std::vector<int32_t> read_shard(const std::string& path);                   // validates

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
// Selective copying: `n_memorize` data tokens from a vocabulary of `vocab - 3` scattered at random
// positions among noise tokens in a sequence of `seq_len`, followed by `n_memorize` marker tokens
// after which the model must output the data tokens in order.
TaskBatch selective_copying(int64_t batch, int64_t seq_len, int64_t n_memorize, int64_t vocab, std::mt19937_64& rng);
// Induction heads: a random sequence with a special token; the token after the special token's
// first occurrence must be recalled after its second occurrence at the end.
TaskBatch induction_heads(int64_t batch, int64_t seq_len, int64_t vocab, std::mt19937_64& rng);

}  // namespace ssm::data
