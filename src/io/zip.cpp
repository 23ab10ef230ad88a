// ssm.cpp — minimal ZIP reader (stored entries, ZIP64). See zip.h.
#include "io/zip.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "ssm/base.h"

namespace ssm::io {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kZip64EndSig = 0x06064b50, kZip64LocatorSig = 0x07064b50;
constexpr size_t kEndSize = 22, kZip64LocatorSize = 20, kZip64EndSize = 56, kCentralSize = 46, kLocalSize = 30;

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] | p[1] << 8); }
uint32_t rd32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
uint64_t rd64(const uint8_t* p) { return uint64_t(rd32(p)) | uint64_t(rd32(p + 4)) << 32; }

constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = make_crc_table();

const char* method_name(uint16_t m) {
  switch (m) {
    case 8: return "deflate";
    case 9: return "deflate64";
    case 12: return "bzip2";
    case 14: return "lzma";
    case 93: return "zstd";
    case 95: return "xz";
    default: return "unknown";
  }
}

}  // namespace

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

bool looks_like_zip(const uint8_t* data, size_t size) {
  return size >= 4 && (rd32(data) == kLocalSig || rd32(data) == kEndSig);
}

void ZipArchive::bad(const std::string& what) const { fail("zip", source_ + ": " + what); }

ZipArchive::ZipArchive(const uint8_t* data, size_t size, std::string source)
    : data_(data), size_(size), source_(std::move(source)) {
  static_assert(sizeof(size_t) >= 8, "64-bit size_t required");
  if (size_ < kEndSize) bad("too small to be a ZIP archive (" + std::to_string(size_) + " bytes)");

  // The end-of-central-directory record is the last 22 bytes plus a comment of up to 65535 bytes.
  size_t min_pos = size_ > kEndSize + 65535 ? size_ - kEndSize - 65535 : 0;
  size_t end_pos = SIZE_MAX;
  for (size_t pos = size_ - kEndSize + 1; pos-- > min_pos;) {
    if (rd32(data_ + pos) == kEndSig && pos + kEndSize + rd16(data_ + pos + 20) == size_) {
      end_pos = pos;
      break;
    }
  }
  if (end_pos == SIZE_MAX) {
    if (looks_like_zip(data_, size_)) bad("no end-of-central-directory record: the file is truncated");
    bad("not a ZIP archive (no end-of-central-directory record)");
  }
  const uint8_t* e = data_ + end_pos;
  uint64_t disk = rd16(e + 4), cd_disk = rd16(e + 6), count = rd16(e + 10);
  uint64_t cd_size = rd32(e + 12), cd_offset = rd32(e + 16);
  uint64_t cd_end_limit = end_pos;

  if (end_pos >= kZip64LocatorSize && rd32(e - kZip64LocatorSize) == kZip64LocatorSig) {
    const uint8_t* loc = e - kZip64LocatorSize;
    uint64_t z_off = rd64(loc + 8);
    uint64_t loc_pos = end_pos - kZip64LocatorSize;
    if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1) bad("multi-disk ZIP64 archives are not supported");
    if (z_off > loc_pos || loc_pos - z_off < kZip64EndSize)
      bad("ZIP64 end-of-central-directory offset " + std::to_string(z_off) + " is out of range");
    const uint8_t* z = data_ + z_off;
    if (rd32(z) != kZip64EndSig) bad("no ZIP64 end-of-central-directory record at offset " + std::to_string(z_off));
    disk = rd32(z + 16);
    cd_disk = rd32(z + 20);
    count = rd64(z + 32);
    cd_size = rd64(z + 40);
    cd_offset = rd64(z + 48);
    cd_end_limit = z_off;
    zip64_ = true;
  }
  if (disk != 0 || cd_disk != 0) bad("multi-disk ZIP archives are not supported");
  if (cd_offset > cd_end_limit || cd_size > cd_end_limit - cd_offset)
    bad("central directory (offset " + std::to_string(cd_offset) + ", " + std::to_string(cd_size) +
        " bytes) lies outside the file's " + std::to_string(cd_end_limit) + " bytes before its end record");
  if (count > cd_size / kCentralSize)
    bad("central directory claims " + std::to_string(count) + " entries but its " + std::to_string(cd_size) +
        " bytes hold at most " + std::to_string(cd_size / kCentralSize));
  parse_central_directory(cd_offset, cd_size, count);
}

