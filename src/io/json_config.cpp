// JSON file loading with positioned errors, and typed getters for model configs.
#include "ssm/json_config.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "ssm/base.h"

namespace ssm::io {

using json = nlohmann::json;

namespace {

bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }

// Quotes Python's bare NaN / Infinity / -Infinity tokens outside strings. Each rewrite inserts two
// quote characters; `inserted_at` records where (in the rewritten text) so error positions can be
// mapped back to the original.
std::string quote_bare_floats(const std::string& s, std::vector<size_t>* inserted_at) {
  static const char* kTokens[] = {"-Infinity", "Infinity", "NaN"};
  std::string out;
  out.reserve(s.size());
  bool in_string = false;
  for (size_t i = 0; i < s.size();) {
    char c = s[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < s.size()) {
        out += s[i + 1];
        i += 2;
        continue;
      }
      if (c == '"') in_string = false;
      ++i;
      continue;
    }
    if (c == '"') {
      in_string = true;
      out += c;
      ++i;
      continue;
    }
    bool replaced = false;
    if (i == 0 || !ident_char(s[i - 1])) {
      for (const char* tok : kTokens) {
        size_t n = std::strlen(tok);
        if (s.compare(i, n, tok) == 0 && (i + n == s.size() || !ident_char(s[i + n]))) {
          inserted_at->push_back(out.size());
          out += '"';
          out.append(tok, n);
          out += '"';
          i += n;
          replaced = true;
          break;
        }
      }
    }
    if (!replaced) out += s[i++];
  }
  return out;
}

std::string snippet(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

[[noreturn]] void bad_key(const std::string& where, const std::string& key, const std::string& what) {
  fail("config", where + ": key '" + key + "' " + what);
}

const json* lookup(const json& j, const std::string& key, const std::string& where) {
  SSM_CHECK(j.is_object(), "config",
            where + ": expected a JSON object when reading key '" + key + "', got " + std::string(j.type_name()));
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

const json& required(const json& j, const std::string& key, const std::string& where) {
  const json* v = lookup(j, key, where);
  if (!v) bad_key(where, key, "is required but missing");
  return *v;
}

int64_t as_int(const json& v, const std::string& where, const std::string& key) {
  if (v.is_number_unsigned()) {
    uint64_t u = v.get<uint64_t>();
    if (u > uint64_t(std::numeric_limits<int64_t>::max())) bad_key(where, key, "is out of range: " + snippet(v));
    return int64_t(u);
  }
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float()) {  // 4.0 is accepted as 4
    double d = v.get<double>();
    if (std::isfinite(d) && d == std::trunc(d) && d >= -9.2233720368547758e18 && d < 9.2233720368547758e18)
      return int64_t(d);
  }
  bad_key(where, key, "must be an integer, got " + snippet(v));
}

}  // namespace

json parse_json_text(const std::string& text, const std::string& where) {
  std::vector<size_t> inserted;
  std::string fixed = quote_bare_floats(text, &inserted);
  try {
    return json::parse(fixed);
  } catch (const json::parse_error& e) {
    // e.byte is the 1-based index of the last character read; map it back to the original text.
    size_t p = e.byte > 0 ? size_t(e.byte) - 1 : 0;
    size_t shift = 0;
    for (size_t at : inserted)
      if (at < p) shift += 2;
    p = std::min(p >= shift ? p - shift : 0, text.size());
    size_t line = 1, col = 1;
    for (size_t i = 0; i < p; ++i) {
      if (text[i] == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
    }
    std::string detail = e.what();
    size_t colon = detail.find(": ");
    if (detail.find("column") != std::string::npos && colon != std::string::npos) detail = detail.substr(colon + 2);
    fail("config", where + ": malformed JSON at line " + std::to_string(line) + ", column " + std::to_string(col) +
                       ": " + detail);
  } catch (const json::exception& e) {
    fail("config", where + ": malformed JSON: " + e.what());
  }
}

json load_json_file(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) fail("config", "cannot open '" + path + "': no such file");
  if (!std::filesystem::is_regular_file(path, ec)) fail("config", "cannot open '" + path + "': not a regular file");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("config", "cannot open '" + path + "' for reading");
  std::ostringstream ss;
  ss << f.rdbuf();
  if (f.bad()) fail("config", "error reading '" + path + "'");
  return parse_json_text(ss.str(), path);
}

