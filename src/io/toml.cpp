#include "ssm/toml.h"

#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "ssm/base.h"
#include "ssm/safetensors.h"

namespace ssm::io {

using json = nlohmann::json;

namespace {

bool is_bare_key_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

class Parser {
 public:
  Parser(const std::string& text, const std::string& where) : s_(text), where_(where) {}

  TomlDocument run() {
    check_text();
    json* table = &doc_.root;
    std::string table_path;
    while (true) {
      skip_spaces();
      if (at_end()) break;
      char c = s_[i_];
      if (c == '#') {
        skip_comment();
      } else if (c == '\n' || c == '\r') {
        newline();
        continue;
      } else if (c == '[') {
        table = &header(table_path);
      } else {
        key_value(*table, table_path);
      }
      skip_spaces();
      if (!at_end() && s_[i_] == '#') skip_comment();
      if (!at_end()) {
        if (s_[i_] != '\n' && s_[i_] != '\r')
          err(std::string("unexpected '") + s_[i_] + "' (expected the end of the line)");
        newline();
      }
    }
    return std::move(doc_);
  }

 private:
  [[noreturn]] void err(const std::string& what) const {
    fail("toml", where_ + ":" + std::to_string(line_) + ": " + what);
  }
  bool at_end() const { return i_ >= s_.size(); }
  char peek(size_t k = 0) const { return i_ + k < s_.size() ? s_[i_ + k] : '\0'; }
  bool starts(const char* lit) const { return s_.compare(i_, std::char_traits<char>::length(lit), lit) == 0; }

  // Valid UTF-8, and no control characters other than tab, LF and CR-LF.
  void check_text() {
    size_t b = 0;
    for (int line = 1; b <= s_.size(); ++line) {
      size_t e = s_.find('\n', b);
      std::string ln = s_.substr(b, e == std::string::npos ? std::string::npos : e - b);
      line_ = line;
      if (!is_valid_utf8(ln)) err("not valid UTF-8");
      for (size_t k = 0; k < ln.size(); ++k) {
        unsigned char c = static_cast<unsigned char>(ln[k]);
        bool crlf = c == '\r' && k + 1 == ln.size() && e != std::string::npos;
        if ((c < 0x20 && c != '\t' && !crlf) || c == 0x7F)
          err("control character " + std::to_string(int(c)) + " in the text");
      }
      if (e == std::string::npos) break;
      b = e + 1;
    }
    line_ = 1;
  }

  void skip_spaces() {
    while (!at_end() && (s_[i_] == ' ' || s_[i_] == '\t')) ++i_;
  }
  void skip_comment() {
    while (!at_end() && s_[i_] != '\n' && s_[i_] != '\r') ++i_;
  }
  void newline() {  // at '\n' or "\r\n" (check_text allows no other '\r')
    if (s_[i_] == '\r') ++i_;
    ++i_;
    ++line_;
  }
  // Spaces, newlines and comments inside an array.
  void skip_blank() {
    while (!at_end()) {
      skip_spaces();
      if (at_end()) return;
      if (s_[i_] == '#')
        skip_comment();
      else if (s_[i_] == '\n' || s_[i_] == '\r')
        newline();
      else
        return;
    }
  }

  std::string key() {
    if (peek() == '"' || peek() == '\'') {
      if (starts("\"\"\"") || starts("'''")) err("a multi-line string cannot be a key");
      return peek() == '"' ? basic_string() : literal_string();
    }
    size_t b = i_;
    while (!at_end() && is_bare_key_char(s_[i_])) ++i_;
    if (i_ == b)
      err(at_end() || s_[i_] == '\n' || s_[i_] == '\r' ? "expected a key"
                                                       : std::string("unexpected '") + s_[i_] + "' (expected a key)");
    return s_.substr(b, i_ - b);
  }

