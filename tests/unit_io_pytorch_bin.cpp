// pytorch_bin: torch.save checkpoints read back exactly — every dtype, strided views over shared
// storages, storage offsets, parameters, protocol 4, ZIP64 records, unaligned archives — and two
// files written by PyTorch 2.11 itself (fuzz/corpus/pytorch_bin/torch_basic*.bin, made on the device
// machine by the script quoted at TorchWritten below). Values are compared bit for bit: a loader
// that copies bytes has no rounding, so the tolerance is zero.
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "pytorch_bin_writer.h"
#include "ssm/pytorch_bin.h"
#include "testing.h"

using ssm::DType;
using ssm::Shape;
using ssm::Tensor;
using ssm::io::PytorchBin;
using ssm::testing::TorchCheckpointWriter;

namespace {

std::string temp_path(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() / ("ssm_pytorch_bin_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

PytorchBin parse(const std::string& bytes, const std::string& source = "mem.bin") {
  auto buf = std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end());
  return PytorchBin::parse(buf, source);
}

// The raw bytes of a contiguous copy of t.
std::string bytes_of(const Tensor& t) {
  Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.raw_data()), c.nbytes());
}

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

// Element [i] of a strided view computed from the storage directly: storage[offset + sum idx*stride].
std::vector<float> gather(const std::vector<float>& storage, int64_t offset, const Shape& size, const Shape& stride) {
  std::vector<float> out;
  int64_t n = ssm::shape_numel(size);
  std::vector<int64_t> idx(size.size(), 0);
  for (int64_t k = 0; k < n; ++k) {
    int64_t at = offset;
    for (size_t d = 0; d < size.size(); ++d) at += idx[d] * stride[d];
    out.push_back(storage[size_t(at)]);
    for (size_t d = size.size(); d-- > 0;)
      if (++idx[d] < size[d])
        break;
      else
        idx[d] = 0;
  }
  return out;
}

struct AllDtypes {
  std::vector<float> f32{1.5f, -2.25f, 3.0e-38f, 6.5e37f, -0.0f, 1.0f / 3.0f};
  std::vector<uint16_t> f16, bf16;
  std::vector<double> f64{1.0 / 3.0, -1e300, 5e-324, 2.5};
  std::vector<int64_t> i64{INT64_MIN, -1, 0, (int64_t(1) << 53) + 1, INT64_MAX};
  std::vector<int32_t> i32{INT32_MIN, -7, 0, 9, INT32_MAX};
  std::vector<uint8_t> u8{0, 1, 127, 128, 255};
  std::vector<int8_t> i8{-128, -1, 0, 1, 127};
  AllDtypes() {
    for (float v : f32) f16.push_back(ssm::f32_to_f16(v));
    for (float v : f32) bf16.push_back(ssm::f32_to_bf16(v));
  }
  void add_to(TorchCheckpointWriter& w) const {
    w.add_view("w.f32", w.add_storage(DType::f32, f32), 0, {2, 3}, {3, 1});
    w.add_view("w.f16", w.add_storage(DType::f16, f16), 0, {6}, {1});
    w.add_view("w.bf16", w.add_storage(DType::bf16, bf16), 0, {3, 2}, {2, 1});
    w.add_view("w.f64", w.add_storage(DType::f64, f64), 0, {4}, {1});
    w.add_view("w.i64", w.add_storage(DType::i64, i64), 0, {5}, {1});
    w.add_view("w.i32", w.add_storage(DType::i32, i32), 0, {5}, {1});
    w.add_view("w.u8", w.add_storage(DType::u8, u8), 0, {5}, {1});
    w.add_view("w.i8", w.add_storage(DType::i8, i8), 0, {5}, {1});
  }
  void check(const PytorchBin& b) const {
    auto expect = [&](const std::string& n, DType dt, const Shape& shape, const std::string& raw) {
      ASSERT_TRUE(b.has(n)) << n;
      Tensor t = b.get(n);
      EXPECT_EQ(t.dtype(), dt) << n;
      EXPECT_EQ(t.shape(), shape) << n;
      EXPECT_EQ(bytes_of(t), raw) << n;
    };
    expect("w.f32", DType::f32, {2, 3}, bytes_of(f32));
    expect("w.f16", DType::f16, {6}, bytes_of(f16));
    expect("w.bf16", DType::bf16, {3, 2}, bytes_of(bf16));
    expect("w.f64", DType::f64, {4}, bytes_of(f64));
    expect("w.i64", DType::i64, {5}, bytes_of(i64));
    expect("w.i32", DType::i32, {5}, bytes_of(i32));
    expect("w.u8", DType::u8, {5}, bytes_of(u8));
    expect("w.i8", DType::i8, {5}, bytes_of(i8));
    std::vector<std::string> order{"w.f32", "w.f16", "w.bf16", "w.f64", "w.i64", "w.i32", "w.u8", "w.i8"};
    EXPECT_EQ(b.names(), order);
  }
};

}  // namespace

