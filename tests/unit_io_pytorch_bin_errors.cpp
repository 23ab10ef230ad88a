// pytorch_bin: malformed or hostile checkpoints — truncated files, corrupted ZIP structures,
// compressed entries, pickles that try to call os.system or eval, unknown opcodes, stack underflow,
// memo misses, tensor views past their storage — each is an ssm::Error naming the file and saying
// what is wrong, never a crash. Each case is built with tests/pytorch_bin_writer.h, then broken.
#include <random>
#include <string>

#include "pytorch_bin_writer.h"
#include "ssm/pytorch_bin.h"
#include "testing.h"

using ssm::DType;
using ssm::Tensor;
using ssm::io::PytorchBin;
using ssm::testing::PickleOut;
using ssm::testing::TorchCheckpointWriter;
using ssm::testing::write_zip;
using namespace std::string_literals;  // "..."s keeps embedded NUL bytes

namespace {

PytorchBin parse(const std::string& bytes, const PytorchBin::Options& opt = {}) {
  auto buf = std::make_shared<const std::vector<uint8_t>>(bytes.begin(), bytes.end());
  return PytorchBin::parse(buf->data(), buf->size(), buf, "bad.bin", opt);
}

// Parses `bytes` and checks the error names the file and contains every one of `words`.
void expect_bad(const std::string& bytes, const std::vector<std::string>& words, const PytorchBin::Options& opt = {}) {
  try {
    PytorchBin b = parse(bytes, opt);
    ADD_FAILURE() << "expected an error with '" << words[0] << "', got " << b.size() << " tensors";
  } catch (const ssm::Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("] bad.bin: "), std::string::npos) << m;
    for (const auto& w : words) EXPECT_NE(m.find(w), std::string::npos) << "missing '" << w << "' in: " << m;
  }
}

// A valid checkpoint: "a" (2, 3) f32 over storage 0, "b" (4,) f16 over storage 1.
TorchCheckpointWriter valid_writer() {
  TorchCheckpointWriter w;
  w.add("a", Tensor::arange(6).view({2, 3}));
  w.add("b", Tensor::arange(4).to(DType::f16));
  return w;
}

// A checkpoint whose data.pkl is `pickle` (with the storages of valid_writer()).
std::string with_pickle(const std::string& pickle) {
  auto files = valid_writer().files();
  files[0].data = pickle;
  return write_zip(files);
}

// Emits _rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False,
// OrderedDict()), as torch.save does.
void emit_tensor(PickleOut& p, const std::string& key, int64_t numel, int64_t offset, const ssm::Shape& size,
                 const ssm::Shape& stride) {
  p.global("torch._utils", "_rebuild_tensor_v2").mark();
  p.mark().str("storage").global("torch", "FloatStorage").str(key).str("cpu").integer(numel).tuple().binpersid();
  p.integer(offset).mark();
  for (int64_t v : size) p.integer(v);
  p.tuple().mark();
  for (int64_t v : stride) p.integer(v);
  p.tuple().boolean(false).global("collections", "OrderedDict").empty_tuple().reduce().tuple().reduce();
}

// Pickle of {"t": <that tensor>}.
std::string tensor_pickle(const std::string& key, int64_t numel, int64_t offset, const ssm::Shape& size,
                          const ssm::Shape& stride) {
  PickleOut p;
  p.proto(2).empty_dict().str("t");
  emit_tensor(p, key, numel, offset, size, stride);
  return p.setitem().stop().b;
}

uint32_t rd32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = v << 8 | uint8_t(s[at + size_t(i)]);
  return v;
}
void wr32(std::string& s, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) s[at + size_t(i)] = char(v >> (8 * i));
}

}  // namespace

