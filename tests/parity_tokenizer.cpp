// GPT-NeoX-20B tokenizer parity: every test vector of ../shared/data/tokenizer-tests must encode to
// exactly the reference ids (llama.cpp's 46 vectors and 200 LAMBADA passages encoded by Hugging Face
// `tokenizers`), and decoding must give back the (NFC-normalized) text. Exact equality: ids are
// integers and the reference is deterministic, so no tolerance.
#include <utf8proc.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "ssm/tokenizer.h"
#include "testing.h"

namespace {

const char* kTok = "data/tokenizers/gpt-neox-20b/tokenizer.json";

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string nfc(const std::string& s) {
  utf8proc_uint8_t* out = utf8proc_NFC(reinterpret_cast<const utf8proc_uint8_t*>(s.c_str()));
  std::string r(reinterpret_cast<char*>(out));
  std::free(out);
  return r;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    s += ' ';
    s += std::to_string(id);
  }
  return s;
}

const ssm::Tokenizer& neox() {
  static ssm::Tokenizer t = ssm::Tokenizer::from_file(ssm::testing::shared_path(kTok));
  return t;
}

TEST(ParityTokenizer, LoadsGptNeox) {
  SSM_REQUIRE_SHARED(kTok);
  const auto& t = neox();
  EXPECT_EQ(t.kind(), "bpe");
  EXPECT_EQ(t.vocab_size(), 50277);  // ids 0..50276: 50,254 vocab entries + 23 added whitespace tokens
  EXPECT_EQ(t.eos_id(), 0);
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.token_id("<|endoftext|>"), 0);
  EXPECT_EQ(t.token_id("Ġthe"), 253);
  EXPECT_TRUE(t.is_special(0));
  EXPECT_FALSE(t.is_special(50276));
  EXPECT_EQ(t.decode_token(50276), "  ");
}

TEST(ParityTokenizer, LlamaCppVectors) {
  SSM_REQUIRE_SHARED("data/tokenizer-tests/gpt-neox-20b.inp");
  SSM_REQUIRE_SHARED(kTok);
  std::string inp = read_all(ssm::testing::shared_path("data/tokenizer-tests/gpt-neox-20b.inp"));
  std::string out = read_all(ssm::testing::shared_path("data/tokenizer-tests/gpt-neox-20b.out"));
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  for (size_t pos = 0;;) {
    size_t e = inp.find(sep, pos);
    if (e == std::string::npos) break;
    texts.push_back(inp.substr(pos, e - pos));
    pos = e + sep.size();
  }
  std::vector<std::vector<int32_t>> want;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream ls(line);
    std::vector<int32_t> ids;
    for (int32_t id; ls >> id;) ids.push_back(id);
    want.push_back(ids);
  }
  ASSERT_EQ(texts.size(), 46u);
  ASSERT_EQ(want.size(), texts.size());
  const auto& t = neox();
  for (size_t i = 0; i < texts.size(); ++i) {
    auto got = t.encode(texts[i]);
    EXPECT_EQ(ids_str(got), ids_str(want[i])) << "vector " << i << ": \"" << texts[i] << "\"";
    EXPECT_EQ(t.decode(got), nfc(texts[i])) << "vector " << i;
  }
}

TEST(ParityTokenizer, Lambada200) {
  const char* rel = "data/tokenizer-tests/gpt-neox-20b-lambada200.jsonl";
  SSM_REQUIRE_SHARED(rel);
  SSM_REQUIRE_SHARED(kTok);
  const auto& t = neox();
  std::ifstream f(ssm::testing::shared_path(rel));
  int n = 0;
  for (std::string line; std::getline(f, line);) {
    if (line.empty()) continue;
    auto j = nlohmann::json::parse(line);
    std::string text = j["text"];
    std::vector<int32_t> want = j["ids"];
    auto got = t.encode(text);
    EXPECT_EQ(ids_str(got), ids_str(want)) << "passage " << n;
    EXPECT_EQ(t.decode(got), nfc(text)) << "passage " << n;
    ++n;
  }
  EXPECT_EQ(n, 200);
}

