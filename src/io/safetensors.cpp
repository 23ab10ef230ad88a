// safetensors reader (header validation, zero-copy views over a read-only mmap) and atomic writer.
#include "ssm/safetensors.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "ssm/json_config.h"

namespace ssm::io {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian");

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference implementation's limit
constexpr int kMaxHeaderDepth = 16;                // a valid header nests 3 deep

[[noreturn]] void bad(const std::string& source, const std::string& what) { fail("safetensors", source + ": " + what); }

std::string quoted(const std::string& name) { return "'" + name + "'"; }

// Parses the header, rejecting duplicate keys (nlohmann would keep the last one silently) and
// absurd nesting.
json parse_header(const char* text, size_t n, const std::string& source) {
  std::vector<std::set<std::string>> keys;  // one set per open object
  auto cb = [&](int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start:
        if (depth > kMaxHeaderDepth)
          bad(source, "header JSON is nested deeper than " + std::to_string(kMaxHeaderDepth));
        keys.emplace_back();
        break;
      case json::parse_event_t::array_start:
        if (depth > kMaxHeaderDepth)
          bad(source, "header JSON is nested deeper than " + std::to_string(kMaxHeaderDepth));
        break;
      case json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      case json::parse_event_t::key:
        if (!keys.empty() && parsed.is_string()) {
          const auto& k = parsed.get_ref<const std::string&>();
          if (!keys.back().insert(k).second)
            bad(source, (depth == 1 ? "duplicate tensor name " : "duplicate key ") + quoted(k) + " in the header");
        }
        break;
      default: break;
    }
    return true;
  };
  try {
    return json::parse(text, text + n, cb);
  } catch (const json::exception& e) {
    bad(source, std::string("header is not valid JSON: ") + e.what());
  }
}

bool dtype_from_name(const std::string& s, DType* out) {
  for (int i = 0; i <= int(DType::u8); ++i)
    if (s == dtype_safetensors_name(DType(i))) {
      *out = DType(i);
      return true;
    }
  return false;
}

// A non-negative JSON integer that fits int64 (shapes) or uint64 (offsets).
uint64_t get_count(const json& v, uint64_t max, const std::string& source, const std::string& what) {
  if (v.is_number_unsigned()) {
    uint64_t x = v.get<uint64_t>();
    if (x > max) bad(source, what + " " + std::to_string(x) + " is too large");
    return x;
  }
  if (v.is_number_integer()) bad(source, what + " is negative (" + std::to_string(v.get<int64_t>()) + ")");
  bad(source, what + " is not a non-negative integer (" + std::string(v.type_name()) + ")");
}

const json& field(const json& entry, const char* key, const std::string& source, const std::string& tensor) {
  auto it = entry.find(key);
  if (it == entry.end()) bad(source, "tensor " + quoted(tensor) + " has no \"" + key + "\"");
  return *it;
}

