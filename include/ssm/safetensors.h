// ssm.cpp — safetensors reading (mmap, zero-copy, sharded) and atomic writing.
//
// File layout: u64 little-endian header length N, N bytes of JSON header, then the data region.
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets are
// relative to the data region) plus an optional "__metadata__" object of string -> string.
// Every malformed input is reported as an ssm::Error "[safetensors] <file>: <what>", never UB.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ssm/tensor.h"

namespace ssm::io {

class SafeTensors {
 public:
  struct Entry {
    DType dtype = DType::f32;
    Shape shape;
    uint64_t begin = 0, end = 0;  // byte range inside the data region
  };

  // Maps the file read-only and validates the whole header (not the tensor values).
  static SafeTensors open(const std::string& path);
  // Parses bytes in memory; `owner` keeps [data, data + size) alive for as long as any tensor
  // returned by get() lives (it may be null when the caller guarantees that).
  static SafeTensors parse(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                           const std::string& source = "<memory>");
  static SafeTensors parse(std::shared_ptr<const std::vector<uint8_t>> bytes, const std::string& source = "<memory>");

  bool has(const std::string& name) const { return entries_.count(name) != 0; }
  // A read-only view over the mapping when the data is aligned for its dtype, else a copy.
  Tensor get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const Entry& entry(const std::string& name) const;  // throws naming the file and tensor
  DType dtype(const std::string& name) const { return entry(name).dtype; }
  Shape shape(const std::string& name) const { return entry(name).shape; }
  size_t size() const { return entries_.size(); }
  const std::string& source() const { return source_; }  // file path or "<memory>"
  // The data region (after the header) inside the mapping or buffer; tensor offsets are relative to it.
  const uint8_t* data_region() const { return data_; }
  size_t data_region_size() const { return data_size_; }

 private:
  std::string source_;
  std::shared_ptr<const void> owner_;
  const uint8_t* data_ = nullptr;  // start of the data region
  size_t data_size_ = 0;
  std::map<std::string, Entry> entries_;
  std::map<std::string, std::string> metadata_;
};

// One `model.safetensors` or a sharded set described by `model.safetensors.index.json`
// ({"metadata": {...}, "weight_map": {tensor name: shard file name}}).
class ShardedSafeTensors {
 public:
  // `path` is a model directory (index preferred, else model.safetensors), an index .json file, or
  // a single .safetensors file.
  static ShardedSafeTensors open(const std::string& path);

  bool has(const std::string& name) const { return where_.count(name) != 0; }
  Tensor get(const std::string& name) const;
  std::vector<std::string> names() const;  // sorted
  // The single file's __metadata__, or the index's "metadata" (non-string values as JSON text).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  DType dtype(const std::string& name) const;
  Shape shape(const std::string& name) const;
  size_t size() const { return where_.size(); }
  size_t num_shards() const { return shards_.size(); }
  const std::string& source() const { return source_; }

 private:
  const SafeTensors& shard_of(const std::string& name) const;
  std::string source_;
  std::vector<SafeTensors> shards_;
  std::map<std::string, size_t> where_;  // tensor name -> index into shards_
  std::map<std::string, std::string> metadata_;
};

// Writes a safetensors file atomically: `path.tmp.<pid>.<n>` is written, fsynced and renamed over
// `path`; on any error the temporary file is removed, `path` is left as it was, and ssm::Error is
// thrown. Tensors may be on any device and non-contiguous. Data is laid out by decreasing dtype size
// (then in the given order) and the header is padded with spaces, so every tensor starts at a
// multiple of its dtype size from an 8-aligned data region, with no gaps.
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool is_valid_utf8(const std::string& s);

}  // namespace ssm::io
