// libFuzzer target: SafeTensors::parse on arbitrary bytes, then every tensor is read in full, from an
// aligned buffer (zero-copy views) and from a buffer shifted by one byte (the copying path).
// Any ssm::Error is an accepted outcome; a crash, sanitizer report or other exception is a bug.
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "ssm/safetensors.h"

namespace {

uint64_t touch(const ssm::io::SafeTensors& st) {
  uint64_t sum = 0;
  for (const auto& [k, v] : st.metadata()) sum += k.size() + v.size();
  for (const auto& name : st.names()) {
    ssm::Tensor t = st.get(name);
    if (t.shape() != st.shape(name) || t.dtype() != st.dtype(name)) __builtin_trap();
    const auto* p = static_cast<const uint8_t*>(t.raw_data());
    for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
    if (t.numel() <= 4096)
      for (double x : t.to_vector_f64()) sum += x == x ? 1 : 0;
  }
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  volatile uint64_t sink = 0;
  try {
    auto bytes = std::make_shared<const std::vector<uint8_t>>(data, data + size);
    sink = sink + touch(ssm::io::SafeTensors::parse(bytes, "fuzz"));
  } catch (const ssm::Error&) {
  }
  try {
    auto shifted = std::make_shared<std::vector<uint8_t>>(size + 1);
    if (size) std::memcpy(shifted->data() + 1, data, size);
    sink = sink + touch(ssm::io::SafeTensors::parse(shifted->data() + 1, size, shifted, "fuzz+1"));
  } catch (const ssm::Error&) {
  }
  return 0;
}