SafeTensors::Entry parse_entry(const std::string& name, const json& v, size_t data_size, const std::string& source) {
  const std::string t = "tensor " + quoted(name);
  if (name.empty()) bad(source, "empty tensor name");
  if (!is_valid_utf8(name)) bad(source, "tensor name is not valid UTF-8");
  if (!v.is_object()) bad(source, t + ": entry is a " + v.type_name() + ", not an object");
  SafeTensors::Entry e;

  const json& dt = field(v, "dtype", source, name);
  if (!dt.is_string()) bad(source, t + ": \"dtype\" is not a string");
  if (!dtype_from_name(dt.get_ref<const std::string&>(), &e.dtype))
    bad(source, t + ": unknown dtype '" + dt.get<std::string>() + "' (supported: F64 F32 F16 BF16 I64 I32 I8 U8)");

  const json& sh = field(v, "shape", source, name);
  if (!sh.is_array()) bad(source, t + ": \"shape\" is not an array");
  uint64_t numel = 1, span = 1;  // span = prod(max(d, 1)) must fit int64 so strides never overflow
  bool overflow = false;
  for (const json& d : sh) {
    uint64_t x = get_count(d, uint64_t(std::numeric_limits<int64_t>::max()), source, t + ": shape dimension");
    e.shape.push_back(int64_t(x));
    overflow |= __builtin_mul_overflow(span, std::max<uint64_t>(x, 1), &span);
    numel = numel * x;  // wraps only when span overflowed too, which is rejected below
  }
  if (overflow || span > uint64_t(std::numeric_limits<int64_t>::max()))
    bad(source, t + ": shape " + shape_str(e.shape) + " has too many elements (overflow)");
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t(dtype_size(e.dtype)), &nbytes))
    bad(source, t + ": shape " + shape_str(e.shape) + " needs more bytes than fit in 64 bits (overflow)");

  const json& off = field(v, "data_offsets", source, name);
  if (!off.is_array() || off.size() != 2) bad(source, t + ": \"data_offsets\" is not an array [begin, end]");
  e.begin = get_count(off[0], std::numeric_limits<uint64_t>::max(), source, t + ": data offset begin");
  e.end = get_count(off[1], std::numeric_limits<uint64_t>::max(), source, t + ": data offset end");
  const std::string range = "[" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "]";
  if (e.begin > e.end) bad(source, t + ": data_offsets " + range + " have begin > end");
  if (e.end > data_size)
    bad(source,
        t + ": data_offsets " + range + " out of range of the data region (" + std::to_string(data_size) + " bytes)");
  if (e.end - e.begin != nbytes)
    bad(source, t + ": byte size " + std::to_string(e.end - e.begin) + " of data_offsets " + range + " != numel " +
                    std::to_string(numel) + " * dtype size " + std::to_string(dtype_size(e.dtype)) + " for shape " +
                    shape_str(e.shape));
  return e;
}

void check_no_overlap(const std::map<std::string, SafeTensors::Entry>& entries, const std::string& source) {
  std::vector<std::pair<const std::string*, const SafeTensors::Entry*>> v;  // non-empty tensors
  for (const auto& [name, e] : entries)
    if (e.end > e.begin) v.emplace_back(&name, &e);
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.second->begin < b.second->begin; });
  for (size_t i = 1; i < v.size(); ++i) {
    // Sorted by begin, so non-overlap of neighbours is enough (each ends before the next begins).
    if (v[i].second->begin < v[i - 1].second->end)
      bad(source, "tensors " + quoted(*v[i - 1].first) + " and " + quoted(*v[i].first) + " overlap (bytes [" +
                      std::to_string(v[i - 1].second->begin) + ", " + std::to_string(v[i - 1].second->end) + ") and [" +
                      std::to_string(v[i].second->begin) + ", " + std::to_string(v[i].second->end) + "))");
  }
}

}  // namespace

bool is_valid_utf8(const std::string& s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size(), i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
      len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
      len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
      len = 4, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    if (n - i < len) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
      cp = cp << 6 | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += len;
  }
  return true;
}

// ---- SafeTensors ------------------------------------------------------------------------------------
SafeTensors SafeTensors::open(const std::string& path) {
  auto file = std::make_shared<MappedFile>(path);
  const uint8_t* data = file->data();
  size_t size = file->size();
  return parse(data, size, std::move(file), path);
}

SafeTensors SafeTensors::parse(std::shared_ptr<const std::vector<uint8_t>> bytes, const std::string& source) {
  SSM_CHECK(bytes != nullptr, "safetensors", source + ": null byte buffer");
  const uint8_t* data = bytes->data();
  size_t size = bytes->size();
  return parse(data, size, std::move(bytes), source);
}

SafeTensors SafeTensors::parse(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                               const std::string& source) {
  if (size < 8)
    bad(source, "file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length (truncated?)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(data[i]) << (8 * i);
  if (n > kMaxHeaderBytes)
    bad(source, "header length " + std::to_string(n) + " is absurdly large (limit " + std::to_string(kMaxHeaderBytes) +
                    " bytes; not a safetensors file?)");
  if (n > size - 8)
    bad(source, "header length " + std::to_string(n) + " runs past the end of the file (" + std::to_string(size) +
                    " bytes; truncated?)");
  json header = parse_header(reinterpret_cast<const char*>(data) + 8, size_t(n), source);
  if (!header.is_object()) bad(source, std::string("header is a JSON ") + header.type_name() + ", not an object");

  SafeTensors st;
  st.source_ = source;
  st.owner_ = std::move(owner);
  st.data_ = data + 8 + n;
  st.data_size_ = size - 8 - size_t(n);
  for (const auto& [name, v] : header.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) bad(source, "\"__metadata__\" is not an object");
      for (const auto& [k, val] : v.items()) {
        if (!val.is_string()) bad(source, "metadata value of '" + k + "' is not a string");
        if (!is_valid_utf8(k) || !is_valid_utf8(val.get_ref<const std::string&>()))
          bad(source, "metadata is not valid UTF-8");
        st.metadata_[k] = val.get<std::string>();
      }
      continue;
    }
    st.entries_.emplace(name, parse_entry(name, v, st.data_size_, source));
  }
  check_no_overlap(st.entries_, source);
  return st;
}

