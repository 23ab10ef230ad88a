// safetensors: round trips of every dtype, zero-copy views, the real fixtures, sharded directories
// and atomic writes. Malformed files are covered in unit_io_safetensors_errors.cpp. Every comparison
// here is bit-exact (tolerance 0): the format stores raw bytes and nothing is converted.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "ssm/safetensors.h"
#include "testing.h"

namespace fs = std::filesystem;
using ssm::DType;
using ssm::Shape;
using ssm::Tensor;
using ssm::io::SafeTensors;
using ssm::io::save_safetensors;
using ssm::io::ShardedSafeTensors;

namespace {

// A fresh directory under /tmp, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() / ("ssm_io_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

// A tensor of `dtype` filled with arbitrary bytes (any bit pattern, NaNs included).
Tensor random_bytes(const Shape& shape, DType dtype, uint64_t seed) {
  Tensor t = Tensor::empty(shape, dtype);
  std::mt19937_64 rng(seed);
  auto* p = static_cast<uint8_t*>(t.raw_data());
  for (size_t i = 0; i < t.nbytes(); ++i) p[i] = uint8_t(rng());
  return t;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape()) return false;
  Tensor ca = a.contiguous(), cb = b.contiguous();
  return a.nbytes() == 0 || std::memcmp(ca.raw_data(), cb.raw_data(), a.nbytes()) == 0;
}

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

uint64_t le64(const uint8_t* p) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(p[i]) << (8 * i);
  return n;
}

bool no_temp_files(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos) return false;
  return true;
}

const DType kAllDTypes[] = {DType::f64, DType::f32, DType::f16, DType::bf16,
                            DType::i64, DType::i32, DType::i8,  DType::u8};

}  // namespace

TEST(SafeTensors, RoundTripEveryDtypeWithMetadata) {
  TempDir dir;
  std::vector<std::pair<std::string, Tensor>> tensors;
  uint64_t seed = 1;
  // Odd sizes so the u8/i8/f16 tensors end at offsets that are not multiples of 8.
  for (DType dt : kAllDTypes) {
    std::string n = ssm::dtype_name(dt);
    tensors.emplace_back(n + ".matrix", random_bytes({3, 7}, dt, seed++));
    tensors.emplace_back(n + ".scalar", random_bytes({}, dt, seed++));
    tensors.emplace_back(n + ".empty", random_bytes({0, 5}, dt, seed++));
    tensors.emplace_back(n + ".vec", random_bytes({33}, dt, seed++));
  }
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"note", "grüße ✓"}, {"empty", ""}};
  save_safetensors(dir / "m.safetensors", tensors, meta);

  SafeTensors st = SafeTensors::open(dir / "m.safetensors");
  EXPECT_EQ(st.metadata(), meta);
  ASSERT_EQ(st.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(st.has(name)) << name;
    EXPECT_EQ(st.dtype(name), t.dtype()) << name;
    EXPECT_EQ(st.shape(name), t.shape()) << name;
    Tensor got = st.get(name);
    EXPECT_TRUE(same_bytes(got, t)) << name;
    if (t.numel() > 0) {  // the writer aligns every tensor for its dtype, so all are zero-copy views
      EXPECT_TRUE(got.storage()->read_only()) << name;
    }
  }
  auto names = st.names();
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));
  EXPECT_FALSE(st.has("missing"));

  // Layout, checked on the raw bytes with an independent JSON parse: 8-aligned data region,
  // contiguous offsets from 0 that cover it, each tensor aligned for its dtype.
  auto bytes = read_file(dir / "m.safetensors");
  uint64_t n = le64(bytes.data());
  EXPECT_EQ((8 + n) % 8, 0u);
  auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + long(n));
  EXPECT_EQ(header["__metadata__"]["note"], "grüße ✓");
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& [name, e] : header.items()) {
    if (name == "__metadata__") continue;
    uint64_t b = e["data_offsets"][0], end = e["data_offsets"][1];
    EXPECT_EQ(b % ssm::dtype_size(ssm::dtype_from_safetensors(e["dtype"])), 0u) << name;
    ranges.emplace_back(b, end);
  }
  std::sort(ranges.begin(), ranges.end());
  uint64_t at = 0;
  for (auto [b, e] : ranges) {
    EXPECT_EQ(b, at);
    at = e;
  }
  EXPECT_EQ(at, bytes.size() - 8 - n);
}

