// ssm.cpp — torch.save checkpoint reader: ZIP + safe unpickler + strided views. See pytorch_bin.h.
#include "ssm/pytorch_bin.h"

#include <cstring>
#include <fstream>
#include <unordered_set>

#include "io/pickle.h"
#include "io/zip.h"
#include "ssm/safetensors.h"
#include "tensor/tensor_impl.h"

namespace ssm::io {

namespace {

using pickle::Kind;
using pickle::Unpickler;
using pickle::Value;

constexpr int kStorageExt = 1, kTensorExt = 2;
constexpr size_t kMaxDims = 64;
constexpr int kMaxNesting = 32;

[[noreturn]] void bad(const std::string& source, const std::string& what) { fail("pytorch_bin", source + ": " + what); }

struct StorageClass {
  const char* name;
  DType dtype;
};
constexpr StorageClass kStorageClasses[] = {
    {"FloatStorage", DType::f32},  {"HalfStorage", DType::f16}, {"BFloat16Storage", DType::bf16},
    {"DoubleStorage", DType::f64}, {"LongStorage", DType::i64}, {"IntStorage", DType::i32},
    {"ByteStorage", DType::u8},    {"CharStorage", DType::i8},
};

const StorageClass* storage_class(const std::string& module, const std::string& name) {
  if (module != "torch") return nullptr;
  for (const StorageClass& c : kStorageClasses)
    if (name == c.name) return &c;
  return nullptr;
}

bool is_global(const Value* v, const char* module, const char* name) {
  return v->kind == Kind::global && v->s == module && v->s2 == name;
}

// One persistent id: a typed view of a whole `data/<key>` record.
struct StorageRef {
  std::shared_ptr<Storage> storage;
  DType dtype;
  int64_t numel;  // in elements of dtype
  std::string key;
};

class TorchHooks : public pickle::Hooks {
 public:
  TorchHooks(const ZipArchive& zip, std::string prefix, std::shared_ptr<void> owner, bool check_crc)
      : zip_(zip), prefix_(std::move(prefix)), owner_(std::move(owner)), check_crc_(check_crc) {}

  void check_global(Unpickler& u, const std::string& module, const std::string& name) override {
    if ((module == "collections" && name == "OrderedDict") ||
        (module == "torch._utils" && (name == "_rebuild_tensor_v2" || name == "_rebuild_parameter")) ||
        storage_class(module, name))
      return;
    u.error("the pickle tries to call " + module + "." + name +
            ", which is not allowed (a state dict needs only collections.OrderedDict, "
            "torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter and the torch *Storage types)");
  }

  Value* persistent_load(Unpickler& u, Value* pid) override {
    const auto& it = pid->items;
    if (pid->kind != Kind::tuple || it.size() != 5 || it[0]->kind != Kind::string || it[0]->s != "storage" ||
        it[1]->kind != Kind::global || it[2]->kind != Kind::string || it[3]->kind != Kind::string ||
        it[4]->kind != Kind::integer)
      u.error("persistent id is not a ('storage', storage type, key, location, numel) tuple");
    const StorageClass* cls = storage_class(it[1]->s, it[1]->s2);
    if (!cls) u.error(it[1]->s + "." + it[1]->s2 + " is not a storage type");
    const std::string& key = it[2]->s;
    int64_t numel = it[4]->i;
    if (numel < 0) u.error("storage '" + key + "' has a negative size " + std::to_string(numel));
    const ZipEntry* entry = zip_.find(prefix_ + "data/" + key);
    if (!entry) u.error("storage '" + key + "' is missing (no entry '" + prefix_ + "data/" + key + "' in the archive)");
    size_t esize = dtype_size(cls->dtype);
    if (uint64_t(numel) > entry->size / esize || uint64_t(numel) * esize != entry->size)
      u.error("storage '" + key + "' holds " + std::to_string(entry->size) + " bytes but its persistent id says " +
              std::to_string(numel) + " x " + dtype_name(cls->dtype));
    auto& st = storages_[key];
    if (!st) {
      ZipArchive::Bytes b = zip_.read(*entry, check_crc_);
      if (reinterpret_cast<uintptr_t>(b.data) % 8 == 0) {
        st = Storage::borrow(const_cast<uint8_t*>(b.data), b.size, /*read_only=*/true, owner_);
      } else {  // not written with torch's 64-byte alignment: one aligned copy of the whole record
        st = Storage::allocate(b.size, Device::cpu);
        if (b.size) std::memcpy(st->data(), b.data, b.size);
      }
    }
    refs_.push_back({st, cls->dtype, numel, key});
    Value* v = u.make(Kind::external);
    v->ext_type = kStorageExt;
    v->ext_index = refs_.size() - 1;
    return v;
  }

