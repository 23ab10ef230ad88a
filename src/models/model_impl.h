// Internal: how architectures obtain their weights and register with the loader.
#pragma once
#include <functional>
#include <memory>
#include <string>

#include "ssm/model.h"

namespace ssm {

// Where a model's tensors come from: a checkpoint (shape-checked) or a seeded initializer.
class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& name) const = 0;
  // The tensor `name` with exactly `shape`, converted to `dtype`. Kind tells an initializer how to
  // draw it (ignored by checkpoints).
  enum class Kind {
    linear,
    out_proj,
    embedding,
    ones,
    zeros,
    conv_weight,
    conv_bias,
    a_log_s4d,
    a_log_heads,
    dt_bias,
    dt_proj_weight,
    normal
  };
  virtual Tensor get(const std::string& name, const Shape& shape, DType dtype, Kind kind) = 0;
};

// Checkpoint files in a directory (safetensors, sharded safetensors or pytorch_model.bin).
std::unique_ptr<WeightSource> open_checkpoint(const std::string& dir, const LoadOptions& opts);
// mamba_ssm-style initialisation (see docs/reference: S4D-real A_log, inverse-softplus dt bias, ...).
std::unique_ptr<WeightSource> random_init(const ModelConfig& cfg, uint64_t seed, const LoadOptions& opts);

// Weights held by an already-parsed safetensors file (e.g. one embedded in the binary).
std::unique_ptr<WeightSource> safetensors_source(std::shared_ptr<const void> safetensors_file);
// Picks the architecture's factory.
std::unique_ptr<Model> build_model(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts);

// Architecture factories (one file each): build the mixers from `src`.
std::unique_ptr<Model> make_mamba1(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts);
std::unique_ptr<Model> make_mamba2(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts);
std::unique_ptr<Model> make_mamba3(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts);

// Shared by the architectures: embedding, per-layer norms, final norm, head.
struct ModelLoader {
  static void load_common(Model& m, WeightSource& src, const LoadOptions& opts);
  static std::string layer_prefix(const ModelConfig& cfg, int64_t i) {
    return "backbone.layers." + std::to_string(i) + ".";
  }
  static void add_param(Model& m, const std::string& name, const Tensor& t) { m.params_.push_back({name, t}); }
};

// Big matrices get opts.weight_dtype; everything else f32.
inline DType matrix_dtype(const LoadOptions& o) { return o.weight_dtype; }

}  // namespace ssm
