// safetensors: every kind of malformed file is an ssm::Error naming the file (and the tensor) with
// words that say what is wrong — never a crash. Each case is a hand-built byte string.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "ssm/safetensors.h"
#include "testing.h"

using ssm::io::SafeTensors;

namespace {

// 8-byte little-endian header length (or `len` when given), the header text, then `data` zero bytes.
std::vector<uint8_t> file_bytes(const std::string& header, size_t data, uint64_t len = UINT64_MAX) {
  if (len == UINT64_MAX) len = header.size();
  std::string s(8 + header.size() + data, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char(len >> (8 * i));
  std::copy(header.begin(), header.end(), s.begin() + 8);
  return std::vector<uint8_t>(s.begin(), s.end());
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + offsets + "}";
}

// Parses `bytes` and checks the error names the source and contains every one of `words`.
void expect_bad(const std::vector<uint8_t>& bytes, const std::vector<std::string>& words) {
  auto buf = std::make_shared<const std::vector<uint8_t>>(bytes);
  try {
    SafeTensors st = SafeTensors::parse(buf, "bad.safetensors");
    ADD_FAILURE() << "expected an error with '" << words[0] << "', got a file of " << st.size() << " tensors";
  } catch (const ssm::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind("[safetensors] bad.safetensors: ", 0), 0u) << m;
    for (const auto& w : words) EXPECT_NE(m.find(w), std::string::npos) << "missing '" << w << "' in: " << m;
  }
}

}  // namespace

TEST(SafeTensorsErrors, TruncatedOrHugeHeaderLength) {
  expect_bad({}, {"0 bytes", "shorter than the 8-byte header"});
  expect_bad({1, 2, 3, 4, 5}, {"5 bytes", "shorter than the 8-byte header"});
  expect_bad(file_bytes("{}", 10, 1000), {"header length 1000", "runs past the end"});
  expect_bad(file_bytes("{}", 0, 3), {"runs past the end"});
  expect_bad(file_bytes("{}", 0, uint64_t(1) << 60), {"absurdly large"});
  expect_bad(file_bytes("{}", 0, UINT64_MAX - 1), {"absurdly large"});  // 8 + n would overflow
}

TEST(SafeTensorsErrors, HeaderNotAJsonObject) {
  expect_bad(file_bytes("not json", 0), {"header is not valid JSON"});
  expect_bad(file_bytes("{\"a\":", 0), {"header is not valid JSON"});
  expect_bad(file_bytes("", 0), {"header is not valid JSON"});
  expect_bad(file_bytes("[1, 2]", 0), {"header is a JSON array, not an object"});
  expect_bad(file_bytes("\"x\"", 0), {"not an object"});
  expect_bad(file_bytes("{} {}", 0), {"header is not valid JSON"});  // trailing garbage
  expect_bad(file_bytes(std::string(40, '[') + std::string(40, ']'), 0), {"nested deeper"});
  std::string objects;  // {"k":{"k":...1...}}
  for (int i = 0; i < 40; ++i) objects += "{\"k\":";
  objects += "1" + std::string(40, '}');
  expect_bad(file_bytes(objects, 0), {"nested deeper"});
}

TEST(SafeTensorsErrors, EntryFields) {
  expect_bad(file_bytes(R"({"w":{"shape":[1],"data_offsets":[0,4]}})", 4), {"tensor 'w'", "no \"dtype\""});
  expect_bad(file_bytes(R"({"w":{"dtype":"F32","data_offsets":[0,4]}})", 4), {"tensor 'w'", "no \"shape\""});
  expect_bad(file_bytes(R"({"w":{"dtype":"F32","shape":[1]}})", 4), {"tensor 'w'", "no \"data_offsets\""});
  expect_bad(file_bytes(R"({"w":[1,2]})", 0), {"tensor 'w'", "not an object"});
  expect_bad(file_bytes(R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", 4), {"\"dtype\" is not a string"});
  expect_bad(file_bytes("{" + entry("w", "F8_E4M3", "[1]", "[0,1]") + "}", 1),
             {"tensor 'w'", "unknown dtype 'F8_E4M3'"});
  expect_bad(file_bytes("{" + entry("w", "f32", "[1]", "[0,4]") + "}", 4), {"unknown dtype 'f32'"});
  expect_bad(file_bytes("{" + entry("w", "F32", "3", "[0,4]") + "}", 4), {"\"shape\" is not an array"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[1]", "[0]") + "}", 4), {"\"data_offsets\" is not an array"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[1]", "[0,4,8]") + "}", 8), {"\"data_offsets\" is not an array"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[1]", "[\"0\",4]") + "}", 4), {"begin is not a non-negative"});
}