  Value* call(Unpickler& u, Value* fn, Value* args) override {
    if (is_global(fn, "collections", "OrderedDict")) {
      if (!args->items.empty()) u.error("collections.OrderedDict called with arguments");
      return u.make(Kind::dict);
    }
    if (is_global(fn, "torch._utils", "_rebuild_tensor_v2")) return rebuild_tensor(u, args->items);
    if (is_global(fn, "torch._utils", "_rebuild_parameter")) {
      if (args->items.size() != 3 || !is_tensor(args->items[0]))
        u.error("torch._utils._rebuild_parameter expects (tensor, requires_grad, hooks)");
      return args->items[0];
    }
    u.error(fn->s + "." + fn->s2 + " cannot be called here (it may only appear inside a persistent id)");
  }

  void build(Unpickler& u, Value* obj, Value* state) override {
    // OrderedDict's state is its __dict__ (a state dict's `_metadata`): irrelevant to the weights.
    if (obj->kind != Kind::dict)
      u.error(std::string("BUILD on a ") + pickle::kind_name(obj->kind) + " is not supported");
    if (state->kind != Kind::dict && state->kind != Kind::none)
      u.error(std::string("BUILD with a ") + pickle::kind_name(state->kind) + " state is not supported");
  }

  static bool is_tensor(const Value* v) { return v->kind == Kind::external && v->ext_type == kTensorExt; }
  const Tensor& tensor(const Value* v) const { return tensors_[v->ext_index]; }

