// Byte-level BPE merging: a rank table over id pairs, two equivalent merge loops (a rescan for short
// words, a heap for long ones) and a per-word cache shared by all threads.
#pragma once
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ssm::tok {

struct MergeInfo {
  int32_t rank = -1, id = -1;  // rank -1: no merge for this pair
};

// Open-addressing hash map (id_a, id_b) → MergeInfo.
class PairMap {
 public:
  void reserve(size_t n);
  // Inserts or overwrites (a later duplicate merge replaces an earlier one, as in Hugging Face).
  void set(int32_t a, int32_t b, MergeInfo m);
  MergeInfo get(int32_t a, int32_t b) const {
    if (slots_.empty()) return {};
    uint64_t key = pack(a, b);
    for (size_t h = hash(key) & mask_;; h = (h + 1) & mask_) {
      const Slot& s = slots_[h];
      if (s.key == key) return s.m;
      if (s.key == kEmpty) return {};
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t(0);
  struct Slot {
    uint64_t key = kEmpty;
    MergeInfo m;
  };
  static uint64_t pack(int32_t a, int32_t b) { return uint64_t(uint32_t(a)) << 32 | uint32_t(b); }
  static size_t hash(uint64_t k) {
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    return size_t(k ^ (k >> 29));
  }
  void grow();
  std::vector<Slot> slots_;
  size_t mask_ = 0, size_ = 0;
};

// Merges a sequence of symbol ids in place: repeatedly the adjacent pair of lowest rank, the
// leftmost among equal ranks, until no pair has a merge. Both give identical results.
void merge_rescan(std::vector<int32_t>& syms, const PairMap& merges);  // O(n^2), fast for short words
void merge_heap(std::vector<int32_t>& syms, const PairMap& merges);    // O(n log n)

class BpeModel {
 public:
  std::vector<int32_t> byte_id = std::vector<int32_t>(256, -1);  // [256] id of each single byte, -1 if none
  int32_t unk_id = -1;
  bool fuse_unk = false;
  bool ignore_merges = false;
  PairMap merges;
  std::unordered_map<std::string, int32_t> whole_words;  // byte form → id, used when ignore_merges

  BpeModel() = default;
  BpeModel(const BpeModel&) = delete;
  BpeModel& operator=(const BpeModel&) = delete;

  // Appends the ids of one pre-tokenized word (raw bytes), using and filling the cache.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  // The same without the cache.
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

 private:
  // Word cache: open addressing over (hash, key bytes) with keys and ids in two arenas; cleared
  // when full. Guarded by mu_ so that encode() may be called from several threads.
  struct Slot {  // 16 bytes; key_len 0 marks an empty slot (cached words are never empty)
    uint32_t hash = 0, key_off = 0, ids_off = 0;
    uint16_t key_len = 0, n_ids = 0;
  };
  static constexpr size_t kMaxCachedWord = 64;  // bytes
  static constexpr size_t kCacheSlots = 1 << 16;
  static constexpr size_t kMaxCacheEntries = kCacheSlots / 2;
  static uint32_t hash_word(std::string_view w);
  mutable std::mutex mu_;
  mutable std::vector<Slot> slots_;   // [kCacheSlots] once used
  mutable std::string keys_;          // concatenated cached words
  mutable std::vector<int32_t> ids_;  // concatenated cached ids
  mutable size_t entries_ = 0;
};

}  // namespace ssm::tok