TEST(PytorchBin, EveryDtypeRoundTripsExactlyAsZeroCopyViews) {
  AllDtypes d;
  TorchCheckpointWriter w;
  d.add_to(w);
  std::string path = temp_path("dtypes.bin");
  w.save(path);
  PytorchBin b = PytorchBin::open(path);
  d.check(b);
  // Views over the read-only mapping: the storage is read-only and not a heap copy.
  for (const auto& [name, t] : b.tensors()) {
    EXPECT_TRUE(t.storage()->read_only()) << name;
    EXPECT_EQ(t.storage()->device(), ssm::Device::cpu);
  }
  // load_pytorch_bin gives the same, in file order.
  auto all = ssm::io::load_pytorch_bin(path);
  ASSERT_EQ(all.size(), 8u);
  EXPECT_EQ(all[4].first, "w.i64");
  EXPECT_EQ(bytes_of(all[4].second), bytes_of(d.i64));
  EXPECT_TRUE(ssm::io::looks_like_pytorch_bin(path));
}

TEST(PytorchBin, StridedViewsOffsetsAndSharedStorages) {
  std::vector<float> s(24);  // storage (24,)
  for (size_t i = 0; i < s.size(); ++i) s[i] = float(i) * 0.5f - 3.0f;
  TorchCheckpointWriter w;
  std::string k = w.add_storage(DType::f32, s);
  struct View {
    std::string name;
    int64_t offset;
    Shape size, stride;
  };
  std::vector<View> views = {
      {"base", 0, {4, 6}, {6, 1}},
      {"base_t", 0, {6, 4}, {1, 6}},  // transpose
      {"row1", 6, {6}, {1}},
      {"cols", 2, {4, 3}, {6, 1}},  // offset 2, gaps
      {"every_other", 1, {2, 2, 3}, {12, 6, 2}},
      {"expanded", 5, {3, 4}, {0, 1}},  // stride 0
      {"last", 23, {}, {}},
      {"empty", 24, {0, 3}, {3, 1}},                // scalar; empty at the end
      {"four_d", 0, {2, 1, 3, 4}, {12, 12, 4, 1}},  // TUPLE opcode (more than 3 items)
  };
  for (const View& v : views) w.add_view(v.name, k, v.offset, v.size, v.stride);
  PytorchBin b = parse(w.bytes());
  ASSERT_EQ(b.size(), views.size());
  const void* base_data = b.get("base").storage()->data();
  for (const View& v : views) {
    Tensor t = b.get(v.name);
    EXPECT_EQ(t.shape(), v.size) << v.name;
    std::vector<float> want = gather(s, v.offset, v.size, v.stride);
    if (t.numel() > 0) {
      EXPECT_EQ(t.to_vector_f32(), want) << v.name;
    }
    if (t.numel() > 0) {
      EXPECT_EQ(t.storage()->data(), base_data) << v.name << " should share the storage";
      EXPECT_EQ(t.byte_offset(), size_t(v.offset) * 4) << v.name;
    }
  }
  EXPECT_FALSE(b.get("base_t").is_contiguous());
  EXPECT_EQ(b.get("base_t").strides(), (Shape{1, 6}));
  EXPECT_EQ(b.get("expanded").strides(), (Shape{0, 1}));
  EXPECT_TRUE(b.get("base").is_contiguous());
}

TEST(PytorchBin, ParametersTiedTensorsAndModuleMetadata) {
  TorchCheckpointWriter w;
  Tensor emb = Tensor::arange(12).view({4, 3});  // (4, 3)
  std::string k = w.add("embedding.weight", emb, /*parameter=*/true);
  w.add_view("lm_head.weight", k, 0, {4, 3}, {3, 1});  // tied, as mamba_ssm ties the head
  w.add("norm.bias", Tensor::full({3}, -0.25), true);
  PytorchBin b = parse(w.bytes());
  EXPECT_EQ(b.names(), (std::vector<std::string>{"embedding.weight", "lm_head.weight", "norm.bias"}));
  EXPECT_EQ(bytes_of(b.get("embedding.weight")), bytes_of(emb));
  EXPECT_EQ(b.get("lm_head.weight").storage(), b.get("embedding.weight").storage());
  EXPECT_EQ(b.get("norm.bias").to_vector_f32(), (std::vector<float>{-0.25f, -0.25f, -0.25f}));
}