TEST(SafeTensors, ReadsHandWrittenFile) {
  // Built byte by byte: header of 62 bytes padded to 64, then F32 {1.5, -2} and I8 {-1, 127, 0}.
  std::string h = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I8","shape":[3],)"
                  R"("data_offsets":[8,11]}})";
  std::vector<uint8_t> bytes(8);
  bytes[0] = uint8_t(h.size());
  bytes.insert(bytes.end(), h.begin(), h.end());
  float fa[2] = {1.5f, -2.0f};
  const auto* pa = reinterpret_cast<const uint8_t*>(fa);
  bytes.insert(bytes.end(), pa, pa + 8);
  for (int v : {0xff, 0x7f, 0x00}) bytes.push_back(uint8_t(v));
  auto buf = std::make_shared<const std::vector<uint8_t>>(bytes);
  SafeTensors st = SafeTensors::parse(buf);
  EXPECT_EQ(st.get("a").to_vector_f32(), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(st.get("b").to_vector_i64(), (std::vector<int64_t>{-1, 127, 0}));
  EXPECT_TRUE(st.metadata().empty());
}

TEST(SafeTensors, ZeroCopyViewsOutliveTheReader) {
  TempDir dir;
  Tensor w = random_bytes({64, 33}, DType::f32, 7);
  save_safetensors(dir / "w.safetensors", {{"w", w}, {"b", random_bytes({5}, DType::bf16, 8)}});
  Tensor got;
  {
    SafeTensors st = SafeTensors::open(dir / "w.safetensors");
    got = st.get("w");
    const uint8_t* p = static_cast<const uint8_t*>(got.raw_data());
    EXPECT_GE(p, st.data_region());
    EXPECT_LE(p + got.nbytes(), st.data_region() + st.data_region_size());
    EXPECT_EQ(got.raw_data(), st.get("w").raw_data());  // both views of the same mapped bytes
    EXPECT_TRUE(got.storage()->read_only());
    EXPECT_THROW(got.fill_(0), ssm::Error);  // the mapping is PROT_READ: writes must be refused, not crash
  }
  // The reader is gone; the view keeps the mapping alive.
  EXPECT_TRUE(same_bytes(got, w));
}

TEST(SafeTensors, MisalignedDataIsCopied) {
  std::string h = R"({"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while ((8 + h.size()) % 4 != 3) h += ' ';  // trailing spaces are allowed; data starts at 3 mod 4
  std::vector<uint8_t> bytes(8);
  bytes[0] = uint8_t(h.size());
  bytes.insert(bytes.end(), h.begin(), h.end());
  float v[2] = {3.25f, -0.5f};
  bytes.insert(bytes.end(), reinterpret_cast<uint8_t*>(v), reinterpret_cast<uint8_t*>(v) + 8);
  auto buf = std::make_shared<const std::vector<uint8_t>>(bytes);  // heap memory is 16-aligned
  SafeTensors st = SafeTensors::parse(buf);
  Tensor t = st.get("x");
  EXPECT_FALSE(t.storage()->read_only());  // a private copy
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 4, 0u);
  EXPECT_EQ(t.to_vector_f32(), (std::vector<float>{3.25f, -0.5f}));
}

TEST(SafeTensors, NonContiguousAndOverwriteInPlace) {
  TempDir dir;
  Tensor base = random_bytes({4, 6}, DType::f64, 3);
  Tensor tr = base.transpose(0, 1);  // [6, 4], not contiguous
  save_safetensors(dir / "t.safetensors", {{"t", tr}});
  SafeTensors st = SafeTensors::open(dir / "t.safetensors");
  EXPECT_EQ(st.get("t").to_vector_f64(), tr.to_vector_f64());
  // Saving the file's own zero-copy views over the same path: the rename keeps the old mapping valid.
  Tensor view = st.get("t");
  save_safetensors(dir / "t.safetensors", {{"t", view}, {"extra", view.slice(0, 1, 3)}});
  SafeTensors st2 = SafeTensors::open(dir / "t.safetensors");
  EXPECT_TRUE(same_bytes(st2.get("t"), tr));
  EXPECT_TRUE(same_bytes(st2.get("extra"), tr.slice(0, 1, 3)));
  EXPECT_TRUE(same_bytes(view, tr));
}

