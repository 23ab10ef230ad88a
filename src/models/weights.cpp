// Weight sources: checkpoint files (shape-checked, converted to the requested dtype) and the
// mamba_ssm initialisation used to build models with random weights.
#include <cmath>
#include <filesystem>
#include <functional>

#include "models/model_impl.h"
#include "ssm/ops.h"
#include "ssm/pytorch_bin.h"
#include "ssm/safetensors.h"

namespace ssm {

namespace {
namespace fs = std::filesystem;

class CheckpointSource : public WeightSource {
 public:
  CheckpointSource(std::function<bool(const std::string&)> has, std::function<Tensor(const std::string&)> get,
                   std::string where, bool writable)
      : has_(std::move(has)), get_(std::move(get)), where_(std::move(where)), writable_(writable) {}
  bool has(const std::string& name) const override { return has_(name); }
  Tensor get(const std::string& name, const Shape& shape, DType dtype, Kind) override {
    SSM_CHECK(has_(name), "model", where_ + ": missing tensor '" + name + "'");
    Tensor t = get_(name);
    if (t.shape() != shape && t.numel() == shape_numel(shape)) {
      // Same elements, different rank (e.g. conv1d.weight [C, 1, W] used as [C, W]).
      bool only_unit_dims = true;
      Shape a, b;
      for (auto d : t.shape())
        if (d != 1) a.push_back(d);
      for (auto d : shape)
        if (d != 1) b.push_back(d);
      only_unit_dims = a == b;
      if (only_unit_dims) t = t.reshape(shape);
    }
    SSM_CHECK(t.shape() == shape, "model",
              where_ + ": tensor '" + name + "' has shape " + shape_str(t.shape()) + ", expected " + shape_str(shape) +
                  " from config.json");
    SSM_CHECK(dtype_is_float(t.dtype()), "model",
              where_ + ": tensor '" + name + "' has dtype " + dtype_name(t.dtype()) + ", expected a float dtype");
    if (t.dtype() != dtype) return t.to(dtype);
    return writable_ && t.storage()->read_only() ? t.clone() : t;
  }

 private:
  std::function<bool(const std::string&)> has_;
  std::function<Tensor(const std::string&)> get_;
  std::string where_;
  bool writable_;
};

// Deterministic per-tensor seed so initialisation does not depend on load order.
uint64_t name_seed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

class RandomInit : public WeightSource {
 public:
  RandomInit(const ModelConfig& cfg, uint64_t seed) : cfg_(cfg), seed_(seed) {}
  bool has(const std::string&) const override { return true; }
  Tensor get(const std::string& name, const Shape& shape, DType dtype, Kind kind) override {
    uint64_t s = name_seed(seed_, name);
    Tensor t;
    switch (kind) {
      case Kind::ones: t = Tensor::full(shape, 1.0); break;
      case Kind::zeros: t = Tensor::zeros(shape); break;
      case Kind::embedding: t = Tensor::randn(shape, s, 0, 0.02); break;
      case Kind::normal: t = Tensor::randn(shape, s, 0, 1); break;  // S4D's C
      case Kind::linear:
      case Kind::out_proj: {
        // PyTorch's default Linear init (kaiming_uniform with a=sqrt(5)) is U(-1/sqrt(in), 1/sqrt(in));
        // mamba_ssm re-draws out_proj the same way and divides by sqrt(n_layer).
        double bound = 1.0 / std::sqrt(double(shape.back()));
        if (kind == Kind::out_proj) bound /= std::sqrt(double(cfg_.n_layer));
        t = Tensor::rand(shape, s, -bound, bound);
        break;
      }
      case Kind::conv_weight:
      case Kind::conv_bias: {  // PyTorch Conv1d default: U(-1/sqrt(fan_in)) with fan_in = width (depthwise)
        double bound = 1.0 / std::sqrt(double(cfg_.d_conv));
        t = Tensor::rand(shape, s, -bound, bound);
        break;
      }
      case Kind::dt_proj_weight: {  // U(-dt_rank^-0.5, dt_rank^-0.5) (dt_scale 1, "random")
        double bound = 1.0 / std::sqrt(double(shape.back()));
        t = Tensor::rand(shape, s, -bound, bound);
        break;
      }
      case Kind::dt_bias: {  // inverse softplus of dt ~ exp(U(log dt_min, log dt_max)), floored
        t = Tensor::rand(shape, s, 0, 1);
        float* p = t.data<float>();
        for (int64_t i = 0; i < t.numel(); ++i) {
          double dt = std::exp(p[i] * (std::log(cfg_.dt_max) - std::log(cfg_.dt_min)) + std::log(cfg_.dt_min));
          dt = std::max(dt, cfg_.dt_init_floor);
          p[i] = float(dt + std::log(-std::expm1(-dt)));
        }
        break;
      }
      case Kind::a_log_s4d: {  // S4D-real: A[d, n] = -(n + 1)
        t = Tensor::empty(shape);
        float* p = t.data<float>();
        int64_t n = shape.back();
        for (int64_t i = 0; i < t.numel(); ++i) p[i] = float(std::log(double(i % n + 1)));
        break;
      }
      case Kind::a_log_heads: {  // Mamba-2: A ~ U(1, 16) per head
        t = Tensor::rand(shape, s, 1, 16);
        float* p = t.data<float>();
        for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::log(p[i]);
        break;
      }
    }
    return t.dtype() == dtype ? t : t.to(dtype);
  }

 private:
  ModelConfig cfg_;
  uint64_t seed_;
};
}  // namespace

std::unique_ptr<WeightSource> open_checkpoint(const std::string& dir, const LoadOptions& opts) {
  fs::path d(dir);
  if (fs::exists(d / "model.safetensors.index.json") || fs::exists(d / "model.safetensors")) {
    auto st = std::make_shared<io::ShardedSafeTensors>(io::ShardedSafeTensors::open(dir));
    return std::make_unique<CheckpointSource>([st](const std::string& n) { return st->has(n); },
                                              [st](const std::string& n) { return st->get(n); }, st->source(),
                                              opts.writable);
  }
  if (fs::exists(d / "pytorch_model.bin")) {
    auto pb = std::make_shared<io::PytorchBin>(io::PytorchBin::open((d / "pytorch_model.bin").string()));
    return std::make_unique<CheckpointSource>([pb](const std::string& n) { return pb->has(n); },
                                              [pb](const std::string& n) { return pb->get(n); }, pb->source(),
                                              opts.writable);
  }
  fail("model",
       "no weights in '" + dir + "': expected model.safetensors, model.safetensors.index.json or pytorch_model.bin");
}

std::unique_ptr<WeightSource> safetensors_source(std::shared_ptr<const void> file) {
  auto st = std::static_pointer_cast<const io::SafeTensors>(file);
  return std::make_unique<CheckpointSource>([st](const std::string& n) { return st->has(n); },
                                            [st](const std::string& n) { return st->get(n); }, st->source(), false);
}

std::unique_ptr<WeightSource> random_init(const ModelConfig& cfg, uint64_t seed, const LoadOptions&) {
  return std::make_unique<RandomInit>(cfg, seed);
}

}  // namespace ssm
