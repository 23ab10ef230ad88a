// The language-model wrapper shared by every architecture: embedding → (add + norm → mixer) × n →
// add + final norm → head. Residual stream in f32 (mamba_ssm residual_in_fp32).
#include <filesystem>

#include "models/model_impl.h"
#include "ssm/ops.h"

namespace ssm {

size_t InferenceState::bytes() const {
  size_t b = 0;
  for (const auto& l : layers)
    for (const auto& t : l)
      if (t.defined()) b += t.nbytes();
  return b;
}

namespace {
// Hands every weight to the architecture already on `device`.
class OnDevice : public WeightSource {
 public:
  OnDevice(WeightSource& src, Device device) : src_(src), device_(device) {}
  bool has(const std::string& name) const override { return src_.has(name); }
  Tensor get(const std::string& name, const Shape& shape, DType dtype, Kind kind) override {
    return src_.get(name, shape, dtype, kind).to(device_);
  }

 private:
  WeightSource& src_;
  Device device_;
};

std::unique_ptr<Model> build_arch(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) {
  switch (cfg.arch) {
    case Arch::mamba1:
    case Arch::falcon_mamba: return make_mamba1(cfg, src, opts);
    case Arch::mamba2: return make_mamba2(cfg, src, opts);
    case Arch::mamba3: return make_mamba3(cfg, src, opts);
  }
  fail("model", "unknown architecture");
}
}  // namespace

std::unique_ptr<Model> build_model(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) {
  if (opts.device == Device::cpu) return build_arch(cfg, src, opts);
  SSM_CHECK(cuda_device_count() > 0, "model", "no CUDA device found; use --device cpu");
  const bool gpu_arch = ((cfg.arch == Arch::mamba1 || cfg.arch == Arch::falcon_mamba) && cfg.selective) ||
                        cfg.arch == Arch::mamba2 || cfg.arch == Arch::mamba3;
  SSM_CHECK(gpu_arch && cfg.rms_norm, "model",
            std::string("the CUDA backend runs Mamba-1, Falcon-Mamba (selective), Mamba-2 and Mamba-3 models with "
                        "RMSNorm so far, not ") +
                arch_name(cfg.arch) + (cfg.selective ? "" : " (LTI)") + (cfg.rms_norm ? "" : " with LayerNorm") +
                "; use --device cpu");
  OnDevice dev(src, opts.device);
  return build_arch(cfg, dev, opts);
}

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& opts) {
  namespace fs = std::filesystem;
  SSM_CHECK(fs::is_directory(dir), "model",
            "'" + dir + "' is not a directory (expected a model folder with config.json)");
  std::string cfg_path = (fs::path(dir) / "config.json").string();
  SSM_CHECK(fs::exists(cfg_path), "model", "no config.json in '" + dir + "'");
  SSM_CHECK(opts.weight_dtype == DType::f32 || opts.weight_dtype == DType::bf16 || opts.weight_dtype == DType::f16,
            "model", std::string("weight dtype must be f32, bf16 or f16, got ") + dtype_name(opts.weight_dtype));
  ModelConfig cfg = ModelConfig::from_json_file(cfg_path);
  auto src = open_checkpoint(dir, opts);
  return build_model(cfg, *src, opts);
}

std::unique_ptr<Model> Model::create(const ModelConfig& cfg, uint64_t seed, DType weight_dtype, Device device) {
  LoadOptions opts;
  opts.weight_dtype = weight_dtype;
  opts.device = device;
  auto src = random_init(cfg, seed, opts);
  return build_model(cfg, *src, opts);
}

void ModelLoader::load_common(Model& m, WeightSource& src, const LoadOptions& opts) {
  const ModelConfig& c = m.cfg_;
  using K = WeightSource::Kind;
  std::string emb = c.hf_format ? "backbone.embeddings.weight" : "backbone.embedding.weight";
  m.embedding_ = src.get(emb, {c.vocab_size, c.d_model}, matrix_dtype(opts), K::embedding);
  add_param(m, emb, m.embedding_);
  for (int64_t i = 0; i < c.n_layer; ++i) {
    std::string p = layer_prefix(c, i) + "norm.";
    m.norm_.push_back(src.get(p + "weight", {c.d_model}, DType::f32, K::ones));
    add_param(m, p + "weight", m.norm_.back());
    if (!c.rms_norm) {
      m.norm_bias_.push_back(src.get(p + "bias", {c.d_model}, DType::f32, K::zeros));
      add_param(m, p + "bias", m.norm_bias_.back());
    }
  }
  m.norm_f_ = src.get("backbone.norm_f.weight", {c.d_model}, DType::f32, K::ones);
  add_param(m, "backbone.norm_f.weight", m.norm_f_);
  if (!c.rms_norm) {
    m.norm_f_bias_ = src.get("backbone.norm_f.bias", {c.d_model}, DType::f32, K::zeros);
    add_param(m, "backbone.norm_f.bias", m.norm_f_bias_);
  }
  if (c.tie_embeddings) {
    m.lm_head_ = m.embedding_;
  } else {
    m.lm_head_ = src.get("lm_head.weight", {c.vocab_size, c.d_model}, matrix_dtype(opts), K::linear);
    add_param(m, "lm_head.weight", m.lm_head_);
  }
}