const SafeTensors::Entry& SafeTensors::entry(const std::string& name) const {
  auto it = entries_.find(name);
  if (it == entries_.end())
    bad(source_, "no tensor named " + quoted(name) + " (the file has " + std::to_string(entries_.size()) + " tensors)");
  return it->second;
}

Tensor SafeTensors::get(const std::string& name) const {
  const Entry& e = entry(name);
  size_t nbytes = size_t(e.end - e.begin);
  if (nbytes == 0) return Tensor::empty(e.shape, e.dtype);
  const uint8_t* p = data_ + e.begin;
  if (reinterpret_cast<uintptr_t>(p) % dtype_size(e.dtype) == 0) {
    // Zero-copy: the storage keeps the mapping (or buffer) alive; it is read-only.
    auto storage =
        Storage::borrow(const_cast<uint8_t*>(p), nbytes, /*read_only=*/true, std::const_pointer_cast<void>(owner_));
    return Tensor::from_storage(std::move(storage), 0, e.shape, e.dtype);
  }
  Tensor t = Tensor::empty(e.shape, e.dtype);  // misaligned for its dtype: copy
  std::memcpy(t.raw_data(), p, nbytes);
  return t;
}

std::vector<std::string> SafeTensors::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& kv : entries_) out.push_back(kv.first);
  return out;
}

// ---- ShardedSafeTensors -----------------------------------------------------------------------------
namespace {

// A shard file named by an index must stay inside the model directory.
bool safe_relative_name(const std::string& f) {
  if (f.empty() || f[0] == '/' || !is_valid_utf8(f) || f.find('\0') != std::string::npos) return false;
  for (const auto& part : fs::path(f))
    if (part == "..") return false;
  return true;
}

}  // namespace

ShardedSafeTensors ShardedSafeTensors::open(const std::string& path) {
  std::error_code ec;
  std::string index_path, single_path;
  if (fs::is_directory(path, ec)) {
    fs::path dir(path);
    if (fs::exists(dir / "model.safetensors.index.json", ec))
      index_path = (dir / "model.safetensors.index.json").string();
    else if (fs::exists(dir / "model.safetensors", ec))
      single_path = (dir / "model.safetensors").string();
    else
      fail("safetensors", path + ": directory has neither model.safetensors.index.json nor model.safetensors");
  } else if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0) {
    index_path = path;
  } else {
    single_path = path;
  }

  ShardedSafeTensors out;
  if (!single_path.empty()) {
    out.source_ = single_path;
    out.shards_.push_back(SafeTensors::open(single_path));
    out.metadata_ = out.shards_[0].metadata();
    for (const auto& n : out.shards_[0].names()) out.where_[n] = 0;
    return out;
  }

  out.source_ = index_path;
  json index = load_json_file(index_path);
  if (!index.is_object()) bad(index_path, "index is not a JSON object");
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object()) bad(index_path, "index has no \"weight_map\" object");
  auto meta = index.find("metadata");
  if (meta != index.end() && !meta->is_null()) {
    if (!meta->is_object()) bad(index_path, "index \"metadata\" is not an object");
    for (const auto& [k, v] : meta->items()) out.metadata_[k] = v.is_string() ? v.get<std::string>() : v.dump();
  }
  fs::path dir = fs::path(index_path).parent_path();
  std::map<std::string, size_t> shard_index;  // file name -> index into shards_
  for (const auto& [name, file] : wm->items()) {
    if (!file.is_string()) bad(index_path, "weight_map entry " + quoted(name) + " is not a file name string");
    const std::string& f = file.get_ref<const std::string&>();
    if (!safe_relative_name(f))
      bad(index_path, "weight_map entry " + quoted(name) + " names shard '" + f + "' outside the model directory");
    auto it = shard_index.find(f);
    if (it == shard_index.end()) {
      out.shards_.push_back(SafeTensors::open((dir / f).string()));
      it = shard_index.emplace(f, out.shards_.size() - 1).first;
    }
    if (!out.shards_[it->second].has(name))
      bad(index_path, "weight_map puts tensor " + quoted(name) + " in shard '" + f + "', which has no such tensor");
    out.where_[name] = it->second;
  }
  return out;
}

