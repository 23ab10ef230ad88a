// Command-line options that can also come from a config file (`--config FILE`, TOML or JSON).
//
// Each setting is one option of the subcommand; in a file it is the key named after the option's
// long flag with '_' for '-' (--d-model → d_model), inside its table ([model]). A file must only
// hold known tables and keys with values of the option's type (a typo is an error, never silently
// ignored); options given on the command line override the file.
#pragma once
#include <CLI/CLI.hpp>
#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "ssm/base.h"

namespace ssm::tools {

class Settings {
 public:
  // Adds the option `flags` (e.g. "-b,--batch") to `app` as a setting of table `table`.
  template <class T>
  CLI::Option* add(CLI::App& app, const std::string& table, const std::string& flags, T& value,
                   const std::string& help) {
    CLI::Option* o = app.add_option(flags, value, help)->capture_default_str();
    std::string key = o->get_single_name();
    for (char& c : key)
      if (c == '-') c = '_';
    entries_.push_back({table, key, type_name<T>(), o,
                        [&value](const nlohmann::json& j, const std::string& what) { assign(value, j, what); }});
    return o;
  }

  // Applies `path` (.toml or .json). Throws ssm::Error naming the file, the line (TOML) and the key.
  void apply_file(const std::string& path) const;

  // "[table] key key ...", one line per table, for --help.
  std::string describe() const;

 private:
  struct Entry {
    std::string table, key, type;
    CLI::Option* opt;
    std::function<void(const nlohmann::json&, const std::string&)> set;
  };

  template <class T>
  static std::string type_name() {
    if constexpr (std::is_same_v<T, std::string>)
      return "a string";
    else if constexpr (std::is_floating_point_v<T>)
      return "a number";
    else
      return std::is_unsigned_v<T> ? "a non-negative integer" : "an integer";
  }
  template <class T>
  static void assign(T& v, const nlohmann::json& j, const std::string& what) {
    const std::string bad = what + " must be " + type_name<T>() + ", not " +
                            j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if constexpr (std::is_same_v<T, std::string>) {
      if (!j.is_string()) fail("config", bad);
      v = j.get<std::string>();
    } else if constexpr (std::is_floating_point_v<T>) {
      if (!j.is_number() || !std::isfinite(j.get<double>())) fail("config", bad);
      v = T(j.get<double>());
    } else {
      if (!j.is_number_integer()) fail("config", bad);
      bool neg = !j.is_number_unsigned() && j.get<int64_t>() < 0;
      if (std::is_unsigned_v<T> && neg) fail("config", bad);
      if (!std::is_unsigned_v<T> && j.is_number_unsigned() &&
          j.get<uint64_t>() > uint64_t(std::numeric_limits<T>::max()))
        fail("config", what + " is out of range");
      v = neg ? T(j.get<int64_t>()) : T(j.get<uint64_t>());
    }
  }

  std::vector<Entry> entries_;
};

}  // namespace ssm::tools