double json_float(const json& v, const std::string& where, const std::string& key) {
  if (v.is_number()) return v.get<double>();
  if (v.is_string()) {
    const std::string& s = v.get_ref<const std::string&>();
    if (s == "Infinity" || s == "+Infinity" || s == "inf" || s == "+inf")
      return std::numeric_limits<double>::infinity();
    if (s == "-Infinity" || s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "NaN" || s == "nan") return std::numeric_limits<double>::quiet_NaN();
  }
  if (v.is_object() && v.size() == 1 && v.contains("__float__")) {
    const json& inner = v.at("__float__");
    if (inner.is_number() || inner.is_string()) return json_float(inner, where, key);
  }
  bad_key(where, key,
          "must be a number (or \"Infinity\", \"-Infinity\", \"NaN\", {\"__float__\": ...}), got " + snippet(v));
}

bool has_key(const json& j, const std::string& key) {
  if (!j.is_object()) return false;
  auto it = j.find(key);
  return it != j.end() && !it->is_null();
}

int64_t get_int(const json& j, const std::string& key, int64_t def, const std::string& where) {
  const json* v = lookup(j, key, where);
  return v ? as_int(*v, where, key) : def;
}
int64_t require_int(const json& j, const std::string& key, const std::string& where) {
  return as_int(required(j, key, where), where, key);
}

double get_float(const json& j, const std::string& key, double def, const std::string& where) {
  const json* v = lookup(j, key, where);
  return v ? json_float(*v, where, key) : def;
}
double require_float(const json& j, const std::string& key, const std::string& where) {
  return json_float(required(j, key, where), where, key);
}

bool get_bool(const json& j, const std::string& key, bool def, const std::string& where) {
  const json* v = lookup(j, key, where);
  if (!v) return def;
  if (!v->is_boolean()) bad_key(where, key, "must be true or false, got " + snippet(*v));
  return v->get<bool>();
}
bool require_bool(const json& j, const std::string& key, const std::string& where) {
  const json& v = required(j, key, where);
  if (!v.is_boolean()) bad_key(where, key, "must be true or false, got " + snippet(v));
  return v.get<bool>();
}

std::string get_string(const json& j, const std::string& key, const std::string& def, const std::string& where) {
  const json* v = lookup(j, key, where);
  if (!v) return def;
  if (!v->is_string()) bad_key(where, key, "must be a string, got " + snippet(*v));
  return v->get<std::string>();
}
std::string require_string(const json& j, const std::string& key, const std::string& where) {
  const json& v = required(j, key, where);
  if (!v.is_string()) bad_key(where, key, "must be a string, got " + snippet(v));
  return v.get<std::string>();
}

std::vector<int64_t> get_int_list(const json& j, const std::string& key, const std::vector<int64_t>& def,
                                  const std::string& where) {
  const json* v = lookup(j, key, where);
  if (!v) return def;
  if (!v->is_array()) bad_key(where, key, "must be a list of integers, got " + snippet(*v));
  std::vector<int64_t> out;
  for (size_t i = 0; i < v->size(); ++i) out.push_back(as_int((*v)[i], where, key + "[" + std::to_string(i) + "]"));
  return out;
}

std::vector<double> get_float_list(const json& j, const std::string& key, const std::vector<double>& def,
                                   const std::string& where) {
  const json* v = lookup(j, key, where);
  if (!v) return def;
  if (!v->is_array()) bad_key(where, key, "must be a list of numbers, got " + snippet(*v));
  std::vector<double> out;
  for (size_t i = 0; i < v->size(); ++i) out.push_back(json_float((*v)[i], where, key + "[" + std::to_string(i) + "]"));
  return out;
}

namespace {
// Placeholder strings that dump_json turns into bare tokens (no real value contains them).
constexpr const char* kPosInf = "__ssm_json_infinity__";
constexpr const char* kNegInf = "__ssm_json_minus_infinity__";
}  // namespace

nlohmann::json json_number(double v) {
  if (std::isinf(v)) return nlohmann::json(v > 0 ? kPosInf : kNegInf);
  return nlohmann::json(v);
}

std::string dump_json(const nlohmann::json& j, int indent) {
  std::string text = j.dump(indent);
  for (auto [from, to] : {std::pair{kPosInf, "Infinity"}, std::pair{kNegInf, "-Infinity"}}) {
    std::string quoted = std::string("\"") + from + "\"";
    for (size_t p; (p = text.find(quoted)) != std::string::npos;) text.replace(p, quoted.size(), to);
  }
  return text;
}

}  // namespace ssm::io
