// libFuzzer target: parse_toml on arbitrary bytes, then a walk over everything it returns (every
// value, every recorded line). ssm::Error is an accepted outcome; anything else is a bug.
#include <cstdint>
#include <string>

#include "ssm/base.h"
#include "ssm/toml.h"

namespace {
double walk(const nlohmann::json& j) {
  double s = 0;
  if (j.is_object() || j.is_array())
    for (const auto& v : j) s += walk(v);
  else if (j.is_number())
    s += j.get<double>();
  else if (j.is_string())
    s += double(j.get_ref<const std::string&>().size());
  else if (j.is_boolean())
    s += j.get<bool>() ? 1 : 0;
  return s;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  volatile double sink = 0;
  try {
    ssm::io::TomlDocument d = ssm::io::parse_toml(std::string(reinterpret_cast<const char*>(data), size), "fuzz.toml");
    sink = sink + walk(d.root);
    for (const auto& [path, line] : d.lines) sink = sink + double(path.size()) + double(d.line_of(path) + line);
    (void)d.root.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);  // strings are valid UTF-8
  } catch (const ssm::Error&) {
  }
  return 0;
}
