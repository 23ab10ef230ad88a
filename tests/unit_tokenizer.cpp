// Tokenizer unit tests on a tiny hand-written tokenizer.json: BPE merge order (hand-checked ids),
// added/special tokens and their flags, NFC, the GPT-2 split, invalid UTF-8, malformed files, and the
// byte / character vocabularies. All comparisons are exact (integer ids and byte strings).
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "ssm/base.h"
#include "ssm/tokenizer.h"
#include "testing.h"
#include "tokenizer/bpe.h"
#include "tokenizer/unicode.h"

namespace {

using json = nlohmann::json;
using ssm::Tokenizer;
using Ids = std::vector<int32_t>;

// Vocab in the byte-level spelling: "Ġ" is the space byte, "Ã©" the UTF-8 bytes of "é".
json tiny_json() {
  json vocab = json::object();
  const char* toks[] = {"h",  "e",  "l",    "o",     "Ġ",      "w",  "r", "d", "he", "ll", "llo", "hello",
                        "Ġw", "or", "Ġwor", "Ġworl", "Ġworld", "el", "a", "Ã", "©",  "Ã©", "x"};
  for (int i = 0; i < int(sizeof toks / sizeof *toks); ++i) vocab[toks[i]] = i;
  json merges = {"h e", "l l", "ll o", "he llo", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "e l", "Ã ©"};
  auto added = [](int id, const char* content, bool special, bool normalized) {
    return json{{"id", id},
                {"content", content},
                {"special", special},
                {"normalized", normalized},
                {"single_word", false},
                {"lstrip", false},
                {"rstrip", false}};
  };
  json a = json::array();
  a.push_back(added(23, "<|endoftext|>", true, false));
  a.push_back(added(24, "  ", false, true));
  a.push_back(added(25, "[MASK]", true, false));
  a[2]["lstrip"] = true;
  a.push_back(added(26, "<sw>", false, false));
  a[3]["single_word"] = true;
  a.push_back(added(27, "<r>", false, false));
  a[4]["rstrip"] = true;
  return json{
      {"version", "1.0"},
      {"added_tokens", a},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"vocab", vocab}, {"merges", merges}}}};
}

Tokenizer tiny(const json& j = tiny_json()) { return Tokenizer::from_json(j.dump(), "tiny.json"); }

// Runs fn and returns the ssm::Error message ("" if nothing was thrown).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const ssm::Error& e) {
    return e.what();
  }
  return "";
}

TEST(UnitTokenizer, MergesByRankHandChecked) {
  Tokenizer t = tiny();
  EXPECT_EQ(t.kind(), "bpe");
  EXPECT_EQ(t.vocab_size(), 28);
  // hello: h e l l o -> he l l o -> he ll o -> he llo -> hello; " world": Ġw, or, Ġwor, Ġworl, Ġworld.
  EXPECT_EQ(t.encode("hello world"), (Ids{11, 16}));
  EXPECT_EQ(t.encode("hel"), (Ids{8, 2}));  // "h e" (rank 0) beats "e l" (rank 9)
  EXPECT_EQ(t.encode("el"), (Ids{17}));
  EXPECT_EQ(t.encode("lll"), (Ids{9, 2}));  // equal ranks: leftmost pair first
  EXPECT_EQ(t.encode("llll"), (Ids{9, 9}));
  // Long words take the heap merge loop and bypass the cache: 100 l -> 50 "ll"; 101 l -> 50 "ll" + "l".
  EXPECT_EQ(t.encode(std::string(100, 'l')), Ids(50, 9));
  Ids odd(50, 9);
  odd.push_back(2);
  EXPECT_EQ(t.encode(std::string(101, 'l')), odd);
  EXPECT_EQ(t.encode("hello hello"), (Ids{11, 4, 11}));  // " hello" has no Ġh merge: Ġ + hello
  EXPECT_EQ(t.encode(""), Ids{});
  EXPECT_EQ(t.encode("hxlo"), (Ids{0, 22, 2, 3}));  // no merge applies
  EXPECT_EQ(t.encode("hqo"), (Ids{0, 3}));          // 'q' is not in the vocab and there is no unk: dropped
  EXPECT_EQ(t.decode({11, 16}), "hello world");
  EXPECT_EQ(t.token_id("Ġworld"), 16);
  EXPECT_EQ(t.token_id("zzz"), std::nullopt);
}

