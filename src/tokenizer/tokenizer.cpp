// Tokenizer: encoding pipeline, decoding, and the byte / character vocabularies.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "ssm/base.h"
#include "tokenizer/impl.h"

namespace ssm {
namespace tok {

namespace {

std::string hex_byte(unsigned char b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "0x%02x", b);
  return buf;
}

void check_utf8(std::string_view text) {
  size_t bad = utf8_invalid_offset(text);
  if (bad != std::string_view::npos)
    fail("tokenizer", "invalid UTF-8 in input text at byte offset " + std::to_string(bad) + " (byte " +
                          hex_byte(static_cast<unsigned char>(text[bad])) + ")");
}

// The code point that ends at s[end) (s valid UTF-8, end > 0).
uint32_t cp_before(std::string_view s, size_t end) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(s[b]) & 0xC0) == 0x80) --b;
  int len = 0;
  return utf8_decode(reinterpret_cast<const unsigned char*>(s.data()) + b, &len);
}

uint32_t cp_at(std::string_view s, size_t pos, int* len) {
  return utf8_decode(reinterpret_cast<const unsigned char*>(s.data()) + pos, len);
}

}  // namespace

void AddedMatcher::add(const std::string& pattern, const AddedToken* token) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (unsigned char b : pattern) {
    int32_t c = child(node, b);
    if (c < 0) {
      c = int32_t(nodes_.size());
      nodes_.emplace_back();
      auto& ch = nodes_[size_t(node)].child;
      auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(b, int32_t(-1)));
      ch.insert(it, {b, c});
    }
    node = c;
  }
  // A later token with the same pattern replaces an earlier one (the last id wins, as in a map).
  nodes_[size_t(node)].token = token;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

int32_t AddedMatcher::child(int32_t node, unsigned char b) const {
  for (const auto& [byte, c] : nodes_[size_t(node)].child)
    if (byte == b) return c;
  return -1;
}

void AddedMatcher::split(std::string_view s, std::vector<Piece>& out) const {
  const size_t n = s.size();
  size_t start_offset = 0, i = 0;
  while (i < n) {
    if (!first_byte_[static_cast<unsigned char>(s[i])]) {
      ++i;
      continue;
    }
    // Longest pattern starting at i.
    const AddedToken* tok = nullptr;
    size_t stop = 0;
    int32_t node = 0;
    for (size_t j = i; j < n; ++j) {
      node = child(node, static_cast<unsigned char>(s[j]));
      if (node < 0) break;
      if (nodes_[size_t(node)].token) tok = nodes_[size_t(node)].token, stop = j + 1;
    }
    if (!tok) {
      ++i;
      continue;
    }
    size_t start = i;
    i = stop;  // the search resumes after the match even if the match is then discarded
    if (tok->single_word) {
      int len = 0;
      bool word_before = start > 0 && is_word_char(cp_before(s, start));
      bool word_after = stop < n && is_word_char(cp_at(s, stop, &len));
      if (word_before || word_after) continue;
    }
    if (tok->lstrip) {
      size_t b = start;
      while (b > 0) {
        uint32_t cp = cp_before(s, b);
        if (!is_white_space(cp)) break;
        b -= cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
      }
      start = std::max(b, start_offset);
    }
    if (tok->rstrip) {
      int len = 0;
      while (stop < n && is_white_space(cp_at(s, stop, &len))) stop += size_t(len);
    }
    // A match inside the whitespace that a previous rstrip token took (start < start_offset) is
    // still emitted: Hugging Face does so (that whitespace then counts twice), and we follow it.
    if (start_offset < start) out.push_back({start_offset, start, -1});
    out.push_back({start, stop, tok->id});
    start_offset = stop;
  }
  if (start_offset < n) out.push_back({start_offset, n, -1});
}

}  // namespace tok

// ---- encoding ------------------------------------------------------------------------------------

void Tokenizer::Impl::encode_bpe(std::string_view text, std::vector<int32_t>& out) const {
  tok::check_utf8(text);
  std::vector<tok::AddedMatcher::Piece> raw, pieces;
  if (raw_added.empty())
    raw.push_back({0, text.size(), -1});
  else
    raw_added.split(text, raw);
  std::string prefixed;
  for (const auto& r : raw) {
    if (r.id >= 0) {
      out.push_back(r.id);
      continue;
    }
    const std::string normalized = tok::normalize(text.substr(r.begin, r.end - r.begin), norm);
    pieces.clear();
    if (norm_added.empty())
      pieces.push_back({0, normalized.size(), -1});
    else
      norm_added.split(normalized, pieces);
    for (const auto& p : pieces) {
      if (p.id >= 0) {
        out.push_back(p.id);
        continue;
      }
      std::string_view piece = std::string_view(normalized).substr(p.begin, p.end - p.begin);
      if (piece.empty()) continue;
      if (add_prefix_space && piece[0] != ' ') {
        prefixed.assign(1, ' ');
        prefixed.append(piece);
        piece = prefixed;
      }
      if (!use_regex) {
        bpe.encode_word(piece, out);
        continue;
      }
      tok::gpt2_split(piece, [&](size_t b, size_t e) { bpe.encode_word(piece.substr(b, e - b), out); });
    }
  }
}