InferenceState Model::new_state(int64_t batch) const {
  SSM_CHECK(batch >= 1, "model", "batch must be >= 1");
  InferenceState s;
  s.batch = batch;
  s.layers.assign(size_t(cfg_.n_layer), std::vector<Tensor>(mixer_state_count()));
  return s;
}

void Model::set_activation_dtype(DType t) {
  SSM_CHECK(t == DType::f32 || t == DType::bf16 || t == DType::f16, "model",
            std::string("activation dtype must be f32, bf16 or f16, got ") + dtype_name(t));
  SSM_CHECK(device() == Device::cuda || t == DType::f32, "model", "half-precision activations need --device cuda");
  act_dtype_ = t;
  act_dtype_set_ = true;
}

Tensor Model::forward(const Tensor& ids, InferenceState* state, int64_t last_n, std::vector<Tensor>* hidden) const {
  return forward_impl(ids, state, last_n, hidden, true);
}

Tensor Model::forward_logits(const Tensor& ids) const { return forward_impl(ids, nullptr, 0, nullptr, false); }

Tensor Model::forward_impl(const Tensor& ids, InferenceState* state, int64_t last_n, std::vector<Tensor>* hidden,
                           bool f32_logits) const {
  SSM_CHECK(ids.defined() && ids.dim() == 2 && (ids.dtype() == DType::i64 || ids.dtype() == DType::i32), "model",
            "input ids must be an integer tensor [batch, length], got " + (ids.defined() ? ids.str(0) : "undefined"));
  const int64_t B = ids.size(0), L = ids.size(1);
  SSM_CHECK(L >= 1, "model", "empty input (length 0)");
  if (state) {
    SSM_CHECK(state->batch == B && int64_t(state->layers.size()) == cfg_.n_layer, "model",
              "state is for batch " + std::to_string(state->batch) + " but the input has batch " + std::to_string(B));
  }
  Tensor x = embedding(embedding_, ids);  // [B, L, d_model] f32
  // On the GPU the activations take the weights' dtype (a bf16 model runs bf16 activations).
  if (device() == Device::cuda) x = x.to(activation_dtype());
  Tensor residual;
  auto add_norm = [&](const Tensor& in, const Tensor& res, const Tensor& w, const Tensor& b) {
    return cfg_.rms_norm ? rms_norm_add(in, res, w, cfg_.norm_eps) : layer_norm_add(in, res, w, b, cfg_.norm_eps);
  };
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    NormAdd na = add_norm(x, residual, norm_[size_t(i)], cfg_.rms_norm ? Tensor() : norm_bias_[size_t(i)]);
    residual = na.residual;
    x = mixer(i, na.out, state ? &state->layers[size_t(i)] : nullptr);  // [B, L, d_model]
    if (hidden) hidden->push_back(add(x.to(residual.dtype()), residual));
  }
  NormAdd fin = add_norm(x, residual, norm_f_, norm_f_bias_);
  if (hidden) hidden->push_back(fin.out);
  Tensor h = fin.out;
  if (last_n > 0 && last_n < L) h = h.slice(1, L - last_n, L);
  Tensor logits = linear(h, lm_head_);  // [B, L', V]
  return f32_logits ? logits.to(DType::f32) : logits;
}

std::vector<std::pair<std::string, Tensor>> Model::named_parameters() const { return params_; }

int64_t Model::num_parameters() const {
  int64_t n = 0;
  for (const auto& [name, t] : params_) n += t.numel();
  return n;
}

size_t Model::weight_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : params_) n += t.nbytes();
  return n;
}

size_t Model::state_bytes_per_sequence() const { return mixer_state_bytes(); }

}  // namespace ssm