const SafeTensors& ShardedSafeTensors::shard_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end())
    bad(source_, "no tensor named " + quoted(name) + " (" + std::to_string(where_.size()) + " tensors in " +
                     std::to_string(shards_.size()) + " shard(s))");
  return shards_[it->second];
}

Tensor ShardedSafeTensors::get(const std::string& name) const { return shard_of(name).get(name); }
DType ShardedSafeTensors::dtype(const std::string& name) const { return shard_of(name).dtype(name); }
Shape ShardedSafeTensors::shape(const std::string& name) const { return shard_of(name).shape(name); }

std::vector<std::string> ShardedSafeTensors::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

// ---- writer -----------------------------------------------------------------------------------------
namespace {

void write_all(int fd, const void* data, size_t n, const std::string& tmp) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t(1) << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("safetensors", "writing '" + tmp + "' failed: " + std::strerror(w < 0 ? errno : EIO));
    p += w;
    n -= size_t(w);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  // Validate and gather contiguous CPU copies before touching the file system.
  std::set<std::string> seen;
  std::vector<Tensor> data(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, t] = tensors[i];
    const std::string what = path + ": tensor " + quoted(name);
    SSM_CHECK(!name.empty(), "safetensors", path + ": empty tensor name");
    SSM_CHECK(is_valid_utf8(name), "safetensors", path + ": tensor name is not valid UTF-8");
    SSM_CHECK(name != "__metadata__", "safetensors", path + ": '__metadata__' is reserved, not a tensor name");
    SSM_CHECK(seen.insert(name).second, "safetensors", what + " appears twice (duplicate name)");
    SSM_CHECK(t.defined(), "safetensors", what + " is undefined");
    Tensor c = t.device() == Device::cpu ? t : t.to(Device::cpu);
    data[i] = c.contiguous();
  }
  for (const auto& [k, v] : metadata)
    SSM_CHECK(is_valid_utf8(k) && is_valid_utf8(v), "safetensors", path + ": metadata '" + k + "' is not valid UTF-8");

  // Largest dtypes first: every offset is then a multiple of the tensor's dtype size.
  std::vector<size_t> order(tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return dtype_size(data[a].dtype()) > dtype_size(data[b].dtype()); });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (size_t i : order) {
    uint64_t nb = data[i].nbytes();
    header[tensors[i].first] = {{"dtype", dtype_safetensors_name(data[i].dtype())},
                                {"shape", data[i].shape()},
                                {"data_offsets", {offset, offset + nb}}};
    offset += nb;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // 8 + header length is a multiple of 8
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  // The pid and a per-process counter keep concurrent writers (processes or threads) apart.
  static std::atomic<uint64_t> counter{0};
  const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  SSM_CHECK(fd >= 0, "safetensors", "cannot create '" + tmp + "': " + std::strerror(errno));
  try {
    write_all(fd, len, 8, tmp);
    write_all(fd, text.data(), text.size(), tmp);
    for (size_t i : order) write_all(fd, data[i].raw_data(), data[i].nbytes(), tmp);
    SSM_CHECK(::fsync(fd) == 0, "safetensors", "fsync of '" + tmp + "' failed: " + std::strerror(errno));
    int rc = ::close(fd);
    fd = -1;
    SSM_CHECK(rc == 0, "safetensors", "closing '" + tmp + "' failed: " + std::strerror(errno));
    SSM_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "safetensors",
              "cannot rename '" + tmp + "' to '" + path + "': " + std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable (best effort: the file is already complete and in place).
  std::string dir = fs::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace ssm::io
