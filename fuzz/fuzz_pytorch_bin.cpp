// Fuzz target: torch.save checkpoints (ZIP + pickle) from arbitrary bytes. Any input must either
// parse — and then every tensor's elements must be readable inside its storage — or throw
// ssm::Error. Seeds: fuzz/corpus/pytorch_bin/ (two files written by PyTorch 2.11, three by
// tests/pytorch_bin_writer.h). CRC checks are off so mutations reach the unpickler.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ssm/pytorch_bin.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ssm::io::PytorchBin::Options opt;
  opt.check_pickle_crc = false;
  try {
    ssm::io::PytorchBin b = ssm::io::PytorchBin::parse(data, size, nullptr, "<fuzz>", opt);
    for (const auto& [name, t] : b.tensors()) {
      // Touch the first and the last element the view can reach (ASan catches reads past the data).
      if (t.numel() == 0) continue;
      const uint8_t* base = static_cast<const uint8_t*>(t.raw_data());
      size_t esize = ssm::dtype_size(t.dtype());
      size_t last = 0;
      for (int64_t d = 0; d < t.dim(); ++d) last += size_t(t.shape()[size_t(d)] - 1) * size_t(t.strides()[size_t(d)]);
      uint8_t sink[8];
      std::memcpy(sink, base, esize);
      std::memcpy(sink, base + last * esize, esize);
      volatile uint8_t keep = sink[0];
      (void)keep;
    }
  } catch (const ssm::Error&) {
  }
  return 0;
}