// 4,000 vectors made with Hugging Face `tokenizers` (tests/data/tokenizer/gen_hf_vectors.js): random
// adversarial strings encoded with GPT-NeoX-20B and with flags_tokenizer.json (lstrip / rstrip /
// single_word / normalized added tokens), and random id lists decoded. Decoding an id that does not
// exist throws here where Hugging Face drops it; those cases must throw.
TEST(ParityTokenizer, HuggingFaceRandomVectors) {
  const std::string dir = std::string(SSM_SOURCE_DIR) + "/tests/data/tokenizer/";
  const bool have_neox =
      !ssm::testing::shared_dir().empty() && std::filesystem::exists(ssm::testing::shared_path(kTok));
  ssm::Tokenizer flags = ssm::Tokenizer::from_file(dir + "flags_tokenizer.json");
  std::ifstream f(dir + "hf_vectors.jsonl");
  ASSERT_TRUE(f.good()) << "missing " << dir << "hf_vectors.jsonl";
  int checked = 0, skipped = 0, threw = 0;
  for (std::string line; std::getline(f, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["tok"] == "neox" && !have_neox) {
      ++skipped;
      continue;
    }
    const ssm::Tokenizer& t = j["tok"] == "neox" ? neox() : flags;
    if (j["kind"] == "encode") {
      std::vector<int32_t> want = j["ids"];
      EXPECT_EQ(ids_str(t.encode(j["text"].get<std::string>())), ids_str(want)) << j["tok"] << " " << j["text"].dump();
    } else {
      std::vector<int32_t> ids = j["ids"];
      bool unknown = false;
      for (int32_t id : ids) {
        try {
          t.decode_token(id);
        } catch (const ssm::Error&) {
          unknown = true;
        }
      }
      if (unknown) {
        ++threw;
        EXPECT_THROW(t.decode(ids, j["skip"].get<bool>()), ssm::Error) << j["ids"].dump();
      } else {
        EXPECT_EQ(t.decode(ids, j["skip"].get<bool>()), j["text"].get<std::string>())
            << j["tok"] << " " << j["ids"].dump();
      }
    }
    ++checked;
  }
  EXPECT_EQ(checked + skipped, 4000);
  std::printf("checked %d Hugging Face vectors (%d decodes threw on unknown ids), skipped %d%s\n", checked, threw,
              skipped, skipped ? " (GPT-NeoX tokenizer.json not in ../shared)" : "");
}

TEST(ParityTokenizer, SpecialTokensSplitOut) {
  SSM_REQUIRE_SHARED(kTok);
  const auto& t = neox();
  // "<|endoftext|>" (special, normalized=false) is matched before pre-tokenization.
  auto ids = t.encode("Hello<|endoftext|> world");
  auto hello = t.encode("Hello"), world = t.encode(" world");
  std::vector<int32_t> want = hello;
  want.push_back(0);
  want.insert(want.end(), world.begin(), world.end());
  EXPECT_EQ(ids, want);
  EXPECT_EQ(t.decode(ids), "Hello<|endoftext|> world");
  EXPECT_EQ(t.decode(ids, /*skip_special=*/true), "Hello world");
}

TEST(ParityTokenizer, ShakespeareRoundTripAndThroughput) {
  const char* rel = "data/text/tinyshakespeare.txt";
  SSM_REQUIRE_SHARED(rel);
  SSM_REQUIRE_SHARED(kTok);
  std::string text = read_all(ssm::testing::shared_path(rel));
  // A fresh tokenizer so the word cache starts cold for the first pass.
  auto t = ssm::Tokenizer::from_file(ssm::testing::shared_path(kTok));
  auto t0 = std::chrono::steady_clock::now();
  auto ids = t.encode(text);
  auto t1 = std::chrono::steady_clock::now();
  auto ids2 = t.encode(text);
  auto t2 = std::chrono::steady_clock::now();
  EXPECT_EQ(ids, ids2);
  EXPECT_EQ(t.decode(ids), text);
  double mb = double(text.size()) / 1e6;
  double cold = std::chrono::duration<double>(t1 - t0).count(), warm = std::chrono::duration<double>(t2 - t1).count();
  std::printf("tinyshakespeare: %zu bytes -> %zu tokens; encode %.1f MB/s (cold cache), %.1f MB/s (warm cache)\n",
              text.size(), ids.size(), mb / cold, mb / warm);
}

}  // namespace