 private:
  Value* rebuild_tensor(Unpickler& u, const std::vector<Value*>& a) {
    const char* sig =
        "torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])";
    if (a.size() != 6 && a.size() != 7) u.error(std::string("expected ") + sig);
    if (a[0]->kind != Kind::external || a[0]->ext_type != kStorageExt || a[1]->kind != Kind::integer ||
        a[2]->kind != Kind::tuple || a[3]->kind != Kind::tuple || a[4]->kind != Kind::boolean ||
        a[5]->kind != Kind::dict || (a.size() == 7 && a[6]->kind != Kind::dict && a[6]->kind != Kind::none))
      u.error(std::string("bad argument types for ") + sig);
    const StorageRef& ref = refs_[a[0]->ext_index];
    const std::string what = "tensor on storage '" + ref.key + "'";
    size_t ndim = a[2]->items.size();
    if (ndim > kMaxDims) u.error(what + " has " + std::to_string(ndim) + " dimensions (at most 64 supported)");
    if (a[3]->items.size() != ndim) u.error(what + ": size and stride have different lengths");
    Shape shape(ndim), stride(ndim);
    int64_t numel = 1;
    for (size_t d = 0; d < ndim; ++d) {
      const Value* sz = a[2]->items[d];
      const Value* st = a[3]->items[d];
      if (sz->kind != Kind::integer || st->kind != Kind::integer) u.error(what + ": size and stride must be integers");
      if (sz->i < 0 || st->i < 0) u.error(what + ": negative size or stride");
      shape[d] = sz->i;
      stride[d] = st->i;
      if (__builtin_mul_overflow(numel, shape[d], &numel)) u.error(what + ": element count overflows");
    }
    int64_t offset = a[1]->i;
    if (offset < 0 || offset > ref.numel)
      u.error(what + ": storage offset " + std::to_string(offset) + " is outside its " + std::to_string(ref.numel) +
              " elements");
    size_t esize = dtype_size(ref.dtype);
    if (numel == 0) return push_tensor(u, Tensor::empty(shape, ref.dtype));  // no element to read

    int64_t last = offset;  // the highest element index the view touches
    for (size_t d = 0; d < ndim; ++d) {
      int64_t span;
      if (__builtin_mul_overflow(shape[d] - 1, stride[d], &span) || __builtin_add_overflow(last, span, &last))
        u.error(what + ": size/stride arithmetic overflows");
    }
    if (last >= ref.numel)
      u.error(what + " of size " + shape_str(shape) + ", stride " + shape_str(stride) + " at offset " +
              std::to_string(offset) + " reaches element " + std::to_string(last) + " past its storage of " +
              std::to_string(ref.numel) + " elements");
    if (numel > int64_t(SIZE_MAX / 2 / esize)) u.error(what + " is too large");
    size_t byte_offset = size_t(offset) * esize;  // <= storage bytes, checked above
    const uint8_t* first = static_cast<const uint8_t*>(ref.storage->data()) + byte_offset;

    SSM_CHECK(reinterpret_cast<uintptr_t>(first) % esize == 0, "pytorch_bin",
              "misaligned storage");  // see persistent_load
    bool contiguous = true;
    int64_t expect = 1;
    for (size_t d = ndim; d-- > 0;) {
      if (shape[d] != 1 && stride[d] != expect) contiguous = false;
      expect *= shape[d];
    }
    if (contiguous) return push_tensor(u, Tensor::from_storage(ref.storage, byte_offset, shape, ref.dtype));
    auto impl = std::make_shared<TensorImpl>();  // a strided view, validated above
    impl->storage = ref.storage;
    impl->byte_offset = byte_offset;
    impl->shape = shape;
    impl->strides = stride;
    impl->dtype = ref.dtype;
    return push_tensor(u, TensorImpl::make(std::move(impl)));
  }

  Value* push_tensor(Unpickler& u, Tensor t) {
    tensors_.push_back(std::move(t));
    Value* v = u.make(Kind::external);
    v->ext_type = kTensorExt;
    v->ext_index = tensors_.size() - 1;
    return v;
  }

  const ZipArchive& zip_;
  std::string prefix_;
  std::shared_ptr<void> owner_;
  bool check_crc_;
  std::vector<StorageRef> refs_;
  std::unordered_map<std::string, std::shared_ptr<Storage>> storages_;  // key -> the record's bytes
  std::vector<Tensor> tensors_;
};

struct Flattener {
  const std::string& source;
  const TorchHooks& hooks;
  std::vector<std::pair<std::string, Tensor>>& out;
  std::unordered_map<std::string, size_t>& index;
  std::unordered_set<const Value*> seen;  // containers already flattened

