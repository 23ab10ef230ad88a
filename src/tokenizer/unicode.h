// Unicode helpers for the tokenizers: UTF-8 validation and decoding, the character classes of the
// GPT-2 pre-tokenizer pattern, normalization forms (utf8proc), the GPT-2 byte↔unicode table and
// Rust-style lossy UTF-8 repair.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace ssm::tok {

// Byte offset of the first invalid UTF-8 sequence in s (overlong forms, surrogates and code points
// above U+10FFFF are invalid), or std::string_view::npos when s is valid.
size_t utf8_invalid_offset(std::string_view s);

// Decodes the code point at p, which must start a valid sequence; *len receives its byte length.
inline uint32_t utf8_decode(const unsigned char* p, int* len) {
  unsigned char c = p[0];
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  if (c < 0xE0) {
    *len = 2;
    return uint32_t(c & 0x1F) << 6 | (p[1] & 0x3F);
  }
  if (c < 0xF0) {
    *len = 3;
    return uint32_t(c & 0x0F) << 12 | uint32_t(p[1] & 0x3F) << 6 | (p[2] & 0x3F);
  }
  *len = 4;
  return uint32_t(c & 0x07) << 18 | uint32_t(p[1] & 0x3F) << 12 | uint32_t(p[2] & 0x3F) << 6 | (p[3] & 0x3F);
}

void utf8_append(std::string& out, uint32_t cp);

// Classes of the GPT-2 pattern: \p{L}, \p{N}, \s (White_Space, as Oniguruma's Unicode \s), the rest.
enum class CharClass : uint8_t { other, letter, number, space };
CharClass char_class(uint32_t cp);  // any code point
bool is_white_space(uint32_t cp);   // Unicode White_Space (also Rust's char::is_whitespace)
bool is_word_char(uint32_t cp);     // Rust regex \w: letters, marks, Nd, Nl, Pc, U+200C/U+200D

// The class of the (valid UTF-8) character at p; *len receives its byte length.
extern const CharClass kAsciiClass[128];
inline CharClass class_at(const unsigned char* p, int* len) {
  if (p[0] < 0x80) {
    *len = 1;
    return kAsciiClass[p[0]];
  }
  return char_class(utf8_decode(p, len));
}

enum class NormForm : uint8_t { none, nfc, nfd, nfkc, nfkd };
// Normalizes valid UTF-8 text. ASCII text is returned unchanged without calling utf8proc.
std::string normalize(std::string_view s, NormForm form);

// Calls fn(begin, end) (byte offsets) for each word of s under the GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// s must be valid UTF-8. The words cover s exactly, in order.
template <class Fn>
void gpt2_split(std::string_view s, Fn&& fn) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const size_t start = i;
    // 1. Contractions (case-sensitive, as in the pattern).
    if (p[i] == '\'' && i + 1 < n) {
      unsigned char c1 = p[i + 1], c2 = i + 2 < n ? p[i + 2] : 0;
      size_t len = 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
        len = 2;
      else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
        len = 3;
      if (len) {
        i += len;
        fn(start, i);
        continue;
      }
    }
    // 2. An optional space, then a run of letters, of numbers, or of other non-space characters.
    int l0 = 0;
    CharClass c0 = class_at(p + i, &l0);
    size_t j = i;
    CharClass run = c0;
    if (p[i] == ' ' && i + 1 < n) {
      int l1 = 0;
      CharClass c1 = class_at(p + i + 1, &l1);
      if (c1 != CharClass::space) {
        j = i + 1;
        run = c1;
      }
    }
    if (run != CharClass::space) {
      int l = 0;
      while (j < n && class_at(p + j, &l) == run) j += size_t(l);
      i = j;
      fn(start, i);
      continue;
    }
    // 3. Whitespace: \s+(?!\S) keeps the last space for the next word when a non-space follows;
    //    a single space before a non-space falls through to \s+.
    size_t last = i;  // start of the last whitespace character of the run
    int chars = 0;
    while (j < n) {
      int l = 0;
      if (class_at(p + j, &l) != CharClass::space) break;
      last = j;
      j += size_t(l);
      ++chars;
    }
    i = (j < n && chars >= 2) ? last : j;
    fn(start, i);
  }
}

// The GPT-2 byte→code point table of the ByteLevel pre-tokenizer, and its inverse (-1 if the code
// point is not in the table).
const std::array<uint32_t, 256>& byte_to_unicode();
int unicode_to_byte(uint32_t cp);

// Bytes → valid UTF-8, each maximal invalid subsequence replaced by U+FFFD (as Rust's
// String::from_utf8_lossy, which Hugging Face's ByteLevel decoder uses).
std::string utf8_lossy(std::string_view bytes);

}  // namespace ssm::tok
