#include "ssm/data.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace ssm::data {

namespace {
constexpr char kMagic[8] = {'S', 'S', 'M', 'T', 'O', 'K', '0', '1'};
}

void write_shard(const std::string& path, const std::vector<int32_t>& ids) {
  uint32_t width = 2;
  for (int32_t id : ids) {
    SSM_CHECK(id >= 0, "shard", "negative token id " + std::to_string(id));
    if (id > 65535) width = 4;
  }
  std::string tmp = path + ".tmp";
  {
    std::ofstream o(tmp, std::ios::binary | std::ios::trunc);
    SSM_CHECK(bool(o), "shard", "cannot write '" + tmp + "'");
    uint32_t version = 1;
    uint64_t n = ids.size();
    o.write(kMagic, 8);
    o.write(reinterpret_cast<const char*>(&version), 4);
    o.write(reinterpret_cast<const char*>(&width), 4);
    o.write(reinterpret_cast<const char*>(&n), 8);
    for (int32_t id : ids) {
      if (width == 2) {
        uint16_t v = uint16_t(id);
        o.write(reinterpret_cast<const char*>(&v), 2);
      } else {
        o.write(reinterpret_cast<const char*>(&id), 4);
      }
    }
    o.flush();
    if (!o) {
      std::remove(tmp.c_str());
      fail("shard", "write to '" + tmp + "' failed (disk full?)");
    }
  }
  std::filesystem::rename(tmp, path);
}

std::vector<int32_t> read_shard(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SSM_CHECK(bool(in), "shard", "cannot open '" + path + "'");
  char magic[8];
  uint32_t version = 0, width = 0;
  uint64_t n = 0;
  in.read(magic, 8);
  in.read(reinterpret_cast<char*>(&version), 4);
  in.read(reinterpret_cast<char*>(&width), 4);
  in.read(reinterpret_cast<char*>(&n), 8);
  SSM_CHECK(bool(in) && std::memcmp(magic, kMagic, 8) == 0, "shard", "'" + path + "' is not an ssm token shard");
  SSM_CHECK(version == 1, "shard", "'" + path + "' has unsupported version " + std::to_string(version));
  SSM_CHECK(width == 2 || width == 4, "shard", "'" + path + "' has invalid id width " + std::to_string(width));
  auto size = std::filesystem::file_size(path);
  SSM_CHECK(n <= (size - 24) / width && 24 + n * width == size, "shard",
            "'" + path + "' is truncated or has trailing bytes (header says " + std::to_string(n) + " ids)");
  std::vector<int32_t> ids(n);
  for (uint64_t i = 0; i < n; ++i) {
    if (width == 2) {
      uint16_t v;
      in.read(reinterpret_cast<char*>(&v), 2);
      ids[i] = v;
    } else {
      in.read(reinterpret_cast<char*>(&ids[i]), 4);
    }
  }
  return ids;
}

BatchLoader::BatchLoader(std::vector<int32_t> tokens, int64_t batch, int64_t seq_len, uint64_t seed)
    : tokens_(std::move(tokens)), batch_(batch), seq_len_(seq_len), seed_(seed), rng_(seed) {
  SSM_CHECK(batch >= 1 && seq_len >= 1, "data", "batch and sequence length must be >= 1");
  SSM_CHECK(int64_t(tokens_.size()) > seq_len + 1, "data",
            "dataset has " + std::to_string(tokens_.size()) + " tokens, fewer than one window of " +
                std::to_string(seq_len + 1));
}

Tensor BatchLoader::next() {
  Tensor ids = Tensor::empty({batch_, seq_len_ + 1}, DType::i64);
  int64_t* p = ids.data<int64_t>();
  std::uniform_int_distribution<int64_t> d(0, int64_t(tokens_.size()) - seq_len_ - 1);
  for (int64_t b = 0; b < batch_; ++b) {
    int64_t start = d(rng_);
    for (int64_t t = 0; t <= seq_len_; ++t) p[b * (seq_len_ + 1) + t] = tokens_[size_t(start + t)];
  }
  ++drawn_;
  return ids;
}

void BatchLoader::seek(uint64_t drawn) {
  rng_.seed(seed_);
  drawn_ = 0;
  std::uniform_int_distribution<int64_t> d(0, int64_t(tokens_.size()) - seq_len_ - 1);
  for (; drawn_ < drawn; ++drawn_)
    for (int64_t b = 0; b < batch_; ++b) d(rng_);
}

TaskBatch selective_copying(int64_t batch, int64_t seq_len, int64_t n_memorize, int64_t vocab, std::mt19937_64& rng) {
  // Tokens: 0 = noise, 1 = marker, 2.. = data. Layout: [seq_len data/noise region][n_memorize markers].
  SSM_CHECK(vocab >= 4 && n_memorize >= 1 && seq_len >= n_memorize, "selective_copying",
            "need vocab >= 4 and seq_len >= n_memorize >= 1");
  const int64_t L = seq_len + n_memorize;
  TaskBatch tb{Tensor::zeros({batch, L}, DType::i64), Tensor::full({batch, L}, -100, DType::i64)};
  int64_t *in = tb.inputs.data<int64_t>(), *tg = tb.targets.data<int64_t>();
  std::uniform_int_distribution<int64_t> tok(2, vocab - 1);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<int64_t> pos(static_cast<size_t>(seq_len));
    for (int64_t i = 0; i < seq_len; ++i) pos[size_t(i)] = i;
    std::shuffle(pos.begin(), pos.end(), rng);
    pos.resize(size_t(n_memorize));
    std::sort(pos.begin(), pos.end());
    for (int64_t k = 0; k < n_memorize; ++k) {
      int64_t v = tok(rng);
      in[b * L + pos[size_t(k)]] = v;
      in[b * L + seq_len + k] = 1;
      tg[b * L + seq_len + k] = v;  // the output at the k-th marker is the k-th data token
    }
  }
  return tb;
}

TaskBatch induction_heads(int64_t batch, int64_t seq_len, int64_t vocab, std::mt19937_64& rng) {
  // Token 0 is the special token. Sequence: random tokens with the special token at a random
  // position p (followed by the key token), ending with the special token; the target after the
  // final special token is the key token.
  SSM_CHECK(vocab >= 3 && seq_len >= 4, "induction_heads", "need vocab >= 3 and seq_len >= 4");
  TaskBatch tb{Tensor::zeros({batch, seq_len}, DType::i64), Tensor::full({batch, seq_len}, -100, DType::i64)};
  int64_t *in = tb.inputs.data<int64_t>(), *tg = tb.targets.data<int64_t>();
  std::uniform_int_distribution<int64_t> tok(1, vocab - 1), at(0, seq_len - 3);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < seq_len; ++t) in[b * seq_len + t] = tok(rng);
    int64_t p = at(rng);
    in[b * seq_len + p] = 0;
    in[b * seq_len + seq_len - 1] = 0;
    tg[b * seq_len + seq_len - 1] = in[b * seq_len + p + 1];
  }
  return tb;
}

}  // namespace ssm::data
