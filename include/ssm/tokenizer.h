// ssm.cpp — tokenizers: byte-level BPE from a Hugging Face tokenizer.json (GPT-NeoX-20B, GPT-2, ...),
// plus plain byte and character vocabularies for small models trained here.
//
// The BPE pipeline follows Hugging Face `tokenizers` exactly (ids are bit-identical on the GPT-NeoX
// test vectors):
//   1. added tokens with normalized=false are split out of the raw text (leftmost-longest match,
//      honouring single_word / lstrip / rstrip);
//   2. each remaining piece is normalized (NFC/NFD/NFKC/NFKD or none) and the normalized=true
//      added tokens are split out of it;
//   3. each remaining piece is cut into words by the GPT-2 pattern
//      's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//      (implemented by hand with utf8proc categories);
//   4. each word's bytes are merged by BPE (lowest merge rank first, leftmost on ties).
// encode() returns the ids without any post-processor template (no BOS/EOS is added).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ssm {

class Tokenizer {
 public:
  // An empty tokenizer: every method except kind() throws. Use one of the factories below.
  Tokenizer();

  // Hugging Face tokenizer.json with a BPE model and a ByteLevel pre-tokenizer. Malformed or
  // unsupported files throw ssm::Error naming the file and the offending field.
  static Tokenizer from_file(const std::string& tokenizer_json);
  // The same from the JSON text itself; `source` names it in error messages.
  static Tokenizer from_json(std::string_view json_text, const std::string& source = "<memory>");
  // DIR/tokenizer.json; when missing, the error says where to get the GPT-NeoX-20B tokenizer.
  static Tokenizer from_model_dir(const std::string& dir);
  // 256 ids, id = byte value. Accepts any bytes (no UTF-8 check); no special tokens.
  static Tokenizer byte_level();
  // One id per code point of `alphabet` (UTF-8, distinct code points), in the given order.
  // Text containing a character outside the alphabet throws. No special tokens.
  static Tokenizer char_level(std::string_view alphabet);

  // Text → ids. Throws ssm::Error on invalid UTF-8 (naming the byte offset) except for byte_level().
  std::vector<int32_t> encode(std::string_view text) const;
  // Ids → text, as Hugging Face decodes (special tokens included unless skip_special): the token
  // bytes concatenated, then each invalid UTF-8 sequence replaced by U+FFFD. Unknown ids throw
  // (Hugging Face silently drops them).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // The raw bytes of the tokens concatenated (may end inside a UTF-8 character).
  std::string decode_bytes(const std::vector<int32_t>& ids) const;
  // The raw bytes of one token, for streaming (buffer until the UTF-8 sequence completes).
  std::string decode_token(int32_t id) const;

  // One more than the largest id (50,277 for GPT-NeoX-20B).
  int32_t vocab_size() const;
  // The id of a token as written in tokenizer.json (byte-level form, e.g. "Ġthe") or of an added
  // token's content ("<|endoftext|>"); for byte/char vocabularies, the token's own text.
  std::optional<int32_t> token_id(const std::string& tok) const;
  // End/begin-of-text ids found among the special added tokens (<|endoftext|>, </s>, <s>, ...),
  // or -1 when the vocabulary has none (byte_level, char_level).
  int32_t eos_id() const;
  int32_t bos_id() const;
  // Whether `id` is a special added token (skipped by decode(ids, true)).
  bool is_special(int32_t id) const;
  // "bpe", "byte", "char" or "empty".
  std::string kind() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  const Impl& impl(const char* where) const;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace ssm
