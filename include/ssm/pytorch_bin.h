// ssm.cpp — reading PyTorch `torch.save` checkpoints (`pytorch_model.bin`), natively and safely.
//
// A torch.save file (PyTorch >= 1.6) is a ZIP archive of stored entries under one top-level folder
// (`archive/`, `pytorch_model/`, ...): `data.pkl` is a protocol-2 pickle of the state dict whose
// tensors refer, through persistent ids ('storage', torch.FloatStorage, key, location, numel), to
// raw little-endian storages in `data/<key>`. This reader maps the file read-only, runs the pickle
// with a safe unpickler that only allows the classes a state dict needs (collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the torch *Storage types) and returns
// each tensor as a zero-copy strided view over the mapping (torch aligns every storage to 64 bytes;
// a storage that is not 8-byte aligned is copied once). Tensors that share a storage in the file
// share it here too, so tied weights stay tied. Anything
// malformed is an ssm::Error "[pytorch_bin] <file>: ..." (or "[zip] <file>: ..." for the archive).
//
// Nested dicts are flattened with '.' (e.g. {"model": {"w": t}} gives "model.w"); values that are
// not tensors (ints, strings, None, ...) are skipped. The legacy pre-1.6 format and big-endian files
// are refused with an explanation.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ssm/tensor.h"

namespace ssm::io {

struct PytorchBinOptions {
  bool check_pickle_crc = true;  // CRC-32 of data.pkl (small)
  bool check_data_crc = false;   // CRC-32 of every storage (reads the whole file)
};

class PytorchBin {
 public:
  using Options = PytorchBinOptions;

  static PytorchBin open(const std::string& path, const Options& options = Options());
  // Parses bytes in memory; `owner` keeps [data, data + size) alive for as long as any returned tensor
  // lives (it may be null when the caller guarantees that).
  static PytorchBin parse(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                          const std::string& source = "<memory>", const Options& options = Options());
  static PytorchBin parse(std::shared_ptr<const std::vector<uint8_t>> bytes, const std::string& source = "<memory>");

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  Tensor get(const std::string& name) const;                        // throws naming the file and the tensor
  const std::vector<std::string>& names() const { return names_; }  // in the order of the file
  const std::vector<std::pair<std::string, Tensor>>& tensors() const { return tensors_; }
  size_t size() const { return tensors_.size(); }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
  std::vector<std::string> names_;
  std::unordered_map<std::string, size_t> index_;
};

// All tensors of a torch.save checkpoint, in file order.
std::vector<std::pair<std::string, Tensor>> load_pytorch_bin(const std::string& path);

// True when the file starts like a ZIP archive or a legacy torch.save pickle (cheap; reads 4 bytes).
bool looks_like_pytorch_bin(const std::string& path);

}  // namespace ssm::io
