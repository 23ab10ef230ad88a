// libFuzzer target for the tokenizers. Each input is used twice:
//   1. as text, encoded with a small built-in byte-level BPE (all 256 bytes, a few merges, a special
//      token and a normalized added token): invalid UTF-8 must give ssm::Error; valid text must
//      decode back to its NFC form; byte_level() must round-trip any bytes exactly;
//   2. as a tokenizer.json: anything malformed must give ssm::Error, never a crash, hang or other
//      exception; a file that loads must encode and decode a fixed sample.
// Build (see scripts/fuzz.sh): clang++ -std=c++20 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc
//   fuzz/fuzz_tokenizer.cpp src/base/*.cpp src/tensor/*.cpp src/tokenizer/*.cpp -lutf8proc
#include <utf8proc.h>

#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "ssm/base.h"
#include "ssm/tokenizer.h"

namespace {

// GPT-2 byte → code point table, so the built-in vocabulary is in tokenizer.json spelling.
std::string byte_char(int b) {
  bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
  int cp = b;
  if (!printable) {
    cp = 256;
    for (int k = 0; k < b; ++k)
      if (!((k >= '!' && k <= '~') || (k >= 0xA1 && k <= 0xAC) || (k >= 0xAE && k <= 0xFF))) ++cp;
  }
  std::string s;
  if (cp < 0x80) {
    s.push_back(char(cp));
  } else {
    s.push_back(char(0xC0 | (cp >> 6)));
    s.push_back(char(0x80 | (cp & 0x3F)));
  }
  return s;
}

const ssm::Tokenizer& builtin() {
  static const ssm::Tokenizer tok = [] {
    nlohmann::json vocab = nlohmann::json::object(), merges = nlohmann::json::array();
    for (int b = 0; b < 256; ++b) vocab[byte_char(b)] = b;
    int next = 256;
    auto merge = [&](const std::string& a, const std::string& b) {
      if (!vocab.contains(a + b)) vocab[a + b] = next++;
      merges.push_back(a + " " + b);
    };
    const std::string sp = byte_char(' ');
    merge("t", "h"), merge("th", "e"), merge(sp, "the"), merge("i", "n"), merge(sp, sp), merge("Ã", "©");
    merge("e", "r"), merge("er", "er"), merge(sp, "t");
    nlohmann::json added = nlohmann::json::array();
    added.push_back({{"id", next}, {"content", "<|endoftext|>"}, {"special", true}, {"normalized", false}});
    added.push_back({{"id", next + 1}, {"content", "   "}, {"special", false}, {"normalized", true}});
    nlohmann::json j = {{"added_tokens", added},
                        {"normalizer", {{"type", "NFC"}}},
                        {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}}},
                        {"decoder", {{"type", "ByteLevel"}}},
                        {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
    return ssm::Tokenizer::from_json(j.dump(), "builtin");
  }();
  return tok;
}

bool valid_utf8(const std::string& s) {
  utf8proc_int32_t cp;
  for (size_t i = 0; i < s.size();) {
    auto n =
        utf8proc_iterate(reinterpret_cast<const utf8proc_uint8_t*>(s.data()) + i, utf8proc_ssize_t(s.size() - i), &cp);
    if (n <= 0) return false;
    i += size_t(n);
  }
  return true;
}

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = nullptr;
  auto n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(s.data()), utf8proc_ssize_t(s.size()), &out,
                        utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) __builtin_trap();
  std::string r(reinterpret_cast<char*>(out), size_t(n));
  std::free(out);
  return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);

  // 1. The input as text.
  const ssm::Tokenizer& tok = builtin();
  std::vector<int32_t> ids;
  bool encoded = false;
  try {
    ids = tok.encode(in);
    encoded = true;
  } catch (const ssm::Error&) {
  }
  if (encoded != valid_utf8(in)) __builtin_trap();  // exactly the invalid UTF-8 inputs are rejected
  if (encoded) {
    std::string back = tok.decode(ids);  // ids from encode() always decode
    // Added tokens are split out before normalization, so compare with NFC only without them.
    if (in.find("<|endoftext|>") == std::string::npos && back != nfc(in)) __builtin_trap();
  }
  static const ssm::Tokenizer bytes = ssm::Tokenizer::byte_level();
  if (bytes.decode_bytes(bytes.encode(in)) != in) __builtin_trap();

  // 2. The input as a tokenizer.json.
  try {
    ssm::Tokenizer t = ssm::Tokenizer::from_json(in, "fuzz.json");
    std::vector<int32_t> sample = t.encode("Hello world<|endoftext|>  e\xCC\x81 123 they'll \xF0\x9F\xA6\x99");
    t.decode(sample);
    t.decode(sample, true);
  } catch (const ssm::Error&) {
  }
  return 0;
}
