// Tokenizer internals shared by tokenizer.cpp (encode/decode) and tokenizer_json.cpp (loading).
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ssm/tokenizer.h"
#include "tokenizer/bpe.h"
#include "tokenizer/unicode.h"

namespace ssm {
namespace tok {

struct AddedToken {
  std::string content;  // as written in tokenizer.json
  int32_t id = -1;
  bool special = false, single_word = false, lstrip = false, rstrip = false, normalized = true;
};

// Leftmost-longest matching of a set of added tokens, with Hugging Face's single_word / lstrip /
// rstrip handling. Patterns live in a byte trie.
class AddedMatcher {
 public:
  // `pattern` is what is searched for (the content, normalized for normalized=true tokens).
  void add(const std::string& pattern, const AddedToken* token);
  bool empty() const { return nodes_.size() <= 1; }
  struct Piece {
    size_t begin, end;
    int32_t id;  // -1: ordinary text
  };
  // Splits s into ordinary text and added tokens, in order, none empty. As in Hugging Face, a token
  // found inside whitespace that an rstrip token already took is still emitted (pieces overlap).
  void split(std::string_view s, std::vector<Piece>& out) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> child;  // sorted by byte
    const AddedToken* token = nullptr;                     // a pattern ends here
  };
  int32_t child(int32_t node, unsigned char b) const;
  std::vector<Node> nodes_ = std::vector<Node>(1);
  bool first_byte_[256] = {};
};

}  // namespace tok

enum class TokKind : uint8_t { bpe, bytes, chars };

struct Tokenizer::Impl {
  TokKind kind = TokKind::bytes;
  std::vector<std::string> id_bytes;                     // [vocab_size] decoded bytes of each id
  std::vector<uint8_t> id_present;                       // [vocab_size] 1 if the id exists
  std::vector<uint8_t> id_special;                       // [vocab_size] 1 for special added tokens
  std::unordered_map<std::string, int32_t> token_to_id;  // tokenizer.json spelling → id
  int32_t eos = -1, bos = -1;

  // BPE only.
  tok::NormForm norm = tok::NormForm::none;
  bool add_prefix_space = false;
  bool use_regex = true;
  std::vector<tok::AddedToken> added;  // stable storage the matchers point into
  tok::AddedMatcher raw_added, norm_added;
  tok::BpeModel bpe;

  // Character vocabulary only: code point → id.
  std::unordered_map<uint32_t, int32_t> char_to_id;

  void encode_bpe(std::string_view text, std::vector<int32_t>& out) const;
  void encode_chars(std::string_view text, std::vector<int32_t>& out) const;
};

}  // namespace ssm