TEST(PytorchBin, Protocol4Zip64FoldersAndNoMetadata) {
  AllDtypes d;
  for (int variant = 0; variant < 4; ++variant) {
    TorchCheckpointWriter w;
    d.add_to(w);
    w.protocol = variant & 1 ? 4 : 2;
    w.zip.zip64 = variant & 2;
    w.metadata = variant != 1;
    w.folder = variant == 3 ? "pytorch_model" : "archive";
    SCOPED_TRACE("variant " + std::to_string(variant));
    d.check(parse(w.bytes()));
  }
}

TEST(PytorchBin, UnalignedArchiveIsCopiedOnceAndStillShared) {
  std::vector<double> s{1.25, -2.5, 3.75, 1e-310, 7.0, 8.5};  // storage (6,)
  TorchCheckpointWriter w;
  w.zip.alignment = 1;  // no padding: data lands wherever the names put it
  w.folder = "a";       // the folder name's length moves the data: grown below until misaligned
  std::string k = w.add_storage(DType::f64, s);
  w.add_view("x", k, 0, {2, 3}, {3, 1});
  w.add_view("xt", k, 1, {2, 2}, {1, 3});
  std::string bytes = w.bytes();
  for (int tries = 0; tries < 8; ++tries) {
    size_t at = bytes.find(std::string(reinterpret_cast<const char*>(s.data()), 48));
    ASSERT_NE(at, std::string::npos);
    if (at % 8 != 0) break;
    w.folder += "b";
    bytes = w.bytes();
  }
  auto buf = std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end());
  size_t at = bytes.find(std::string(reinterpret_cast<const char*>(s.data()), 48));
  ASSERT_NE((reinterpret_cast<uintptr_t>(buf->data()) + at) % 8, 0u) << "test setup: storage should be misaligned";
  PytorchBin b = PytorchBin::parse(buf, "unaligned.bin");
  Tensor x = b.get("x"), xt = b.get("xt");
  EXPECT_EQ(x.to_vector_f64(), s);
  EXPECT_EQ(xt.to_vector_f64(), (std::vector<double>{-2.5, 7.0, 3.75, 8.5}));  // s[1 + i + 3j]
  EXPECT_EQ(x.storage(), xt.storage());                                        // one copy, shared
  EXPECT_EQ(reinterpret_cast<uintptr_t>(x.raw_data()) % 8, 0u);
  EXPECT_FALSE(x.storage()->read_only());  // a heap copy, not the buffer
}