  void add(const Value* v, const std::string& name, int depth) {
    if (TorchHooks::is_tensor(v)) {
      if (!index.emplace(name, out.size()).second) bad(source, "two tensors are named '" + name + "'");
      out.emplace_back(name, hooks.tensor(v));
      return;
    }
    if (v->kind != Kind::dict && v->kind != Kind::list && v->kind != Kind::tuple) return;  // not a weight
    if (depth > kMaxNesting) bad(source, "containers nested deeper than " + std::to_string(kMaxNesting) + " levels");
    if (!seen.insert(v).second) bad(source, "a container appears twice in the state dict (shared or cyclic reference)");
    std::string prefix = name.empty() ? "" : name + ".";
    if (v->kind == Kind::dict) {
      for (size_t k = 0; k < v->items.size(); k += 2) {
        const Value* key = v->items[k];
        std::string ks;
        if (key->kind == Kind::string) {
          if (!is_valid_utf8(key->s)) bad(source, "a state dict key is not valid UTF-8");
          ks = key->s;
        } else if (key->kind == Kind::integer) {
          ks = std::to_string(key->i);
        } else {
          bad(source, std::string("state dict key of type ") + pickle::kind_name(key->kind));
        }
        add(v->items[k + 1], prefix + ks, depth + 1);
      }
    } else {
      for (size_t k = 0; k < v->items.size(); ++k) add(v->items[k], prefix + std::to_string(k), depth + 1);
    }
  }
};

}  // namespace

PytorchBin PytorchBin::parse(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                             const std::string& source, const Options& options) {
  if (data == nullptr) size = 0;
  if (!looks_like_zip(data, size)) {
    if (size >= 2 && data[0] == 0x80 && data[1] <= 5)
      bad(source,
          "legacy (pre PyTorch 1.6) torch.save format is not supported: load it with torch and save it again "
          "with torch.save (or as safetensors)");
    bad(source, "not a torch.save checkpoint (neither a ZIP archive nor a pickle)");
  }
  ZipArchive zip(data, size, source);

  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : zip.entries()) {
    const std::string& n = e.name;
    bool top = n == "data.pkl" ||
               (n.size() > 9 && n.compare(n.size() - 9, 9, "/data.pkl") == 0 && n.find('/') == n.size() - 9);
    if (!top) continue;
    if (pkl) bad(source, "two data.pkl entries ('" + pkl->name + "' and '" + n + "')");
    pkl = &e;
  }
  if (!pkl) bad(source, "no <folder>/data.pkl in the archive: not a torch.save checkpoint");
  std::string prefix = pkl->name.substr(0, pkl->name.size() - 8);  // "archive/" or ""

  if (const ZipEntry* bo = zip.find(prefix + "byteorder")) {
    ZipArchive::Bytes b = zip.read(*bo, true);
    std::string order(reinterpret_cast<const char*>(b.data), b.size);
    if (order == "big") bad(source, "big-endian checkpoints are not supported");
    if (order != "little") bad(source, "unknown byteorder '" + order.substr(0, 16) + "'");
  }

  ZipArchive::Bytes p = zip.read(*pkl, options.check_pickle_crc);
  TorchHooks hooks(zip, prefix, std::const_pointer_cast<void>(owner), options.check_data_crc);
  Unpickler u("pytorch_bin", source, hooks);
  Value* root = u.load(p.data, p.size);
  if (root->kind != Kind::dict) {
    if (TorchHooks::is_tensor(root)) bad(source, "the file holds a single tensor, not a state dict");
    bad(source, std::string("the file holds a ") + pickle::kind_name(root->kind) + ", not a state dict");
  }

  PytorchBin r;
  r.source_ = source;
  Flattener{source, hooks, r.tensors_, r.index_, {}}.add(root, "", 0);
  for (const auto& [name, t] : r.tensors_) r.names_.push_back(name);
  return r;
}

PytorchBin PytorchBin::parse(std::shared_ptr<const std::vector<uint8_t>> bytes, const std::string& source) {
  SSM_CHECK(bytes != nullptr, "pytorch_bin", source + ": null buffer");
  const uint8_t* d = bytes->data();
  size_t n = bytes->size();
  return parse(d, n, std::shared_ptr<const void>(bytes, bytes.get()), source);
}

PytorchBin PytorchBin::open(const std::string& path, const Options& options) {
  auto mf = std::make_shared<MappedFile>(path);
  const uint8_t* d = mf->data();
  size_t n = mf->size();
  return parse(d, n, std::shared_ptr<const void>(mf, mf.get()), path, options);
}

Tensor PytorchBin::get(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) bad(source_, "no tensor named '" + name + "'");
  return tensors_[it->second].second;
}

std::vector<std::pair<std::string, Tensor>> load_pytorch_bin(const std::string& path) {
  return PytorchBin::open(path).tensors();
}

bool looks_like_pytorch_bin(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  uint8_t h[4] = {0, 0, 0, 0};
  if (!f.read(reinterpret_cast<char*>(h), 4)) return false;
  return looks_like_zip(h, 4) || (h[0] == 0x80 && h[1] <= 5);
}

}  // namespace ssm::io
