#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <queue>

namespace ssm::tok {

void PairMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  if (cap <= slots_.size()) return;
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  size_ = 0;
  for (const Slot& s : old)
    if (s.key != kEmpty) set(int32_t(s.key >> 32), int32_t(uint32_t(s.key)), s.m);
}

void PairMap::grow() { reserve(slots_.empty() ? 8 : slots_.size()); }

void PairMap::set(int32_t a, int32_t b, MergeInfo m) {
  if (2 * (size_ + 1) > slots_.size()) grow();
  uint64_t key = pack(a, b);
  for (size_t h = hash(key) & mask_;; h = (h + 1) & mask_) {
    Slot& s = slots_[h];
    if (s.key == key) {
      s.m = m;
      return;
    }
    if (s.key == kEmpty) {
      s.key = key;
      s.m = m;
      ++size_;
      return;
    }
  }
}

namespace {
constexpr int32_t kNoRank = std::numeric_limits<int32_t>::max();
}

void merge_rescan(std::vector<int32_t>& syms, const PairMap& merges) {
  size_t n = syms.size();
  if (n < 2) return;
  std::vector<MergeInfo> pair(n - 1);  // [n-1] merge of (syms[i], syms[i+1])
  for (size_t i = 0; i + 1 < n; ++i) pair[i] = merges.get(syms[i], syms[i + 1]);
  for (;;) {
    size_t best = n;
    int32_t best_rank = kNoRank;
    for (size_t i = 0; i + 1 < n; ++i)
      if (pair[i].rank >= 0 && pair[i].rank < best_rank) best_rank = pair[i].rank, best = i;
    if (best == n) break;
    syms[best] = pair[best].id;
    syms.erase(syms.begin() + std::ptrdiff_t(best) + 1);
    pair.erase(pair.begin() + std::ptrdiff_t(best));
    --n;
    if (best > 0) pair[best - 1] = merges.get(syms[best - 1], syms[best]);
    if (best + 1 < n) pair[best] = merges.get(syms[best], syms[best + 1]);
  }
}

void merge_heap(std::vector<int32_t>& syms, const PairMap& merges) {
  const int n = int(syms.size());
  if (n < 2) return;
  // A doubly linked list over positions; a merged-away position gets alive=0.
  std::vector<int> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));  // [n]
  std::vector<uint8_t> alive(static_cast<size_t>(n), 1);                        // [n]
  for (int i = 0; i < n; ++i) prev[size_t(i)] = i - 1, next[size_t(i)] = i + 1 < n ? i + 1 : -1;
  struct Cand {
    int32_t rank;
    int pos;
    bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> heap;
  for (int i = 0; i + 1 < n; ++i) {
    MergeInfo m = merges.get(syms[size_t(i)], syms[size_t(i) + 1]);
    if (m.rank >= 0) heap.push({m.rank, i});
  }
  while (!heap.empty()) {
    Cand c = heap.top();
    heap.pop();
    size_t p = size_t(c.pos);
    if (!alive[p] || next[p] < 0) continue;
    size_t q = size_t(next[p]);
    MergeInfo m = merges.get(syms[p], syms[q]);
    if (m.rank != c.rank) continue;  // stale: the pair at p changed since this entry was pushed
    syms[p] = m.id;
    alive[q] = 0;
    next[p] = next[q];
    if (next[q] >= 0) prev[size_t(next[q])] = int(p);
    if (prev[p] >= 0) {
      MergeInfo l = merges.get(syms[size_t(prev[p])], syms[p]);
      if (l.rank >= 0) heap.push({l.rank, prev[p]});
    }
    if (next[p] >= 0) {
      MergeInfo r = merges.get(syms[p], syms[size_t(next[p])]);
      if (r.rank >= 0) heap.push({r.rank, int(p)});
    }
  }
  size_t w = 0;
  for (size_t i = 0; i < size_t(n); ++i)
    if (alive[i]) syms[w++] = syms[i];
  syms.resize(w);
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    auto it = whole_words.find(std::string(word));
    if (it != whole_words.end()) {
      out.push_back(it->second);
      return;
    }
  }
  std::vector<int32_t> syms;  // [bytes] symbol ids
  syms.reserve(word.size());
  for (unsigned char b : word) {
    int32_t id = byte_id[b];
    if (id < 0) {
      if (unk_id < 0) continue;  // no unk token: the byte is dropped, as Hugging Face does
      if (fuse_unk && !syms.empty() && syms.back() == unk_id) continue;
      id = unk_id;
    }
    syms.push_back(id);
  }
  if (syms.size() <= 48)
    merge_rescan(syms, merges);
  else
    merge_heap(syms, merges);
  out.insert(out.end(), syms.begin(), syms.end());
}

uint32_t BpeModel::hash_word(std::string_view w) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ w.size();
  size_t i = 0;
  for (; i + 8 <= w.size(); i += 8) {
    uint64_t x;
    std::memcpy(&x, w.data() + i, 8);
    h = (h ^ x) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 31;
  }
  uint64_t x = 0;
  std::memcpy(&x, w.data() + i, w.size() - i);
  h = (h ^ x) * 0x94D049BB133111EBull;
  return uint32_t((h ^ (h >> 29)) >> 32);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxCachedWord) {
    merge_word(word, out);
    return;
  }
  const uint32_t h = hash_word(word);
  const size_t mask = kCacheSlots - 1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!slots_.empty()) {
      for (size_t i = size_t(h) & mask;; i = (i + 1) & mask) {
        const Slot& s = slots_[i];
        if (s.key_len == 0) break;
        if (s.hash == h && s.key_len == word.size() &&
            std::memcmp(keys_.data() + s.key_off, word.data(), word.size()) == 0) {
          if (s.n_ids == 1)
            out.push_back(ids_[s.ids_off]);
          else
            out.insert(out.end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.n_ids);
          return;
        }
      }
    }
  }
  const size_t first = out.size();
  merge_word(word, out);
  const size_t n = out.size() - first;
  std::lock_guard<std::mutex> lock(mu_);
  if (slots_.empty()) slots_.resize(kCacheSlots);
  if (entries_ >= kMaxCacheEntries || keys_.size() + word.size() > UINT32_MAX / 2 || ids_.size() + n > UINT32_MAX / 2) {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    entries_ = 0;
  }
  size_t i = size_t(h) & mask;
  for (;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.key_len == 0) break;
    if (s.hash == h && s.key_len == word.size() && std::memcmp(keys_.data() + s.key_off, word.data(), word.size()) == 0)
      return;  // another thread cached it meanwhile
  }
  Slot& s = slots_[i];
  s.hash = h;
  s.key_off = uint32_t(keys_.size());
  s.key_len = uint16_t(word.size());
  s.ids_off = uint32_t(ids_.size());
  s.n_ids = uint16_t(n);
  keys_.append(word);
  ids_.insert(ids_.end(), out.begin() + std::ptrdiff_t(first), out.end());
  ++entries_;
}

}  // namespace ssm::tok