TEST(SafeTensors, RealFixtures) {
  SSM_REQUIRE_SHARED("fixtures");
  int files = 0;
  for (const auto& d : fs::directory_iterator(ssm::testing::shared_path("fixtures"))) {
    for (const char* f : {"model.safetensors", "golden.safetensors"}) {
      fs::path p = d.path() / f;
      if (!fs::exists(p)) continue;
      ++files;
      SafeTensors st = SafeTensors::open(p.string());
      // Reference: the header parsed independently, the values read with plain file I/O.
      auto bytes = read_file(p.string());
      uint64_t n = le64(bytes.data());
      auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + long(n));
      size_t count = header.size() - (header.contains("__metadata__") ? 1 : 0);
      ASSERT_EQ(st.size(), count) << p;
      for (const auto& [name, e] : header.items()) {
        if (name == "__metadata__") continue;
        Tensor t = st.get(name);
        EXPECT_EQ(ssm::dtype_safetensors_name(t.dtype()), e["dtype"].get<std::string>()) << p << " " << name;
        EXPECT_EQ(t.shape(), e["shape"].get<Shape>()) << p << " " << name;
        uint64_t b = e["data_offsets"][0];
        ASSERT_EQ(t.nbytes(), e["data_offsets"][1].get<uint64_t>() - b);
        EXPECT_EQ(std::memcmp(t.raw_data(), bytes.data() + 8 + n + b, t.nbytes()), 0) << p << " " << name;
      }
    }
  }
  EXPECT_GT(files, 0);
  // A known entry: hf-mamba2-tiny stores F64 weights, embedding [vocab 320, d_model 64], format "pt".
  if (fs::exists(ssm::testing::shared_path("fixtures/hf-mamba2-tiny/model.safetensors"))) {
    auto st = ShardedSafeTensors::open(ssm::testing::shared_path("fixtures/hf-mamba2-tiny"));
    EXPECT_EQ(st.metadata().at("format"), "pt");
    EXPECT_EQ(st.shape("backbone.embeddings.weight"), (Shape{320, 64}));
    EXPECT_EQ(st.dtype("backbone.embeddings.weight"), DType::f64);
  }
}

TEST(SafeTensors, ShardedDirectory) {
  TempDir dir;
  Tensor a = random_bytes({4, 3}, DType::f32, 11), b = random_bytes({7}, DType::bf16, 12);
  Tensor c = random_bytes({2, 2}, DType::i64, 13);
  save_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", a}, {"b", b}});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {{"c", c}, {"unlisted", a}});
  nlohmann::json index = {{"metadata", {{"total_size", 94}, {"format", "pt"}}},
                          {"weight_map",
                           {{"a", "model-00001-of-00002.safetensors"},
                            {"b", "model-00001-of-00002.safetensors"},
                            {"c", "model-00002-of-00002.safetensors"}}}};
  std::ofstream(dir / "model.safetensors.index.json") << index.dump(2);

  for (const std::string& path : {dir.path.string(), dir / "model.safetensors.index.json"}) {
    auto st = ShardedSafeTensors::open(path);
    EXPECT_EQ(st.num_shards(), 2u);
    EXPECT_EQ(st.names(), (std::vector<std::string>{"a", "b", "c"}));  // the weight map is authoritative
    EXPECT_TRUE(same_bytes(st.get("a"), a));
    EXPECT_TRUE(same_bytes(st.get("b"), b));
    EXPECT_TRUE(same_bytes(st.get("c"), c));
    EXPECT_EQ(st.shape("c"), (Shape{2, 2}));
    EXPECT_EQ(st.dtype("b"), DType::bf16);
    EXPECT_FALSE(st.has("unlisted"));
    EXPECT_EQ(st.metadata().at("total_size"), "94");
    EXPECT_EQ(st.metadata().at("format"), "pt");
    try {
      st.get("nope");
      ADD_FAILURE() << "expected an error";
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find("no tensor named 'nope'"), std::string::npos) << e.what();
    }
  }

  // A single file through the same interface.
  TempDir single;
  save_safetensors(single / "model.safetensors", {{"x", c}}, {{"k", "v"}});
  auto s1 = ShardedSafeTensors::open(single.path.string());
  EXPECT_EQ(s1.num_shards(), 1u);
  EXPECT_TRUE(same_bytes(s1.get("x"), c));
  EXPECT_EQ(s1.metadata().at("k"), "v");
  EXPECT_TRUE(same_bytes(ShardedSafeTensors::open(single / "model.safetensors").get("x"), c));
}