TEST(PytorchBinErrors, ValidBaseline) {
  PytorchBin b = parse(valid_writer().bytes());
  EXPECT_EQ(b.get("a").to_vector_f32(), (std::vector<float>{0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(b.get("b").dtype(), DType::f16);
  EXPECT_EQ(parse(with_pickle(tensor_pickle("0", 6, 0, {2, 3}, {3, 1}))).get("t").numel(), 6);
}

TEST(PytorchBinErrors, EveryTruncationIsAnError) {
  std::string full = valid_writer().bytes();
  for (size_t n = 0; n < full.size(); ++n) {
    try {
      parse(full.substr(0, n));
      ADD_FAILURE() << "a prefix of " << n << " bytes parsed";
    } catch (const ssm::Error& e) {
      std::string m = e.what();
      bool said = m.find("truncated") != std::string::npos || m.find("too small") != std::string::npos ||
                  m.find("not a torch.save checkpoint") != std::string::npos;
      EXPECT_TRUE(said) << n << ": " << m;
    }
  }
  expect_bad(full.substr(0, full.size() - 5), {"no end-of-central-directory record: the file is truncated"});
  expect_bad("", {"not a torch.save checkpoint"});
}

TEST(PytorchBinErrors, CorruptedZipStructures) {
  const std::string good = valid_writer().bytes();
  size_t cd = good.find("PK\x01\x02");  // first central-directory entry (data.pkl)
  size_t eocd = good.rfind("PK\x05\x06");
  ASSERT_NE(cd, std::string::npos);
  std::string s = good;
  s[cd + 1] = 'X';
  expect_bad(s, {"central directory entry 0", "bad signature"});
  s = good;
  wr32(s, eocd + 16, uint32_t(good.size()));  // central directory offset past the end
  expect_bad(s, {"central directory", "outside the file"});
  s = good;
  s[eocd + 10] = char(200);  // 200 entries cannot fit
  expect_bad(s, {"claims 200 entries"});
  s = good;
  wr32(s, cd + 42, 7);  // local header offset pointing into nothing
  expect_bad(s, {"no local header at offset 7"});
  s = good;
  wr32(s, cd + 20, rd32(s, cd + 20) + 1);  // data.pkl grows into the next entry
  wr32(s, cd + 24, rd32(s, cd + 24) + 1);
  expect_bad(s, {"overlap"});
  s = good;
  s[30 + 2] = 'X';  // the local header's name of data.pkl ("archive/..." -> "arXhive/...")
  expect_bad(s, {"local header name", "differs"});
  s = good;
  s[cd + 8] |= 1;  // encrypted flag on data.pkl
  expect_bad(s, {"encrypted"});
  s = good;
  wr32(s, cd + 20, rd32(s, cd + 20) - 1);  // stored, but sizes disagree
  expect_bad(s, {"compressed size"});

  auto files = valid_writer().files();
  files.push_back(files[2]);
  expect_bad(write_zip(files), {"duplicate entry name 'archive/data/0'"});
  ssm::testing::ZipOptions z64;
  z64.zip64 = true;
  s = write_zip(valid_writer().files(), z64);
  size_t loc = s.rfind("PK\x06\x07");
  wr32(s, loc + 8, uint32_t(s.size()));  // ZIP64 record offset out of range
  expect_bad(s, {"ZIP64 end-of-central-directory offset"});
}

TEST(PytorchBinErrors, CompressedEntries) {
  auto files = valid_writer().files();
  files[2].method = 8;  // archive/data/0 labelled deflate
  expect_bad(write_zip(files), {"entry 'archive/data/0' is compressed (method 8, deflate)", "torch.save"});
  files = valid_writer().files();
  files[0].method = 93;
  expect_bad(write_zip(files), {"'archive/data.pkl' is compressed (method 93, zstd)"});
}

TEST(PytorchBinErrors, GlobalsOutsideTheAllowListAreRefused) {
  // pickle.dumps of os.system("echo pwned") in protocol 2: c os\nsystem\n X'echo pwned' \x85 R .
  std::string evil = PickleOut().proto(2).global("os", "system").str("echo pwned").tuple_n(1).reduce().stop().b;
  expect_bad(with_pickle(evil), {"the pickle tries to call os.system, which is not allowed", "pickle byte 2"});
  for (auto [m, n] : std::vector<std::pair<std::string, std::string>>{{"builtins", "eval"},
                                                                      {"__builtin__", "exec"},
                                                                      {"subprocess", "Popen"},
                                                                      {"torch._utils", "_rebuild_tensor"},
                                                                      {"torch.storage", "_load_from_bytes"},
                                                                      {"torch", "BoolStorage"},
                                                                      {"collections", "defaultdict"}}) {
    expect_bad(with_pickle(PickleOut().proto(2).global(m, n).stop().b), {"tries to call " + m + "." + n});
  }
  // Protocol 4 spells it STACK_GLOBAL.
  std::string p4 = PickleOut().proto(4).short_str("posix").short_str("system").op(0x93).stop().b;
  expect_bad(with_pickle(p4), {"tries to call posix.system, which is not allowed"});
  // An allowed storage type may not be called.
  expect_bad(with_pickle(PickleOut().proto(2).global("torch", "FloatStorage").empty_tuple().reduce().stop().b),
             {"torch.FloatStorage cannot be called"});
}

TEST(PytorchBinErrors, MalformedPickles) {
  auto pk = [](const std::string& body) { return with_pickle("\x80\x02"s + body); };
  expect_bad(pk(std::string("\xff", 1)), {"unsupported pickle opcode 0xff", "pickle byte 2"});
  expect_bad(pk("i__main__\nX\n"), {"unsupported pickle opcode 0x69"});  // INST
  expect_bad(pk("."), {"stack underflow"});
  expect_bad(pk("}(s."), {"stack underflow"});  // SETITEM may not pop below the MARK
  expect_bad(pk("t."), {"no MARK"});
  expect_bad(pk("N0 0."), {"unsupported pickle opcode 0x20"});
  expect_bad(pk("N00."), {"stack underflow"});
  expect_bad(pk("h\x07."), {"memo index 7 was never set"});
  expect_bad(pk("j\xff\xff\xff\xff."s), {"memo index 4294967295 was never set"});
  expect_bad(pk("X\xff\x00\x00\x00"
                "ab"s),
             {"truncated string"});
  expect_bad(pk("}"), {"ends without STOP"});
  expect_bad(pk("J\x01"), {"truncated BININT"});
  expect_bad(pk("cos\nsys"), {"unterminated GLOBAL name"});
  expect_bad(pk("\x8a\x09"s + std::string(9, '\x01') + "."), {"does not fit in 64 bits"});
  expect_bad(pk("}]Ns."), {"unsupported dict key of type list"});
  expect_bad(pk("}Na."), {"APPEND to a dict"});
  expect_bad(pk("N)R."), {"REDUCE calls a None"});
  expect_bad(pk("]N."), {"the file holds a None, not a state dict"});
  expect_bad(pk("]}b."), {"BUILD on a list"});
  expect_bad(with_pickle(std::string("\x80\x06}.", 4)), {"unsupported pickle protocol 6"});
  // A list that contains itself, and dicts nested 40 deep.
  expect_bad(pk("}X\x01\x00\x00\x00"
                "l]q\x00"
                "h\x00"
                "as."s),
             {"appears twice"});
  std::string deep = "}";
  for (int i = 0; i < 40; ++i)
    deep +=
        "X\x01\x00\x00\x00"
        "k}"s;
  for (int i = 0; i < 40; ++i) deep += "s";
  expect_bad(pk(deep + "."), {"nested deeper than 32"});
}

TEST(PytorchBinErrors, TensorViewsPastTheirStorage) {
  expect_bad(with_pickle(tensor_pickle("0", 6, 1, {2, 3}, {3, 1})),
             {"reaches element 6 past its storage of 6 elements"});
  expect_bad(with_pickle(tensor_pickle("0", 6, 0, {2, 3}, {4, 1})), {"past its storage"});
  expect_bad(with_pickle(tensor_pickle("0", 6, 7, {0}, {1})), {"storage offset 7 is outside"});
  expect_bad(with_pickle(tensor_pickle("0", 6, 0, {-1}, {1})), {"negative size or stride"});
  expect_bad(with_pickle(tensor_pickle("0", 6, 0, {2}, {-1})), {"negative size or stride"});
  expect_bad(with_pickle(tensor_pickle("0", 6, 0, {2, 3}, {1})), {"size and stride have different lengths"});
  int64_t big = int64_t(1) << 40;
  expect_bad(with_pickle(tensor_pickle("0", 6, 0, {big, big}, {1, 1})), {"element count overflows"});
  expect_bad(with_pickle(tensor_pickle("0", 6, 0, {2, 2}, {INT64_MAX, 1})), {"overflows"});
  expect_bad(with_pickle(tensor_pickle("0", 7, 0, {2}, {1})), {"holds 24 bytes but its persistent id says 7 x f32"});
  expect_bad(with_pickle(tensor_pickle("0", INT64_MAX, 0, {2}, {1})), {"holds 24 bytes"});
  expect_bad(with_pickle(tensor_pickle("0", -2, 0, {2}, {1})), {"negative size"});
  expect_bad(with_pickle(tensor_pickle("9", 6, 0, {2}, {1})), {"storage '9' is missing", "archive/data/9"});
  ssm::Shape many(65, 1);
  expect_bad(with_pickle(tensor_pickle("0", 6, 0, many, many)), {"65 dimensions"});
  // A persistent id of the wrong shape.
  std::string pid = PickleOut().proto(2).str("storage").str("0").tuple_n(2).binpersid().stop().b;
  expect_bad(with_pickle(pid), {"persistent id is not a ('storage'"});
}

TEST(PytorchBinErrors, ArchiveLevelProblems) {
  // Data.pkl bytes changed after the CRC was computed: the CRC check notices, and can be turned off.
  std::string s = valid_writer().bytes();
  size_t at =
      s.find(std::string("X\x01\x00\x00\x00"
                         "a",
                         6));  // BINUNICODE 'a'
  ASSERT_NE(at, std::string::npos);
  s[at + 5] = 'z';
  expect_bad(s, {"CRC-32 mismatch in entry 'archive/data.pkl'"});
  PytorchBin::Options no_crc;
  no_crc.check_pickle_crc = false;
  EXPECT_TRUE(parse(s, no_crc).has("z"));

  auto files = valid_writer().files();
  files[1].data = "big";
  expect_bad(write_zip(files), {"big-endian checkpoints are not supported"});
  files = valid_writer().files();
  files[0].name = "archive/deeper/data.pkl";
  expect_bad(write_zip(files), {"no <folder>/data.pkl"});
  files = valid_writer().files();
  files.push_back({"other/data.pkl", files[0].data});
  expect_bad(write_zip(files), {"two data.pkl entries"});
  // Legacy torch.save (a bare pickle that starts with its magic number) and arbitrary bytes.
  expect_bad(std::string("\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19", 14), {"legacy", "torch.save"});
  expect_bad("hello world, not a checkpoint", {"not a torch.save checkpoint"});
  // A single tensor instead of a state dict.
  PickleOut single;
  single.proto(2);
  emit_tensor(single, "0", 6, 0, {6}, {1});
  expect_bad(with_pickle(single.stop().b), {"single tensor, not a state dict"});
  // Two tensors that flatten to the same name: {"x.y": t, "x": {"y": t}}.
  PickleOut twice;
  twice.proto(2).empty_dict().mark().str("x.y");
  emit_tensor(twice, "0", 6, 0, {6}, {1});
  twice.str("x").empty_dict().str("y");
  emit_tensor(twice, "0", 6, 0, {6}, {1});
  twice.setitem().setitems().stop();
  expect_bad(with_pickle(twice.b), {"two tensors are named 'x.y'"});
}

TEST(PytorchBinErrors, LookupsAndFiles) {
  PytorchBin b = parse(valid_writer().bytes());
  try {
    b.get("nope");
    ADD_FAILURE() << "get of a missing tensor returned";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("[pytorch_bin] bad.bin: no tensor named 'nope'"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(PytorchBin::open("/nonexistent/pytorch_model.bin"), ssm::Error);
  EXPECT_FALSE(ssm::io::looks_like_pytorch_bin("/nonexistent/pytorch_model.bin"));
}

// Random corruptions of a valid file (CRC checks off, so the pickle parser sees them too): each
// either parses, and then every tensor's bytes are readable, or throws ssm::Error — nothing else.
TEST(PytorchBinErrors, RandomMutationsNeverCrash) {
  const std::string good = valid_writer().bytes();
  PytorchBin::Options no_crc;
  no_crc.check_pickle_crc = false;
  std::mt19937 rng(1234);
  int parsed = 0, errors = 0;
  for (int trial = 0; trial < 4000; ++trial) {
    std::string s = good;
    int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      size_t at = rng() % s.size();
      s[at] = char(rng() % 3 == 0 ? s[at] ^ (1 << (rng() % 8)) : rng() % 256);
    }
    try {
      PytorchBin b = parse(s, no_crc);
      for (const auto& [name, t] : b.tensors())
        if (t.numel() > 0) (void)t.to_vector_f64();
      ++parsed;
    } catch (const ssm::Error&) {
      ++errors;
    }
  }
  EXPECT_EQ(parsed + errors, 4000);
  EXPECT_GT(parsed, 0);  // mutations in storage bytes or padding still parse
  EXPECT_GT(errors, 0);
}