TEST(UnitTokenizer, MergesArrayFormEqualsStringForm) {
  json j = tiny_json();
  json arr = json::array();
  for (const auto& m : j["model"]["merges"]) {
    std::string s = m;
    size_t sp = s.find(' ');
    arr.push_back(json::array({s.substr(0, sp), s.substr(sp + 1)}));
  }
  j["model"]["merges"] = arr;
  Tokenizer t = tiny(j);
  EXPECT_EQ(t.encode("hello world hel"), (Ids{11, 16, 4, 8, 2}));
}

TEST(UnitTokenizer, AddedTokens) {
  Tokenizer t = tiny();
  EXPECT_EQ(t.encode("hello<|endoftext|>"), (Ids{11, 23}));
  EXPECT_EQ(t.encode("<|endoftext|><|endoftext|>"), (Ids{23, 23}));
  EXPECT_EQ(t.encode("a  a"), (Ids{18, 24, 18}));            // normalized "  " token
  EXPECT_EQ(t.encode("a     a"), (Ids{18, 24, 24, 4, 18}));  // longest match repeatedly, then " a"
  EXPECT_EQ(t.encode("a [MASK]"), (Ids{18, 25}));            // lstrip takes the space
  EXPECT_EQ(t.encode("x<sw>"), (Ids{22, 5}));                // single_word: not matched inside a word;
                                                             // '<' 's' '>' are not in the vocab
  EXPECT_EQ(t.encode("x <sw> x"), (Ids{22, 4, 26, 4, 22}));
  EXPECT_EQ(t.encode("<r>  hello"), (Ids{27, 11}));  // rstrip takes the spaces
  EXPECT_EQ(t.eos_id(), 23);
  EXPECT_EQ(t.bos_id(), 23);
  EXPECT_TRUE(t.is_special(23));
  EXPECT_FALSE(t.is_special(24));
  EXPECT_EQ(t.decode({11, 23, 16}), "hello<|endoftext|> world");
  EXPECT_EQ(t.decode({11, 23, 16}, true), "hello world");
  EXPECT_EQ(t.decode_token(24), "  ");
  EXPECT_EQ(t.token_id("[MASK]"), 25);
}

// Added-token ids follow Hugging Face, not the "id" written in the file: an added token takes the id
// of the same content in the vocab, else the next id after the vocab and the earlier added tokens;
// an exact duplicate is skipped.
TEST(UnitTokenizer, AddedTokenIdsAsHuggingFace) {
  json j = tiny_json();
  j["added_tokens"][0]["id"] = 500;                   // inconsistent file: HF still gives <|endoftext|> id 23
  j["added_tokens"].push_back(j["added_tokens"][1]);  // exact duplicate of "  ": skipped
  json hello = j["added_tokens"][4];
  hello["content"] = "hello";
  hello["id"] = 77;
  j["added_tokens"].push_back(hello);  // content already in the vocab: keeps vocab id 11
  Tokenizer t = tiny(j);
  EXPECT_EQ(t.token_id("<|endoftext|>"), 23);
  EXPECT_EQ(t.token_id("  "), 24);
  EXPECT_EQ(t.token_id("<r>"), 27);
  EXPECT_EQ(t.vocab_size(), 28);
  EXPECT_EQ(t.encode("xhello<|endoftext|>"), (Ids{22, 11, 23}));  // "hello" is now split out as a token
  EXPECT_EQ(t.encode("hellohello"), (Ids{11, 11}));
}

TEST(UnitTokenizer, NfcBeforeBpe) {
  Tokenizer t = tiny();
  EXPECT_EQ(t.encode("e\xCC\x81"), (Ids{21}));  // e + U+0301 -> NFC "é" = C3 A9 -> "Ã©"
  EXPECT_EQ(t.encode("\xC3\xA9"), (Ids{21}));
  EXPECT_EQ(t.decode({21}), "\xC3\xA9");
}