TEST(SafeTensors, ShardedIndexErrors) {
  TempDir dir;
  save_safetensors(dir / "s1.safetensors", {{"a", random_bytes({2}, DType::f32, 1)}});
  auto expect_error = [&](const nlohmann::json& index, const std::string& words) {
    std::ofstream(dir / "model.safetensors.index.json", std::ios::trunc) << index.dump();
    try {
      ShardedSafeTensors::open(dir.path.string());
      ADD_FAILURE() << "expected an error containing '" << words << "' for " << index.dump();
    } catch (const ssm::Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  expect_error({{"weight_map", {{"zz", "s1.safetensors"}}}}, "which has no such tensor");
  expect_error({{"weight_map", {{"a", "../s1.safetensors"}}}}, "outside the model directory");
  expect_error({{"weight_map", {{"a", "/etc/passwd"}}}}, "outside the model directory");
  expect_error({{"weight_map", {{"a", "missing.safetensors"}}}}, "missing.safetensors");
  expect_error({{"weight_map", {{"a", 3}}}}, "not a file name string");
  expect_error({{"metadata", {}}}, "no \"weight_map\"");
  expect_error(nlohmann::json::array(), "not a JSON object");

  TempDir empty;
  try {
    ShardedSafeTensors::open(empty.path.string());
    ADD_FAILURE() << "expected an error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("neither model.safetensors.index.json nor model.safetensors"),
              std::string::npos)
        << e.what();
  }
}

// ---- atomic writes ----------------------------------------------------------------------------------
namespace {

void expect_save_fails(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::string& words) {
  try {
    save_safetensors(path, tensors);
    ADD_FAILURE() << "expected save_safetensors to fail with '" << words << "'";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  }
}

}  // namespace

TEST(SafeTensorsAtomic, FailedWriteKeepsTheOldFile) {
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  Tensor old = random_bytes({16}, DType::f32, 21);
  save_safetensors(path, {{"w", old}});
  auto old_bytes = read_file(path);

  // 1. A write that runs out of space half-way (file size limit), as a full disk would.
  struct rlimit saved {};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  auto prev = signal(SIGXFSZ, SIG_IGN);  // get EFBIG instead of being killed
  struct rlimit lim = saved;
  lim.rlim_cur = 4096;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &lim), 0);
  expect_save_fails(path, {{"w", random_bytes({1 << 16}, DType::f32, 22)}}, "writing");
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, prev);

  // 2. An invalid tensor in the list (caught before the file is touched).
  expect_save_fails(path, {{"w", old}, {"bad", Tensor()}}, "undefined");
  expect_save_fails(path, {{"w", old}, {"w", old}}, "duplicate");
  expect_save_fails(path, {{"", old}}, "empty tensor name");
  expect_save_fails(path, {{"\xff\xfe", old}}, "UTF-8");
  expect_save_fails(path, {{"__metadata__", old}}, "reserved");

  EXPECT_EQ(read_file(path), old_bytes);
  EXPECT_TRUE(same_bytes(SafeTensors::open(path).get("w"), old));
  EXPECT_TRUE(no_temp_files(dir.path));

  // 3. The rename fails: the target is a non-empty directory.
  fs::create_directories(dir.path / "target.safetensors" / "inner");
  expect_save_fails(dir / "target.safetensors", {{"w", old}}, "cannot rename");
  EXPECT_TRUE(fs::is_directory(dir.path / "target.safetensors" / "inner"));
  EXPECT_TRUE(no_temp_files(dir.path));

  // 4. The directory does not exist, or is one where nobody (not even root) may create files.
  expect_save_fails(dir / "no/such/dir/x.safetensors", {{"w", old}}, "cannot create");
  expect_save_fails("/proc/ssm_io_test.safetensors", {{"w", old}}, "cannot create");
}

TEST(SafeTensorsAtomic, ReadOnlyDirectory) {
  if (::geteuid() == 0) GTEST_SKIP() << "running as root: directory permissions are not enforced";
  TempDir dir;
  const std::string path = dir / "ckpt.safetensors";
  Tensor old = random_bytes({16}, DType::f32, 31);
  save_safetensors(path, {{"w", old}});
  fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
  expect_save_fails(path, {{"w", random_bytes({16}, DType::f32, 32)}}, "cannot create");
  fs::permissions(dir.path, fs::perms::owner_all);
  EXPECT_TRUE(same_bytes(SafeTensors::open(path).get("w"), old));
}

TEST(SafeTensors, Utf8Validation) {
  using ssm::io::is_valid_utf8;
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("layers.0.mixer.A_log"));
  EXPECT_TRUE(is_valid_utf8("\xc3\xa9\xe2\x9c\x93\xf0\x9f\x90\x8d"));  // é ✓ 🐍
  EXPECT_FALSE(is_valid_utf8("\xff"));
  EXPECT_FALSE(is_valid_utf8("\xc3"));              // truncated
  EXPECT_FALSE(is_valid_utf8("\xc0\xaf"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xed\xa0\x80"));      // surrogate U+D800
  EXPECT_FALSE(is_valid_utf8("\xf4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(is_valid_utf8("a\x80"));             // stray continuation byte
}