  json& header(std::string& table_path) {
    ++i_;  // '['
    if (peek() == '[') err("arrays of tables ([[...]]) are not supported");
    json* t = &doc_.root;
    std::string path;
    while (true) {
      skip_spaces();
      std::string k = key();
      path += (path.empty() ? "" : ".") + k;
      if (t->contains(k) && !(*t)[k].is_object())
        err("[" + path + "]: '" + path + "' is already a value (line " + std::to_string(doc_.line_of(path)) + ")");
      t = &(*t)[k];
      if (t->is_null()) *t = json::object();
      skip_spaces();
      if (peek() == '.') {
        ++i_;
        continue;
      }
      if (peek() != ']') err("expected ']' to close the table header [" + path);
      ++i_;
      break;
    }
    if (!defined_.insert(path).second)
      err("table [" + path + "] is defined twice (first at line " + std::to_string(doc_.line_of(path)) + ")");
    doc_.lines[path] = line_;
    table_path = path;
    return *t;
  }

  void key_value(json& table, const std::string& table_path) {
    std::string k = key();
    std::string path = table_path.empty() ? k : table_path + "." + k;
    skip_spaces();
    if (peek() == '.') err("dotted keys ('" + k + ".…') are not supported; use a [table] header");
    if (peek() != '=') err("expected '=' after the key '" + k + "'");
    ++i_;
    skip_spaces();
    if (table.contains(k))
      err("duplicate key '" + path + "' (first at line " + std::to_string(doc_.line_of(path)) + ")");
    int line = line_;
    json v = value(path);
    table[k] = std::move(v);
    doc_.lines[path] = line;
  }

  json value(const std::string& path) {
    if (at_end() || peek() == '\n' || peek() == '\r' || peek() == '#') err("missing value for '" + path + "'");
    char c = peek();
    if (c == '"') {
      if (starts("\"\"\"")) err("multi-line strings are not supported ('" + path + "')");
      return basic_string();
    }
    if (c == '\'') {
      if (starts("'''")) err("multi-line strings are not supported ('" + path + "')");
      return literal_string();
    }
    if (c == '[') return array(path);
    if (c == '{') err("inline tables are not supported ('" + path + "'); use a [table] header");
    // A bare token: boolean or number.
    size_t b = i_;
    while (!at_end() && std::string(" \t\r\n,]#").find(s_[i_]) == std::string::npos) ++i_;
    std::string tok = s_.substr(b, i_ - b);
    if (tok == "true") return true;
    if (tok == "false") return false;
    return number(tok, path);
  }

  json number(const std::string& tok, const std::string& path) {
    const std::string bad = "'" + tok + "' is not a valid value for '" + path + "'";
    std::string t = tok;
    bool neg = false;
    size_t p = 0;
    if (!t.empty() && (t[0] == '+' || t[0] == '-')) neg = t[0] == '-', p = 1;
    std::string body = t.substr(p);
    if (body == "inf") return neg ? -HUGE_VAL : HUGE_VAL;
    if (body == "nan") return std::nan("");
    if (body.size() > 1 && body[0] == '0' && (body[1] == 'x' || body[1] == 'o' || body[1] == 'b'))
      err("hexadecimal, octal and binary integers are not supported ('" + path + "')");
    bool date = body.size() >= 5 && body[4] == '-';
    for (size_t k = 0; date && k < 4; ++k) date = std::isdigit(static_cast<unsigned char>(body[k]));
    if (body.find(':') != std::string::npos || date) err("dates and times are not supported ('" + path + "')");
    // Digits with single underscores between digits; returns the digits, or "" when malformed.
    auto digits = [&](size_t& q) {
      std::string d;
      bool prev_digit = false;
      while (q < body.size() && (std::isdigit(static_cast<unsigned char>(body[q])) || body[q] == '_')) {
        if (body[q] == '_') {
          if (!prev_digit || q + 1 >= body.size() || !std::isdigit(static_cast<unsigned char>(body[q + 1]))) err(bad);
          prev_digit = false;
        } else {
          d += body[q];
          prev_digit = true;
        }
        ++q;
      }
      return d;
    };
    size_t q = 0;
    std::string ip = digits(q);
    if (ip.empty()) err(bad);
    if (ip.size() > 1 && ip[0] == '0') err(bad + " (leading zeros)");
    std::string num = (neg ? "-" : "") + ip;
    bool is_float = false;
    if (q < body.size() && body[q] == '.') {
      ++q;
      std::string fp = digits(q);
      if (fp.empty()) err(bad);
      num += "." + fp;
      is_float = true;
    }
    if (q < body.size() && (body[q] == 'e' || body[q] == 'E')) {
      ++q;
      num += "e";
      if (q < body.size() && (body[q] == '+' || body[q] == '-')) num += body[q++];
      std::string ep = digits(q);
      if (ep.empty()) err(bad);
      num += ep;
      is_float = true;
    }
    if (q != body.size()) err(bad);
    if (is_float) {
      errno = 0;
      double v = std::strtod(num.c_str(), nullptr);
      if (errno == ERANGE && std::isinf(v)) err("float out of range for '" + path + "': " + tok);
      return v;
    }
    int64_t v = 0;
    auto r = std::from_chars(num.data(), num.data() + num.size(), v);
    if (r.ec != std::errc() || r.ptr != num.data() + num.size()) err("integer out of range for '" + path + "': " + tok);
    return v;
  }

