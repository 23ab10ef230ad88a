// ssm.cpp — reading JSON files such as a model's config.json, with typed getters whose errors name
// the file (`where`) and the key.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ssm::io {

// Reads and parses a JSON file. Errors: missing/unreadable file, or malformed JSON with its line
// and column. Python's bare NaN / Infinity / -Infinity tokens (written by json.dumps) are accepted
// and become the strings "NaN" / "Infinity" / "-Infinity", which json_float() understands.
nlohmann::json load_json_file(const std::string& path);
// The same on text in memory; `where` names the source in errors.
nlohmann::json parse_json_text(const std::string& text, const std::string& where = "<json>");

// A number written as a JSON number, as one of the strings "Infinity", "-Infinity", "+Infinity",
// "NaN", "inf", "-inf", "nan", or as {"__float__": <one of those>} (transformers 5).
double json_float(const nlohmann::json& v, const std::string& where, const std::string& key);

// The writing side of json_float: a number for JSON that keeps ±infinity. dump_json() then writes
// it as the bare tokens Infinity / -Infinity, as Python's json module does (and json_float reads).
nlohmann::json json_number(double v);
std::string dump_json(const nlohmann::json& j, int indent = 2);

// True when `key` is present and not null.
bool has_key(const nlohmann::json& j, const std::string& key);

// get_*: the value of `key`, or `def` when it is absent or null; throws when it has the wrong type.
// require_*: throws when the key is absent or null, naming the key and `where` (the file).
int64_t get_int(const nlohmann::json& j, const std::string& key, int64_t def, const std::string& where = "config");
int64_t require_int(const nlohmann::json& j, const std::string& key, const std::string& where = "config");
double get_float(const nlohmann::json& j, const std::string& key, double def, const std::string& where = "config");
double require_float(const nlohmann::json& j, const std::string& key, const std::string& where = "config");
bool get_bool(const nlohmann::json& j, const std::string& key, bool def, const std::string& where = "config");
bool require_bool(const nlohmann::json& j, const std::string& key, const std::string& where = "config");
std::string get_string(const nlohmann::json& j, const std::string& key, const std::string& def,
                       const std::string& where = "config");
std::string require_string(const nlohmann::json& j, const std::string& key, const std::string& where = "config");
// Lists: the value must be an array (an absent/null key gives `def`).
std::vector<int64_t> get_int_list(const nlohmann::json& j, const std::string& key, const std::vector<int64_t>& def,
                                  const std::string& where = "config");
std::vector<double> get_float_list(const nlohmann::json& j, const std::string& key, const std::vector<double>& def,
                                   const std::string& where = "config");

}  // namespace ssm::io