TEST(UnitTokenizer, PrefixSpaceUnkAndFuse) {
  json j = tiny_json();
  j["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(tiny(j).encode("hello"), (Ids{4, 11}));
  EXPECT_EQ(tiny(j).encode(" hello"), (Ids{4, 11}));  // no second space is added
  j = tiny_json();
  j["added_tokens"] = json::array();
  j["model"]["vocab"]["<unk>"] = 23;
  j["model"]["unk_token"] = "<unk>";
  EXPECT_EQ(tiny(j).encode("hqqh"), (Ids{0, 23, 23, 0}));
  j["model"]["fuse_unk"] = true;
  EXPECT_EQ(tiny(j).encode("hqqh"), (Ids{0, 23, 0}));
}

TEST(UnitTokenizer, DecodeErrorsAndLossy) {
  Tokenizer t = tiny();
  EXPECT_NE(error_of([&] { t.decode({50}); }).find("token id 50 is not in the vocabulary"), std::string::npos);
  EXPECT_NE(error_of([&] { t.decode({-1}); }).find("token id -1"), std::string::npos);
  EXPECT_NE(error_of([&] { t.decode_token(28); }).find("vocab size 28"), std::string::npos);
  // Decoding "Ã" alone gives the lone byte C3: invalid UTF-8, replaced by U+FFFD as HF does.
  EXPECT_EQ(t.decode({19}), "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode_bytes({19}), "\xC3");
  EXPECT_EQ(t.decode({19, 20}), "\xC3\xA9");
}

TEST(UnitTokenizer, InvalidUtf8NamesOffset) {
  Tokenizer t = tiny();
  struct Case {
    std::string text;
    size_t offset;
  } cases[] = {{"ab\xff", 2},           {"hello \xC3", 6}, {"\xC0\x80", 0}, {"ok\xED\xA0\x80", 2},
               {"\xF4\x90\x80\x80", 0}, {"x\xE2\x82", 1},  {"\x80", 0}};
  for (const auto& c : cases) {
    std::string msg = error_of([&] { t.encode(c.text); });
    EXPECT_NE(msg.find("invalid UTF-8 in input text at byte offset " + std::to_string(c.offset)), std::string::npos)
        << msg;
  }
}

TEST(UnitTokenizer, Utf8Lossy) {
  using ssm::tok::utf8_lossy;
  const std::string R = "\xEF\xBF\xBD";
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("a\xff"
                       "b"),
            "a" + R + "b");
  EXPECT_EQ(utf8_lossy("a\xE2\x82"), "a" + R);       // one maximal subpart
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), R + R + R);  // surrogate: three subparts
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98\x81"), "\xF0\x9F\x98\x81");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"
                       "x"),
            R + "x");
}

std::vector<std::string> split(std::string_view s) {
  std::vector<std::string> out;
  ssm::tok::gpt2_split(s, [&](size_t b, size_t e) { out.emplace_back(s.substr(b, e - b)); });
  return out;
}

TEST(UnitTokenizer, Gpt2Split) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split("I'm  here\n\n there's"), (V{"I", "'m", " ", " here", "\n\n", " there", "'s"}));
  EXPECT_EQ(split("a   "), (V{"a", "   "}));
  EXPECT_EQ(split("x1234y"), (V{"x", "1234", "y"}));
  EXPECT_EQ(split("don'T we'll"), (V{"don", "'", "T", " we", "'ll"}));
  EXPECT_EQ(split("?!'s"), (V{"?!'", "s"}));
  EXPECT_EQ(split(" \t x"), (V{" \t", " x"}));
  EXPECT_EQ(split("a\xC2\xA0"
                  "b"),
            (V{"a", "\xC2\xA0", "b"}));  // NBSP is \s but not the optional ' '
  EXPECT_EQ(split("na\xC3\xAFve caf\xC3\xA9 \xE6\x9D\xB1\xE4\xBA\xAC \xD9\xA3"),
            (V{"na\xC3\xAFve", " caf\xC3\xA9", " \xE6\x9D\xB1\xE4\xBA\xAC", " \xD9\xA3"}));  // ٣ is \p{N}
  EXPECT_EQ(split("  "), (V{"  "}));
  EXPECT_EQ(split("'"), (V{"'"}));
}

// Both merge loops must agree with each other on random words and random merge tables.
TEST(UnitTokenizer, MergeLoopsAgree) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    ssm::tok::PairMap m;
    int alphabet = 2 + int(rng() % 4), next_id = alphabet;
    int nmerges = int(rng() % 12);
    for (int r = 0; r < nmerges; ++r) {
      int a = int(rng() % unsigned(next_id)), b = int(rng() % unsigned(next_id));
      m.set(a, b, {r, next_id++});
    }
    std::vector<int32_t> w(1 + rng() % 90);
    for (auto& x : w) x = int32_t(rng() % unsigned(alphabet));
    auto w1 = w, w2 = w;
    ssm::tok::merge_rescan(w1, m);
    ssm::tok::merge_heap(w2, m);
    ASSERT_EQ(w1, w2) << "trial " << trial;
  }
  // Hand-checked: merges (0,0)->2 rank 0, (2,0)->3 rank 1 on 0 0 0 0 0: 2 2 0, then (2,0) -> 2 3.
  ssm::tok::PairMap m;
  m.set(0, 0, {0, 2});
  m.set(2, 0, {1, 3});
  std::vector<int32_t> w = {0, 0, 0, 0, 0}, w2 = w;
  ssm::tok::merge_rescan(w, m);
  ssm::tok::merge_heap(w2, m);
  EXPECT_EQ(w, (std::vector<int32_t>{2, 3}));
  EXPECT_EQ(w2, (std::vector<int32_t>{2, 3}));
}

