// Test helper: writes PyTorch torch.save-style checkpoints (`pytorch_model.bin`) from scratch, so tests
// can make checkpoints without Python. Independent of the reader in src/io: its own pickle emitter,
// its own stored-ZIP writer and its own (bitwise) CRC-32.
//
// The layout mirrors what torch.save (PyTorch 2.x) writes, as seen in files it produced:
//   <folder>/data.pkl        protocol-2 pickle: OrderedDict of name -> _rebuild_tensor_v2(...)
//   <folder>/byteorder       "little"
//   <folder>/data/<key>      raw little-endian storage bytes, each aligned to 64 bytes in the file
//   <folder>/version         "3\n"
// Usage:
//   ssm::testing::TorchCheckpointWriter w;
//   w.add("layer.weight", tensor);                       // its own storage
//   std::string k = w.add_storage(DType::f32, ptr, n);   // a raw storage, then views over it:
//   w.add_view("t", k, /*offset=*/2, {3, 2}, {1, 3});
//   w.save(path);  // or w.bytes()
#pragma once
#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "ssm/tensor.h"

namespace ssm::testing {

// CRC-32 (IEEE), bit by bit: deliberately not the table-driven one of src/io/zip.cpp.
inline uint32_t crc32_bitwise(const void* data, size_t n) {
  const uint8_t* p = static_cast<const uint8_t*>(data);
  uint32_t c = 0xffffffffu;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// Emits pickle opcodes into a byte string.
struct PickleOut {
  std::string b;
  PickleOut& op(uint8_t o) {
    b.push_back(char(o));
    return *this;
  }
  PickleOut& u8(uint8_t v) { return op(v); }
  PickleOut& le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) b.push_back(char((v >> (8 * i)) & 0xff));
    return *this;
  }
  PickleOut& raw(const std::string& s) {
    b += s;
    return *this;
  }
  PickleOut& proto(int p) { return op(0x80).u8(uint8_t(p)); }
  PickleOut& mark() { return op('('); }
  PickleOut& stop() { return op('.'); }
  PickleOut& none() { return op('N'); }
  PickleOut& boolean(bool v) { return op(v ? 0x88 : 0x89); }
  PickleOut& integer(int64_t v) {  // the smallest encoding, as CPython's pickler picks it
    if (v >= 0 && v <= 0xff) return op('K').u8(uint8_t(v));
    if (v >= 0 && v <= 0xffff) return op('M').le(uint64_t(v), 2);
    if (v >= INT32_MIN && v <= INT32_MAX) return op('J').le(uint64_t(uint32_t(int32_t(v))), 4);
    int n = 1;
    while (n < 8 && !(v >= -(int64_t(1) << (8 * n - 1)) && v < (int64_t(1) << (8 * n - 1)))) ++n;
    return op(0x8a).u8(uint8_t(n)).le(uint64_t(v), n);
  }
  PickleOut& binfloat(double v) {
    uint64_t u;
    std::memcpy(&u, &v, 8);
    op('G');
    for (int i = 7; i >= 0; --i) b.push_back(char((u >> (8 * i)) & 0xff));
    return *this;
  }
  PickleOut& str(const std::string& s) { return op('X').le(s.size(), 4).raw(s); }  // BINUNICODE
  PickleOut& short_str(const std::string& s) { return op(0x8c).u8(uint8_t(s.size())).raw(s); }
  PickleOut& global(const std::string& m, const std::string& n) { return op('c').raw(m + "\n" + n + "\n"); }
  PickleOut& put(uint32_t i) { return i < 256 ? op('q').u8(uint8_t(i)) : op('r').le(i, 4); }
  PickleOut& get(uint32_t i) { return i < 256 ? op('h').u8(uint8_t(i)) : op('j').le(i, 4); }
  PickleOut& empty_tuple() { return op(')'); }
  PickleOut& tuple() { return op('t'); }
  PickleOut& tuple_n(int n) { return op(uint8_t(0x84 + n)); }  // TUPLE1..3
  PickleOut& empty_dict() { return op('}'); }
  PickleOut& empty_list() { return op(']'); }
  PickleOut& setitem() { return op('s'); }
  PickleOut& setitems() { return op('u'); }
  PickleOut& append() { return op('a'); }
  PickleOut& reduce() { return op('R'); }
  PickleOut& binpersid() { return op('Q'); }
  PickleOut& build() { return op('b'); }
};

// One file of a ZIP archive.
struct ZipFile {
  std::string name, data;
  uint16_t method = 0;  // 0 = stored (a nonzero method only labels the entry; the data is as given)
};

struct ZipOptions {
  size_t alignment = 64;  // data start alignment through an 'FB' padding extra field (torch uses 64); 1 = none
  bool zip64 = false;     // force ZIP64 records (as torch writes for files past 4 GiB)
};

