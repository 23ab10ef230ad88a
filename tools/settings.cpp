#include "settings.h"

#include <map>

#include "ssm/json_config.h"
#include "ssm/toml.h"

namespace ssm::tools {

using json = nlohmann::json;

void Settings::apply_file(const std::string& path) const {
  auto ends = [&](const std::string& ext) {
    return path.size() >= ext.size() && path.compare(path.size() - ext.size(), ext.size(), ext) == 0;
  };
  json root;
  io::TomlDocument toml;
  const bool is_toml = ends(".toml");
  if (is_toml) {
    toml = io::load_toml_file(path);
    root = toml.root;
  } else if (ends(".json")) {
    root = io::load_json_file(path);
    SSM_CHECK(root.is_object(), "config", path + ": the top level must be an object of tables");
    SSM_CHECK(!root.contains("model_type") && !root.contains("d_model") && !root.contains("hidden_size"), "config",
              path + " looks like a model config.json; pass it with --model-config");
  } else {
    fail("config", "'" + path + "': a config file must end in .toml or .json");
  }
  // "FILE:LINE: " for TOML, "FILE: " for JSON.
  auto at = [&](const std::string& p) {
    int line = is_toml ? toml.line_of(p) : 0;
    return path + (line > 0 ? ":" + std::to_string(line) : std::string()) + ": ";
  };
  std::map<std::string, std::vector<const Entry*>> tables;
  for (const Entry& e : entries_) tables[e.table].push_back(&e);
  std::string table_names;
  for (const auto& [t, v] : tables) table_names += (table_names.empty() ? "" : ", ") + ("[" + t + "]");
  for (const auto& [table, body] : root.items()) {
    auto it = tables.find(table);
    if (!body.is_object()) {
      // A key outside any table: say which table it belongs in, if any.
      for (const Entry& e : entries_)
        SSM_CHECK(e.key != table, "config", at(table) + "'" + table + "' must be inside the table [" + e.table + "]");
      fail("config", at(table) + "unknown setting '" + table + "' (settings live in the tables " + table_names + ")");
    }
    SSM_CHECK(it != tables.end(), "config", at(table) + "unknown table [" + table + "] (known: " + table_names + ")");
    for (const auto& [key, value] : body.items()) {
      const std::string p = table + "." + key;
      const Entry* found = nullptr;
      for (const Entry* e : it->second)
        if (e->key == key) found = e;
      if (!found) {
        for (const Entry& e : entries_)
          SSM_CHECK(e.key != key, "config",
                    at(p) + "'" + key + "' belongs in the table [" + e.table + "], not [" + table + "]");
        std::string known;
        for (const Entry* e : it->second) known += " " + e->key;
        fail("config", at(p) + "unknown key '" + key + "' in [" + table + "] (known:" + known + ")");
      }
      if (found->opt->count() > 0) continue;  // the command line wins
      found->set(value, at(p) + "'" + key + "' in [" + table + "]");
    }
  }
}

std::string Settings::describe() const {
  std::map<std::string, std::string> tables;
  std::vector<std::string> order;
  for (const Entry& e : entries_) {
    if (!tables.count(e.table)) order.push_back(e.table);
    tables[e.table] += " " + e.key;
  }
  std::string s;
  for (const auto& t : order) s += "  [" + t + "]" + tables[t] + "\n";
  return s;
}

}  // namespace ssm::tools