TEST(UnitTokenizer, MalformedJson) {
  auto msg = [](const std::string& text) { return error_of([&] { Tokenizer::from_json(text, "bad.json"); }); };
  auto msgj = [&](const json& j) { return msg(j.dump()); };
  auto has = [](const std::string& m, const std::string& part) {
    return m.find(part) != std::string::npos ? ::testing::AssertionSuccess()
                                             : ::testing::AssertionFailure() << "'" << m << "' lacks '" << part << "'";
  };
  EXPECT_TRUE(has(msg("{\"model\": "), "[tokenizer.json] bad.json: not valid JSON"));
  EXPECT_TRUE(has(msg("[1, 2]"), "top level must be an object"));
  json j = tiny_json();
  j.erase("model");
  EXPECT_TRUE(has(msgj(j), "'model' is missing"));
  j["model"] = 3;
  EXPECT_TRUE(has(msgj(j), "'model' must be an object"));
  j = tiny_json();
  j["model"].erase("vocab");
  EXPECT_TRUE(has(msgj(j), "model.vocab is missing"));
  j = tiny_json();
  j["model"]["vocab"] = json::array();
  EXPECT_TRUE(has(msgj(j), "model.vocab must be an object"));
  j = tiny_json();
  j["model"]["vocab"]["h"] = "0";
  EXPECT_TRUE(has(msgj(j), "model.vocab[\"h\"] must be an integer id"));
  j["model"]["vocab"]["h"] = -3;
  EXPECT_TRUE(has(msgj(j), "outside [0,"));
  j = tiny_json();
  j["model"]["vocab"]["zz"] = 1;
  EXPECT_TRUE(has(msgj(j), "id 1 is used by both"));
  j = tiny_json();
  j["model"].erase("merges");
  EXPECT_TRUE(has(msgj(j), "model.merges is missing"));
  j["model"]["merges"] = "h e";
  EXPECT_TRUE(has(msgj(j), "model.merges must be an array"));
  j["model"]["merges"] = {"h e", "he"};
  EXPECT_TRUE(has(msgj(j), "model.merges[1] = \"he\" must be two tokens separated by one space"));
  j["model"]["merges"] = {"h q"};
  EXPECT_TRUE(has(msgj(j), "model.merges[0]: right token \"q\" is not in model.vocab"));
  j["model"]["merges"] = {"h o"};
  EXPECT_TRUE(has(msgj(j), "merged token \"ho\" is not in model.vocab"));
  j["model"]["merges"] = json::array({json::array({"h", "e", "l"})});
  EXPECT_TRUE(has(msgj(j), "must be a pair [left, right], got 3 items"));
  j["model"]["merges"] = json::array({json::array({"h", 1})});
  EXPECT_TRUE(has(msgj(j), "model.merges[0][1] must be a string"));
  j["model"]["merges"] = json::array({7});
  EXPECT_TRUE(has(msgj(j), "must be a string \"left right\" or an array"));
  j = tiny_json();
  j["model"]["type"] = "WordPiece";
  EXPECT_TRUE(has(msgj(j), "model.type 'WordPiece' is not supported"));
  j = tiny_json();
  j["model"]["unk_token"] = "<nope>";
  EXPECT_TRUE(has(msgj(j), "model.unk_token \"<nope>\" is not in model.vocab"));
  j = tiny_json();
  j["added_tokens"][0].erase("id");
  EXPECT_TRUE(has(msgj(j), "added_tokens[0].id is missing"));
  j = tiny_json();
  j["added_tokens"][1]["content"] = 5;
  EXPECT_TRUE(has(msgj(j), "added_tokens[1].content must be a string"));
  j = tiny_json();
  j["added_tokens"][1]["lstrip"] = "yes";
  EXPECT_TRUE(has(msgj(j), "added_tokens[1].lstrip must be true or false"));
  j = tiny_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_TRUE(has(msgj(j), "normalizer.type 'Lowercase' is not supported"));
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "Whitespace"}};
  EXPECT_TRUE(has(msgj(j), "pre_tokenizer.type 'Whitespace' is not supported"));
  j.erase("pre_tokenizer");
  EXPECT_TRUE(has(msgj(j), "pre_tokenizer is missing"));
  j = tiny_json();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_TRUE(has(msgj(j), "decoder.type 'WordPiece' is not supported"));
  // Accepted variants: NFC inside a Sequence, ByteLevel inside a Sequence, no decoder.
  j = tiny_json();
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", json::array({{{"type", "NFC"}}})}};
  j["pre_tokenizer"] = {{"type", "Sequence"}, {"pretokenizers", json::array({j["pre_tokenizer"]})}};
  j.erase("decoder");
  EXPECT_EQ(tiny(j).encode("e\xCC\x81 hello"), (Ids{21, 4, 11}));
  EXPECT_TRUE(has(error_of([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); }), "cannot open"));
  EXPECT_TRUE(has(error_of([] { Tokenizer::from_model_dir("/nonexistent"); }), "EleutherAI/gpt-neox-20b"));
}