// A ZIP archive of the given files, data stored as given.
inline std::string write_zip(const std::vector<ZipFile>& files, const ZipOptions& opt = {}) {
  std::string out, cd;
  auto le = [](std::string& s, uint64_t v, int n) {
    for (int i = 0; i < n; ++i) s.push_back(char((v >> (8 * i)) & 0xff));
  };
  for (const ZipFile& f : files) {
    uint64_t offset = out.size();
    uint32_t crc = crc32_bitwise(f.data.data(), f.data.size());
    std::string lextra;
    if (opt.zip64) {  // local ZIP64 extra: size, compressed size
      le(lextra, 0x0001, 2);
      le(lextra, 16, 2);
      le(lextra, f.data.size(), 8);
      le(lextra, f.data.size(), 8);
    }
    if (opt.alignment > 1) {
      size_t start = offset + 30 + f.name.size() + lextra.size() + 4;
      size_t pad = (opt.alignment - start % opt.alignment) % opt.alignment;
      le(lextra, 0x4246, 2);  // "FB"
      le(lextra, pad, 2);
      lextra.append(pad, 'Z');
    }
    uint32_t size32 = opt.zip64 ? 0xffffffffu : uint32_t(f.data.size());
    le(out, 0x04034b50, 4);
    le(out, opt.zip64 ? 45 : 20, 2);  // version needed
    le(out, 0x0800, 2);               // flags: UTF-8 names
    le(out, f.method, 2);
    le(out, 0, 4);  // time, date
    le(out, crc, 4);
    le(out, size32, 4);
    le(out, size32, 4);
    le(out, f.name.size(), 2);
    le(out, lextra.size(), 2);
    out += f.name + lextra + f.data;

    std::string cextra;
    if (opt.zip64) {
      le(cextra, 0x0001, 2);
      le(cextra, 24, 2);
      le(cextra, f.data.size(), 8);
      le(cextra, f.data.size(), 8);
      le(cextra, offset, 8);
    }
    le(cd, 0x02014b50, 4);
    le(cd, 0x031e, 2);  // made by
    le(cd, opt.zip64 ? 45 : 20, 2);
    le(cd, 0x0800, 2);
    le(cd, f.method, 2);
    le(cd, 0, 4);
    le(cd, crc, 4);
    le(cd, size32, 4);
    le(cd, size32, 4);
    le(cd, f.name.size(), 2);
    le(cd, cextra.size(), 2);
    le(cd, 0, 2);  // comment length
    le(cd, 0, 2);  // disk
    le(cd, 0, 2);  // internal attributes
    le(cd, 0, 4);  // external attributes
    le(cd, opt.zip64 ? 0xffffffffu : uint32_t(offset), 4);
    cd += f.name + cextra;
  }
  uint64_t cd_offset = out.size();
  out += cd;
  if (opt.zip64) {
    uint64_t z_offset = out.size();
    le(out, 0x06064b50, 4);
    le(out, 44, 8);
    le(out, 0x031e, 2);
    le(out, 45, 2);
    le(out, 0, 4);
    le(out, 0, 4);
    le(out, files.size(), 8);
    le(out, files.size(), 8);
    le(out, cd.size(), 8);
    le(out, cd_offset, 8);
    le(out, 0x07064b50, 4);  // locator
    le(out, 0, 4);
    le(out, z_offset, 8);
    le(out, 1, 4);
  }
  le(out, 0x06054b50, 4);
  le(out, 0, 2);
  le(out, 0, 2);
  le(out, opt.zip64 ? 0xffff : files.size(), 2);
  le(out, opt.zip64 ? 0xffff : files.size(), 2);
  le(out, opt.zip64 ? 0xffffffffu : cd.size(), 4);
  le(out, opt.zip64 ? 0xffffffffu : cd_offset, 4);
  le(out, 0, 2);
  return out;
}

// The torch storage class of a dtype ("FloatStorage", ...).
inline const char* torch_storage_class(DType t) {
  switch (t) {
    case DType::f32: return "FloatStorage";
    case DType::f16: return "HalfStorage";
    case DType::bf16: return "BFloat16Storage";
    case DType::f64: return "DoubleStorage";
    case DType::i64: return "LongStorage";
    case DType::i32: return "IntStorage";
    case DType::u8: return "ByteStorage";
    case DType::i8: return "CharStorage";
  }
  return "?";
}

class TorchCheckpointWriter {
 public:
  std::string folder = "archive";  // top-level folder of every entry (torch uses the file's stem)
  int protocol = 2;                // 2 (what torch.save uses) or 4 (SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE)
  bool metadata = true;            // end with BUILD {'_metadata': ...} as nn.Module.state_dict() does
  ZipOptions zip;

  // A storage of raw bytes; returns its key ("0", "1", ...).
  std::string add_storage(DType dtype, const void* data, size_t nbytes) {
    std::string key = std::to_string(storages_.size());
    const char* p = static_cast<const char*>(data);
    storages_.push_back({key, dtype, std::string(p, p + nbytes)});
    return key;
  }
  template <typename T>
  std::string add_storage(DType dtype, const std::vector<T>& v) {
    return add_storage(dtype, v.data(), v.size() * sizeof(T));
  }
  // A state-dict entry viewing storage `key` (offset and strides in elements).
  void add_view(const std::string& name, const std::string& key, int64_t offset, const Shape& size, const Shape& stride,
                bool parameter = false) {
    entries_.push_back({name, key, offset, size, stride, parameter});
  }
  // A state-dict entry with its own contiguous storage holding `t`'s values; returns the key.
  std::string add(const std::string& name, const Tensor& t, bool parameter = false) {
    Tensor c = t.contiguous();
    std::string key = add_storage(c.dtype(), c.raw_data(), c.nbytes());
    Shape stride(size_t(c.dim()), 1);
    for (int64_t d = c.dim() - 2; d >= 0; --d) stride[size_t(d)] = stride[size_t(d) + 1] * c.shape()[size_t(d) + 1];
    add_view(name, key, 0, c.shape(), stride, parameter);
    return key;
  }