void Tokenizer::Impl::encode_chars(std::string_view text, std::vector<int32_t>& out) const {
  tok::check_utf8(text);
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = 0; i < text.size();) {
    int len = 0;
    uint32_t cp = tok::utf8_decode(p + i, &len);
    auto it = char_to_id.find(cp);
    if (it == char_to_id.end()) {
      char buf[16];
      std::snprintf(buf, sizeof buf, "U+%04X", unsigned(cp));
      fail("tokenizer", "character " + std::string(buf) + " '" + std::string(text.substr(i, size_t(len))) +
                            "' at byte offset " + std::to_string(i) + " is not in the vocabulary of " +
                            std::to_string(char_to_id.size()) + " characters");
    }
    out.push_back(it->second);
    i += size_t(len);
  }
}

// ---- Tokenizer -----------------------------------------------------------------------------------

Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

const Tokenizer::Impl& Tokenizer::impl(const char* where) const {
  SSM_CHECK(impl_ != nullptr, where, "empty tokenizer (create it with Tokenizer::from_file, byte_level or char_level)");
  return *impl_;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& im = impl("tokenizer");
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  switch (im.kind) {
    case TokKind::bpe: im.encode_bpe(text, out); break;
    case TokKind::chars: im.encode_chars(text, out); break;
    case TokKind::bytes:
      for (unsigned char c : text) out.push_back(int32_t(c));
      break;
  }
  return out;
}

std::string Tokenizer::decode_bytes(const std::vector<int32_t>& ids) const {
  std::string out;
  for (int32_t id : ids) out += decode_token(id);
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  const Impl& im = impl("tokenizer");
  std::string out;
  for (int32_t id : ids) {
    std::string t = decode_token(id);
    if (skip_special && im.id_special[size_t(id)]) continue;
    out += t;
  }
  return tok::utf8_lossy(out);
}

std::string Tokenizer::decode_token(int32_t id) const {
  const Impl& im = impl("tokenizer");
  SSM_CHECK(id >= 0 && size_t(id) < im.id_bytes.size() && im.id_present[size_t(id)], "tokenizer",
            "token id " + std::to_string(id) + " is not in the vocabulary (vocab size " +
                std::to_string(im.id_bytes.size()) + ")");
  return im.id_bytes[size_t(id)];
}

int32_t Tokenizer::vocab_size() const { return int32_t(impl("tokenizer").id_bytes.size()); }

std::optional<int32_t> Tokenizer::token_id(const std::string& tok) const {
  const Impl& im = impl("tokenizer");
  auto it = im.token_to_id.find(tok);
  if (it == im.token_to_id.end()) return std::nullopt;
  return it->second;
}

int32_t Tokenizer::eos_id() const { return impl("tokenizer").eos; }
int32_t Tokenizer::bos_id() const { return impl("tokenizer").bos; }

bool Tokenizer::is_special(int32_t id) const {
  const Impl& im = impl("tokenizer");
  return id >= 0 && size_t(id) < im.id_special.size() && im.id_special[size_t(id)];
}

std::string Tokenizer::kind() const {
  if (!impl_) return "empty";
  switch (impl_->kind) {
    case TokKind::bpe: return "bpe";
    case TokKind::bytes: return "byte";
    case TokKind::chars: return "char";
  }
  return "empty";
}

Tokenizer Tokenizer::byte_level() {
  auto im = std::make_shared<Impl>();
  im->kind = TokKind::bytes;
  im->id_bytes.resize(256);
  im->id_present.assign(256, 1);
  im->id_special.assign(256, 0);
  for (int b = 0; b < 256; ++b) {
    im->id_bytes[size_t(b)] = std::string(1, char(b));
    im->token_to_id[im->id_bytes[size_t(b)]] = b;
  }
  return Tokenizer(std::move(im));
}

Tokenizer Tokenizer::char_level(std::string_view alphabet) {
  tok::check_utf8(alphabet);
  SSM_CHECK(!alphabet.empty(), "tokenizer", "char_level needs a non-empty alphabet");
  auto im = std::make_shared<Impl>();
  im->kind = TokKind::chars;
  const auto* p = reinterpret_cast<const unsigned char*>(alphabet.data());
  for (size_t i = 0; i < alphabet.size();) {
    int len = 0;
    uint32_t cp = tok::utf8_decode(p + i, &len);
    std::string s(alphabet.substr(i, size_t(len)));
    SSM_CHECK(im->char_to_id.find(cp) == im->char_to_id.end(), "tokenizer",
              "char_level alphabet repeats the character '" + s + "' (at byte offset " + std::to_string(i) + ")");
    int32_t id = int32_t(im->id_bytes.size());
    im->char_to_id[cp] = id;
    im->token_to_id[s] = id;
    im->id_bytes.push_back(std::move(s));
    i += size_t(len);
  }
  im->id_present.assign(im->id_bytes.size(), 1);
  im->id_special.assign(im->id_bytes.size(), 0);
  return Tokenizer(std::move(im));
}

Tokenizer Tokenizer::from_model_dir(const std::string& dir) {
  std::filesystem::path p = std::filesystem::path(dir) / "tokenizer.json";
  std::error_code ec;
  if (!std::filesystem::exists(p, ec))
    fail("tokenizer",
         "no tokenizer.json in '" + dir +
             "'. The state-spaces Mamba checkpoints use the GPT-NeoX-20B tokenizer: download tokenizer.json "
             "of EleutherAI/gpt-neox-20b from the Hugging Face hub "
             "(https://huggingface.co/EleutherAI/gpt-neox-20b/resolve/main/tokenizer.json) and pass it with "
             "--tokenizer FILE, or copy it into the model directory");
  return from_file(p.string());
}

}  // namespace ssm