TEST(UnitTokenizer, ByteLevel) {
  Tokenizer t = Tokenizer::byte_level();
  EXPECT_EQ(t.kind(), "byte");
  EXPECT_EQ(t.vocab_size(), 256);
  EXPECT_EQ(t.eos_id(), -1);
  std::string s("a\xff\x00z", 4);
  EXPECT_EQ(t.encode(s), (Ids{97, 255, 0, 122}));  // any bytes, no UTF-8 check
  EXPECT_EQ(t.decode_bytes(t.encode(s)), s);
  EXPECT_EQ(t.decode({104, 105}), "hi");
  EXPECT_EQ(t.token_id("a"), 97);
  EXPECT_THROW(t.decode({256}), ssm::Error);
}

TEST(UnitTokenizer, CharLevel) {
  Tokenizer t = Tokenizer::char_level("ab\xC3\xA9 ");
  EXPECT_EQ(t.kind(), "char");
  EXPECT_EQ(t.vocab_size(), 4);
  EXPECT_EQ(t.encode("b\xC3\xA9 a"), (Ids{1, 2, 3, 0}));
  EXPECT_EQ(t.decode({1, 2, 3, 0}), "b\xC3\xA9 a");
  EXPECT_NE(error_of([&] { t.encode("abc"); }).find("character U+0063 'c' at byte offset 2 is not in the vocabulary"),
            std::string::npos);
  EXPECT_NE(error_of([&] { t.encode("a\xff"); }).find("byte offset 1"), std::string::npos);
  EXPECT_NE(error_of([] { Tokenizer::char_level("aba"); }).find("repeats the character 'a'"), std::string::npos);
  EXPECT_THROW(Tokenizer::char_level(""), ssm::Error);
}

TEST(UnitTokenizer, EmptyTokenizerThrows) {
  Tokenizer t;
  EXPECT_EQ(t.kind(), "empty");
  EXPECT_NE(error_of([&] { t.encode("x"); }).find("empty tokenizer"), std::string::npos);
}

// More distinct words than the word cache holds (it is cleared when full): results must not depend
// on the cache state, so two fresh tokenizers fed the words in opposite orders agree word by word.
TEST(UnitTokenizer, CacheEvictionKeepsResults) {
  const char letters[] = "helowrdax";
  std::vector<std::string> words;
  for (int i = 0; i < 40000; ++i) {
    std::string w = " ";
    for (int k = i; k > 0 || w.size() == 1; k /= 9) w += letters[k % 9];
    words.push_back(w);
  }
  Tokenizer a = tiny(), b = tiny();
  std::vector<Ids> fwd(words.size()), rev(words.size());
  for (size_t i = 0; i < words.size(); ++i) fwd[i] = a.encode(words[i]);
  for (size_t i = words.size(); i-- > 0;) rev[i] = b.encode(words[i]);
  for (size_t i = 0; i < words.size(); ++i) ASSERT_EQ(fwd[i], rev[i]) << words[i];
  for (size_t i = 0; i < words.size(); ++i) ASSERT_EQ(a.encode(words[i]), fwd[i]) << words[i];
  EXPECT_EQ(a.encode(" hello"), (Ids{4, 11}));
}

// Copies share the loaded vocabulary and cache; concurrent encodes agree with a serial one.
TEST(UnitTokenizer, ThreadSafeEncode) {
  Tokenizer t = tiny();
  std::string text;
  for (int i = 0; i < 200; ++i) text += i % 3 ? "hello world " : "hel lll el ";
  Ids want = t.encode(text);
  std::vector<Ids> got(4);
  std::vector<std::thread> th;
  for (int k = 0; k < 4; ++k) th.emplace_back([&, k] { got[size_t(k)] = Tokenizer(t).encode(text); });
  for (auto& x : th) x.join();
  for (const auto& g : got) EXPECT_EQ(g, want);
}

}  // namespace