TEST(PytorchBin, NestedDictsAreFlattenedAndNonTensorsSkipped) {
  // {"model": OrderedDict{"w": tensor, "sub": {"b": tensor}}, "epoch": 3, "lr": 0.5, "name": None,
  //  "list": [tensor]} built opcode by opcode.
  TorchCheckpointWriter w;
  std::vector<float> s{1, 2, 3};
  w.add_storage(DType::f32, s);
  ssm::testing::PickleOut p;
  auto tensor = [&](int64_t offset) {
    p.global("torch._utils", "_rebuild_tensor_v2").mark();
    p.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").integer(3).tuple().binpersid();
    p.integer(offset).integer(1).tuple_n(1).integer(1).tuple_n(1).boolean(false);
    p.global("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce();
  };
  p.proto(2).empty_dict().mark();
  p.str("model").global("collections", "OrderedDict").empty_tuple().reduce().mark();
  p.str("w");
  tensor(0);
  p.str("sub").empty_dict().str("b");
  tensor(2);
  p.setitem().setitems();
  p.str("epoch").integer(3).str("lr").binfloat(0.5).str("name").none();
  p.str("list").empty_list();
  tensor(1);
  p.append().setitems().stop();
  auto files = w.files();
  files[0].data = p.b;
  PytorchBin b = parse(ssm::testing::write_zip(files));
  EXPECT_EQ(b.names(), (std::vector<std::string>{"model.w", "model.sub.b", "list.0"}));
  EXPECT_EQ(b.get("model.sub.b").to_vector_f32(), std::vector<float>{3});
  EXPECT_EQ(b.get("list.0").to_vector_f32(), std::vector<float>{2});
}

// Written by torch 2.11.0 (device machine) with:
//   ar = lambda n, dt: (torch.arange(n, dtype=torch.float64) % 32 * 0.5 - 8).to(dt)
//   lin = nn.Linear(3, 4); lin.weight = ar(12).view(4, 3); lin.bias = ar(4); sd = lin.state_dict()
//   sd["f16"] = ar(10, f16); sd["bf16"] = ar(10, bf16).view(2, 5); sd["f64"] = ar(7, f64)
//   sd["i64"] = arange(-3, 5) * 10**12; sd["i32"] = arange(-3, 3, i32); sd["u8"] = arange(250, 256, u8)
//   sd["i8"] = arange(-128, -122, i8); base = ar(24, f32).view(4, 6); sd["base"] = base
//   sd["base_t"] = base.t(); sd["base_row1"] = base[1]; sd["base_col"] = base[:, 2:5]
//   sd["scalar"] = tensor(2.5); sd["empty"] = zeros(0, 3)
//   sd["expanded"] = tensor([1., 2.]).view(2, 1).expand(2, 3); sd["tied"] = sd["weight"]
//   torch.save(sd, "torch_basic.bin"); torch.save(sd, "torch_basic_p4.bin", pickle_protocol=4)
TEST(PytorchBin, TorchWrittenFiles) {
  auto ar = [](int64_t n) {
    std::vector<double> v;
    for (int64_t i = 0; i < n; ++i) v.push_back(double(i % 32) * 0.5 - 8);
    return v;
  };
  for (const char* file : {"torch_basic.bin", "torch_basic_p4.bin"}) {
    SCOPED_TRACE(file);
    PytorchBin b = PytorchBin::open(std::string(SSM_SOURCE_DIR) + "/fuzz/corpus/pytorch_bin/" + file);
    std::vector<std::string> names{"weight",   "bias",   "f16",   "bf16",     "f64",    "i64",
                                   "i32",      "u8",     "i8",    "base",     "base_t", "base_row1",
                                   "base_col", "scalar", "empty", "expanded", "tied"};
    ASSERT_EQ(b.names(), names);
    auto check = [&](const std::string& n, DType dt, const Shape& shape, const std::vector<double>& want) {
      Tensor t = b.get(n);
      EXPECT_EQ(t.dtype(), dt) << n;
      EXPECT_EQ(t.shape(), shape) << n;
      EXPECT_EQ(t.numel(), int64_t(want.size())) << n;
      if (t.numel() > 0) {
        EXPECT_EQ(t.to_vector_f64(), want) << n;
      }
    };
    check("weight", DType::f32, {4, 3}, ar(12));
    check("bias", DType::f32, {4}, ar(4));
    check("f16", DType::f16, {10}, ar(10));
    check("bf16", DType::bf16, {2, 5}, ar(10));
    check("f64", DType::f64, {7}, ar(7));
    std::vector<int64_t> i64;
    for (int64_t i = -3; i < 5; ++i) i64.push_back(i * 1000000000000);
    EXPECT_EQ(b.get("i64").to_vector_i64(), i64);
    check("i32", DType::i32, {6}, {-3, -2, -1, 0, 1, 2});
    check("u8", DType::u8, {6}, {250, 251, 252, 253, 254, 255});
    check("i8", DType::i8, {6}, {-128, -127, -126, -125, -124, -123});
    std::vector<double> base = ar(24);
    std::vector<float> base_f(base.begin(), base.end());
    check("base", DType::f32, {4, 6}, base);
    auto as_d = [](const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); };
    check("base_t", DType::f32, {6, 4}, as_d(gather(base_f, 0, {6, 4}, {1, 6})));
    check("base_row1", DType::f32, {6}, as_d(gather(base_f, 6, {6}, {1})));
    check("base_col", DType::f32, {4, 3}, as_d(gather(base_f, 2, {4, 3}, {6, 1})));
    check("scalar", DType::f32, {}, {2.5});
    check("empty", DType::f32, {0, 3}, {});
    check("expanded", DType::f32, {2, 3}, {1, 1, 1, 2, 2, 2});
    check("tied", DType::f32, {4, 3}, ar(12));
    EXPECT_EQ(b.get("base_t").storage(), b.get("base").storage());
    EXPECT_EQ(b.get("base_col").byte_offset(), 8u);
    EXPECT_EQ(b.get("tied").storage(), b.get("weight").storage());
    EXPECT_EQ(b.get("expanded").strides(), (Shape{1, 0}));
  }
}