void ZipArchive::parse_central_directory(uint64_t cd_offset, uint64_t cd_size, uint64_t count) {
  entries_.reserve(size_t(count));
  const uint64_t cd_end = cd_offset + cd_size;
  uint64_t p = cd_offset;
  for (uint64_t i = 0; i < count; ++i) {
    const std::string at = "central directory entry " + std::to_string(i);
    if (cd_end - p < kCentralSize) bad(at + " runs past the end of the central directory");
    const uint8_t* c = data_ + p;
    if (rd32(c) != kCentralSig) bad(at + " has a bad signature (corrupted central directory)");
    ZipEntry en;
    en.flags = rd16(c + 8);
    en.method = rd16(c + 10);
    en.crc32 = rd32(c + 16);
    en.compressed_size = rd32(c + 20);
    en.size = rd32(c + 24);
    uint64_t name_len = rd16(c + 28), extra_len = rd16(c + 30), comment_len = rd16(c + 32);
    uint64_t disk_start = rd16(c + 34);
    en.header_offset = rd32(c + 42);
    uint64_t rec = kCentralSize + name_len + extra_len + comment_len;
    if (cd_end - p < rec) bad(at + " runs past the end of the central directory");
    en.name.assign(reinterpret_cast<const char*>(c + kCentralSize), size_t(name_len));

    // ZIP64 extended information: the 64-bit values of the fields saturated at 0xFFFFFFFF, in order.
    const uint8_t* x = c + kCentralSize + name_len;
    const uint8_t* x_end = x + extra_len;
    while (x_end - x >= 4) {
      uint16_t id = rd16(x), len = rd16(x + 2);
      if (uint64_t(x_end - x - 4) < len) bad("extra field of '" + en.name + "' runs past its entry");
      if (id == 0x0001) {
        const uint8_t* f = x + 4;
        const uint8_t* f_end = f + len;
        auto take64 = [&](uint64_t& v) {
          if (f_end - f < 8) bad("ZIP64 extra field of '" + en.name + "' is too short");
          v = rd64(f);
          f += 8;
        };
        if (en.size == 0xffffffffu) take64(en.size);
        if (en.compressed_size == 0xffffffffu) take64(en.compressed_size);
        if (en.header_offset == 0xffffffffu) take64(en.header_offset);
        if (disk_start == 0xffff) {
          if (f_end - f < 4) bad("ZIP64 extra field of '" + en.name + "' is too short");
          disk_start = rd32(f);
        }
      }
      x += 4 + len;
    }
    if (disk_start != 0) bad("entry '" + en.name + "' starts on another disk (multi-disk archives are not supported)");
    read_local_header(en, cd_offset);
    if (!index_.emplace(en.name, entries_.size()).second) bad("duplicate entry name '" + en.name + "'");
    entries_.push_back(std::move(en));
    p += rec;
  }

  // Entries must not overlap one another (a crafted archive could alias a tensor onto the pickle).
  std::vector<const ZipEntry*> by_offset;
  for (const ZipEntry& en : entries_) by_offset.push_back(&en);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const ZipEntry* a, const ZipEntry* b) { return a->header_offset < b->header_offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const ZipEntry& a = *by_offset[i - 1];
    const ZipEntry& b = *by_offset[i];
    if (a.data_offset + a.compressed_size > b.header_offset)
      bad("entries '" + a.name + "' and '" + b.name + "' overlap");
  }
}

void ZipArchive::read_local_header(ZipEntry& en, uint64_t cd_offset) {
  // Local headers and data lie before the central directory.
  if (en.header_offset > cd_offset || cd_offset - en.header_offset < kLocalSize)
    bad("local header offset " + std::to_string(en.header_offset) + " of '" + en.name + "' is out of range");
  const uint8_t* h = data_ + en.header_offset;
  if (rd32(h) != kLocalSig)
    bad("entry '" + en.name + "' has no local header at offset " + std::to_string(en.header_offset));
  uint64_t name_len = rd16(h + 26), extra_len = rd16(h + 28);
  uint64_t room = cd_offset - en.header_offset - kLocalSize;
  if (name_len + extra_len > room) bad("local header of '" + en.name + "' runs into the central directory");
  if (name_len != en.name.size() || std::memcmp(h + kLocalSize, en.name.data(), en.name.size()) != 0)
    bad("local header name of '" + en.name + "' differs from its central directory entry");
  en.data_offset = en.header_offset + kLocalSize + name_len + extra_len;
  if (en.compressed_size > cd_offset - en.data_offset)
    bad("data of '" + en.name + "' (" + std::to_string(en.compressed_size) + " bytes at offset " +
        std::to_string(en.data_offset) +
        ") runs past the start of the central directory: the file is truncated or corrupt");
}

const ZipEntry* ZipArchive::find(std::string_view name) const {
  auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &entries_[it->second];
}

ZipArchive::Bytes ZipArchive::read(const ZipEntry& en, bool verify_crc) const {
  if (en.flags & 1u) bad("entry '" + en.name + "' is encrypted");
  if (en.method != 0)
    bad("entry '" + en.name + "' is compressed (method " + std::to_string(en.method) + ", " + method_name(en.method) +
        "); only stored entries are supported, as torch.save writes them: load and torch.save the checkpoint again "
        "instead of re-zipping it");
  if (en.compressed_size != en.size)
    bad("stored entry '" + en.name + "' has compressed size " + std::to_string(en.compressed_size) + " != size " +
        std::to_string(en.size));
  Bytes b{data_ + en.data_offset, size_t(en.size)};
  if (verify_crc) {
    uint32_t got = crc32(b.data, b.size);
    if (got != en.crc32) bad("CRC-32 mismatch in entry '" + en.name + "': the file is corrupt");
  }
  return b;
}

}  // namespace ssm::io