TEST(SafeTensorsErrors, BadShapes) {
  expect_bad(file_bytes("{" + entry("w", "F32", "[-1]", "[0,4]") + "}", 4), {"tensor 'w'", "negative (-1)"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[2.5]", "[0,4]") + "}", 4), {"not a non-negative integer"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[true]", "[0,4]") + "}", 4), {"not a non-negative integer"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[9223372036854775808]", "[0,4]") + "}", 4), {"too large"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[99999999999999999999999]", "[0,4]") + "}", 4),
             {"not a non-negative integer"});  // parsed as a float by JSON
  // The element count overflows 64 bits.
  expect_bad(file_bytes("{" + entry("w", "U8", "[4294967296,4294967296,4294967296]", "[0,0]") + "}", 0),
             {"tensor 'w'", "overflow"});
  // Zero elements, but strides would overflow.
  expect_bad(file_bytes("{" + entry("w", "U8", "[4611686018427387904,4611686018427387904,0]", "[0,0]") + "}", 0),
             {"overflow"});
  // numel fits, bytes do not: 2^61 * 8.
  expect_bad(file_bytes("{" + entry("w", "F64", "[2305843009213693952]", "[0,0]") + "}", 0), {"overflow"});
}

TEST(SafeTensorsErrors, BadOffsets) {
  expect_bad(file_bytes("{" + entry("w", "F32", "[2]", "[0,8]") + "}", 4),
             {"tensor 'w'", "[0, 8]", "out of range of the data region (4 bytes)"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[0]", "[8,4]") + "}", 8), {"tensor 'w'", "begin > end"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[3]", "[0,8]") + "}", 8),
             {"tensor 'w'", "byte size 8", "!= numel 3 * dtype size 4"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[1]", "[-4,0]") + "}", 8), {"negative"});
  expect_bad(file_bytes("{" + entry("w", "F32", "[1]", "[18446744073709551615,3]") + "}", 8), {"begin > end"});
  // Overlapping tensors (the second starts inside the first).
  expect_bad(file_bytes("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[2]", "[4,12]") + "}", 12),
             {"tensors 'a' and 'b' overlap"});
  // Contained entirely inside a larger tensor.
  expect_bad(file_bytes("{" + entry("a", "U8", "[16]", "[0,16]") + "," + entry("b", "U8", "[2]", "[4,6]") + "}", 16),
             {"overlap"});
}

TEST(SafeTensorsErrors, NamesAndMetadata) {
  expect_bad(file_bytes("{" + entry("w", "U8", "[1]", "[0,1]") + "," + entry("w", "U8", "[1]", "[1,2]") + "}", 2),
             {"duplicate tensor name 'w'"});
  expect_bad(file_bytes(R"({"w":{"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1),
             {"duplicate key 'dtype'"});
  expect_bad(file_bytes("{" + entry("\xff\xfe", "U8", "[1]", "[0,1]") + "}", 1), {"not valid JSON", "UTF-8"});
  expect_bad(file_bytes("{" + entry("\\ud800", "U8", "[1]", "[0,1]") + "}", 1), {"not valid JSON"});  // lone surrogate
  expect_bad(file_bytes("{" + entry("", "U8", "[1]", "[0,1]") + "}", 1), {"empty tensor name"});
  expect_bad(file_bytes(R"({"__metadata__":{"format":1}})", 0), {"metadata value of 'format' is not a string"});
  expect_bad(file_bytes(R"({"__metadata__":[]})", 0), {"\"__metadata__\" is not an object"});
}

TEST(SafeTensorsErrors, ValidEdgeCasesAreAccepted) {
  // Not errors: an empty header object, gaps between tensors, zero-size tensors anywhere, padding.
  auto ok = [](const std::vector<uint8_t>& b) {
    return SafeTensors::parse(std::make_shared<const std::vector<uint8_t>>(b), "ok.safetensors");
  };
  EXPECT_EQ(ok(file_bytes("{}", 0)).size(), 0u);
  EXPECT_EQ(ok(file_bytes("{}      ", 3)).size(), 0u);
  auto st = ok(file_bytes("{" + entry("a", "U8", "[4]", "[0,4]") + "," + entry("z", "F32", "[0,3]", "[2,2]") + "," +
                              entry("b", "U8", "[2]", "[8,10]") + "}",
                          10));
  EXPECT_EQ(st.names(), (std::vector<std::string>{"a", "b", "z"}));
  EXPECT_EQ(st.get("z").shape(), (ssm::Shape{0, 3}));
  EXPECT_EQ(st.get("b").numel(), 2);
}

TEST(SafeTensorsErrors, OpenNamesThePath) {
  auto dir = std::filesystem::temp_directory_path() / ("ssm_io_err_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::string path = (dir / "short.safetensors").string();
  std::ofstream(path) << "abc";
  try {
    SafeTensors::open(path);
    ADD_FAILURE() << "expected an error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": file is 3 bytes"), std::string::npos) << e.what();
  }
  try {
    SafeTensors::open((dir / "missing.safetensors").string());
    ADD_FAILURE() << "expected an error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.safetensors"), std::string::npos) << e.what();
  }
  try {
    SafeTensors st = SafeTensors::parse(std::make_shared<const std::vector<uint8_t>>(file_bytes("{}", 0)));
    st.get("w");
    ADD_FAILURE() << "expected an error";
  } catch (const ssm::Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tensor named 'w'"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}
