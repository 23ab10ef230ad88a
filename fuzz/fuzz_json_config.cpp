// libFuzzer target: parse_json_text on arbitrary text (with the bare NaN/Infinity rewriting), then
// every typed getter on every top-level key. ssm::Error is an accepted outcome; anything else is a bug.
#include <cstdint>
#include <string>

#include "ssm/json_config.h"
#include "ssm/base.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ssm::io;
  volatile double sink = 0;
  nlohmann::json j;
  try {
    j = parse_json_text(std::string(reinterpret_cast<const char*>(data), size), "fuzz.json");
  } catch (const ssm::Error&) {
    return 0;
  }
  if (!j.is_object()) return 0;
  for (const auto& [key, v] : j.items()) {
    try {
      sink = sink + double(get_int(j, key, 0, "fuzz.json"));
    } catch (const ssm::Error&) {
    }
    try {
      sink = sink + get_float(j, key, 0, "fuzz.json");
    } catch (const ssm::Error&) {
    }
    try {
      sink = sink + double(get_bool(j, key, false, "fuzz.json"));
    } catch (const ssm::Error&) {
    }
    try {
      sink = sink + double(get_string(j, key, "", "fuzz.json").size());
    } catch (const ssm::Error&) {
    }
    try {
      sink = sink + double(get_int_list(j, key, {}, "fuzz.json").size());
    } catch (const ssm::Error&) {
    }
    try {
      sink = sink + double(get_float_list(j, key, {}, "fuzz.json").size());
    } catch (const ssm::Error&) {
    }
    try {
      sink = sink + json_float(v, "fuzz.json", key);
    } catch (const ssm::Error&) {
    }
    try {
      sink = sink + double(require_int(v, "k", "fuzz.json"));
    } catch (const ssm::Error&) {
    }
  }
  return 0;
}