  std::string pickle() const {
    PickleOut p;
    std::map<std::string, uint32_t> memo;
    uint32_t next = 0;
    auto put = [&](const std::string& id) {
      memo[id] = next;
      if (protocol >= 4)
        p.op(0x94);  // MEMOIZE
      else
        p.put(next);
      ++next;
    };
    auto str = [&](const std::string& s) {  // memoized like CPython does
      auto it = memo.find("s:" + s);
      if (it != memo.end()) {
        p.get(it->second);
        return;
      }
      if (protocol >= 4 && s.size() < 256)
        p.short_str(s);
      else
        p.str(s);
      put("s:" + s);
    };
    auto global = [&](const std::string& m, const std::string& n) {
      auto it = memo.find("g:" + m + "." + n);
      if (it != memo.end()) {
        p.get(it->second);
        return;
      }
      if (protocol >= 4) {
        str(m);
        str(n);
        p.op(0x93);  // STACK_GLOBAL
      } else {
        p.global(m, n);
      }
      put("g:" + m + "." + n);
    };
    auto tuple_of = [&](const Shape& s) {
      if (s.empty()) {
        p.empty_tuple();
        return;
      }
      if (s.size() > 3) p.mark();
      for (int64_t v : s) p.integer(v);
      if (s.size() > 3)
        p.tuple();
      else
        p.tuple_n(int(s.size()));
      put("t:" + std::to_string(next));
    };
    auto ordered_dict = [&] {
      global("collections", "OrderedDict");
      p.empty_tuple().reduce();
      put("o:" + std::to_string(next));
    };

    p.proto(protocol);
    if (protocol >= 4) p.op(0x95).le(0, 8);  // FRAME: one frame holding the rest (length patched below)
    ordered_dict();
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (i % 1000 == 0) p.mark();  // CPython batches SETITEMS by 1000
      const Entry& e = entries_[i];
      const Stored& s = storage(e.key);
      str(e.name);
      if (e.parameter) global("torch._utils", "_rebuild_parameter");
      global("torch._utils", "_rebuild_tensor_v2");
      p.mark();
      p.mark();
      str("storage");
      global("torch", torch_storage_class(s.dtype));
      str(s.key);
      str("cpu");
      p.integer(int64_t(s.bytes.size() / dtype_size(s.dtype)));
      p.tuple();
      put("p:" + std::to_string(next));
      p.binpersid();
      p.integer(e.offset);
      tuple_of(e.size);
      tuple_of(e.stride);
      p.boolean(false);
      ordered_dict();
      p.tuple();
      put("a:" + std::to_string(next));
      p.reduce();
      put("r:" + std::to_string(next));
      if (e.parameter) {
        p.boolean(true);
        ordered_dict();
        p.tuple_n(3).reduce();
        put("q:" + std::to_string(next));
      }
      if (i % 1000 == 999 || i + 1 == entries_.size()) p.setitems();
    }
    if (metadata) {  // {'_metadata': OrderedDict({'': {'version': 1}})}
      p.empty_dict();
      str("_metadata");
      ordered_dict();
      str("");
      p.empty_dict();
      str("version");
      p.integer(1);
      p.setitem().setitem().setitem().build();
    }
    p.stop();
    if (protocol >= 4)
      for (int i = 0; i < 8; ++i) p.b[size_t(3 + i)] = char(((p.b.size() - 11) >> (8 * i)) & 0xff);
    return p.b;
  }

  std::vector<ZipFile> files() const {
    std::vector<ZipFile> f;
    f.push_back({folder + "/data.pkl", pickle()});
    f.push_back({folder + "/byteorder", "little"});
    for (const Stored& s : storages_) f.push_back({folder + "/data/" + s.key, s.bytes});
    f.push_back({folder + "/version", "3\n"});
    return f;
  }
  std::string bytes() const { return write_zip(files(), zip); }
  void save(const std::string& path) const {
    std::string b = bytes();
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(b.data(), std::streamsize(b.size()));
    if (!f) throw std::runtime_error("cannot write " + path);
  }

 private:
  struct Stored {
    std::string key;
    DType dtype;
    std::string bytes;
  };
  struct Entry {
    std::string name, key;
    int64_t offset;
    Shape size, stride;
    bool parameter;
  };
  const Stored& storage(const std::string& key) const {
    for (const Stored& s : storages_)
      if (s.key == key) return s;
    throw std::runtime_error("no storage " + key);
  }
  std::vector<Stored> storages_;
  std::vector<Entry> entries_;
};

}  // namespace ssm::testing