  std::string literal_string() {
    ++i_;
    size_t b = i_;
    while (!at_end() && s_[i_] != '\'' && s_[i_] != '\n' && s_[i_] != '\r') ++i_;
    if (at_end() || s_[i_] != '\'') err("unterminated string");
    return s_.substr(b, i_++ - b);
  }

  std::string basic_string() {
    ++i_;
    std::string out;
    while (true) {
      if (at_end() || s_[i_] == '\n' || s_[i_] == '\r') err("unterminated string");
      char c = s_[i_++];
      if (c == '"') return out;
      if (c != '\\') {
        out += c;
        continue;
      }
      char e = peek();
      ++i_;
      switch (e) {
        case 'b': out += '\b'; break;
        case 't': out += '\t'; break;
        case 'n': out += '\n'; break;
        case 'f': out += '\f'; break;
        case 'r': out += '\r'; break;
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case 'u':
        case 'U': {
          size_t n = e == 'u' ? 4 : 8;
          uint32_t cp = 0;
          for (size_t k = 0; k < n; ++k, ++i_) {
            char h = peek();
            int d = h >= '0' && h <= '9'   ? h - '0'
                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                           : -1;
            if (d < 0) err(std::string("\\") + e + " needs " + std::to_string(n) + " hexadecimal digits");
            cp = cp * 16 + uint32_t(d);
          }
          if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            err("\\" + std::string(1, e) + " escape is not a Unicode scalar value");
          append_utf8(out, cp);
          break;
        }
        default:
          err(e == '\0' || e == '\n' || e == '\r' ? std::string("unterminated string")
                                                  : std::string("unknown escape sequence \\") + e);
      }
    }
  }

  json array(const std::string& path) {
    ++i_;  // '['
    json a = json::array();
    while (true) {
      skip_blank();
      if (at_end()) err("unterminated array '" + path + "'");
      if (peek() == ']') break;
      a.push_back(value(path + "[" + std::to_string(a.size()) + "]"));
      skip_blank();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      if (peek() != ']')
        err(at_end() ? "unterminated array '" + path + "'" : "expected ',' or ']' in the array '" + path + "'");
      break;
    }
    ++i_;  // ']'
    return a;
  }

  const std::string& s_;
  std::string where_;
  size_t i_ = 0;
  int line_ = 1;
  TomlDocument doc_;
  std::set<std::string> defined_;
};

}  // namespace

TomlDocument parse_toml(const std::string& text, const std::string& where) { return Parser(text, where).run(); }

TomlDocument load_toml_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SSM_CHECK(bool(in), "toml", "cannot open '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_toml(ss.str(), path);
}

}  // namespace ssm::io
