// ssm.cpp — a strict reader for the subset of TOML (v1.0) that configuration files use.
//
// Supported: comments (#), tables ([name], [a.b]), `key = value` with bare ("d_model") or quoted
// keys, and values: basic strings "..." (escapes \b \t \n \f \r \" \\ \uXXXX \UXXXXXXXX), literal
// strings '...', decimal integers (sign, underscores between digits), floats (fraction and/or
// exponent, inf, nan), booleans, arrays [ ... ] (over several lines, trailing comma allowed).
// Refused with an error that names the line: everything else TOML has (dotted keys, inline tables,
// arrays of tables, multi-line strings, hex/octal/binary integers, dates), duplicate keys and
// tables, and any malformed line. Integers that overflow int64 are errors too.
#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <string>

namespace ssm::io {

struct TomlDocument {
  nlohmann::json root = nlohmann::json::object();  // tables are objects; integers are int64, floats double
  std::map<std::string, int> lines;                // "table.key" (or "key", or "table") -> 1-based line
  // The line where `path` was defined, or 0.
  int line_of(const std::string& path) const {
    auto it = lines.find(path);
    return it == lines.end() ? 0 : it->second;
  }
};

// Parses TOML text; `where` (a file name) prefixes every error: "[toml] FILE:LINE: what".
TomlDocument parse_toml(const std::string& text, const std::string& where = "<toml>");
// Reads and parses a file.
TomlDocument load_toml_file(const std::string& path);

}  // namespace ssm::io
