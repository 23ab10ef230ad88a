// ssm.cpp — a minimal, validating ZIP reader over bytes in memory (e.g. an mmapped file).
//
// Reads the end-of-central-directory record (and the ZIP64 locator and record, which PyTorch writes
// for checkpoints past 4 GiB), every central-directory entry (with its ZIP64 extra field) and every
// local header. Only stored (uncompressed, method 0) entries can be read: torch.save writes those.
// Every malformed input — truncation, offsets past the end, entries that overlap each other or the
// central directory, duplicate names — is an ssm::Error "[zip] <source>: <what>".
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ssm::io {

struct ZipEntry {
  std::string name;
  uint16_t flags = 0;   // general-purpose bit flags (bit 0: encrypted)
  uint16_t method = 0;  // 0 = stored, 8 = deflate, ...
  uint32_t crc32 = 0;
  uint64_t compressed_size = 0, size = 0;
  uint64_t header_offset = 0;  // the local file header
  uint64_t data_offset = 0;    // first byte of the entry's (compressed) data
};

class ZipArchive {
 public:
  // Parses and validates the directory structure of [data, data + size); does not copy the data,
  // which must outlive the archive. `source` names the file in error messages.
  ZipArchive(const uint8_t* data, size_t size, std::string source);

  const std::vector<ZipEntry>& entries() const { return entries_; }
  const ZipEntry* find(std::string_view name) const;  // null when absent

  struct Bytes {
    const uint8_t* data;
    size_t size;
  };
  // The bytes of a stored entry; throws for a compressed or encrypted one. With verify_crc the
  // CRC-32 of the bytes is checked against the central directory.
  Bytes read(const ZipEntry& entry, bool verify_crc) const;

  const std::string& source() const { return source_; }
  bool is_zip64() const { return zip64_; }

 private:
  [[noreturn]] void bad(const std::string& what) const;
  void parse_central_directory(uint64_t cd_offset, uint64_t cd_size, uint64_t count);
  void read_local_header(ZipEntry& e, uint64_t cd_offset);

  const uint8_t* data_;
  size_t size_;
  std::string source_;
  bool zip64_ = false;
  std::vector<ZipEntry> entries_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in entries_
};

// CRC-32 (IEEE 802.3, the one ZIP uses) of [p, p + n), continuing from `crc`.
uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0);

// True when the bytes start like a ZIP file (a local file header or an empty archive).
bool looks_like_zip(const uint8_t* data, size_t size);

}  // namespace ssm::io
