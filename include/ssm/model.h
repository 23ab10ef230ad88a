// ssm.cpp — Mamba-family language models: configuration, loading, forward (parallel) and
// recurrent decoding with a per-sequence state.
#pragma once
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ssm/tensor.h"

namespace ssm {

enum class Arch { mamba1, mamba2, mamba3, falcon_mamba };
const char* arch_name(Arch a);

struct ModelConfig {
  Arch arch = Arch::mamba1;
  bool hf_format = true;  // Hugging Face names (backbone.embeddings) vs mamba_ssm (backbone.embedding)
  int64_t d_model = 0, n_layer = 0;
  int64_t vocab_size = 0;       // rows of the embedding (padded)
  int64_t vocab_size_real = 0;  // tokens that may be sampled (<= vocab_size)
  int64_t d_state = 16, d_conv = 4, expand = 2, d_inner = 0;
  int64_t dt_rank = 0;  // Mamba-1
  // Mamba-1 only. false: the non-selective (LTI) ablation of the Mamba paper (Table 1, "S4" layer):
  // Δ = softplus(dt_bias), B and C are learned [d_inner, d_state] tensors, none depend on the input
  // (no x_proj / dt_proj). Written to config.json as "selective": false.
  bool selective = true;
  int64_t headdim = 64, nheads = 0, ngroups = 1;  // Mamba-2/3
  int64_t chunk_size = 256;
  bool d_has_hdim = false;  // Mamba-2: D per channel instead of per head
  bool norm_before_gate = false;
  bool gated_norm = true;  // Mamba-2: RMSNormGated before out_proj (ssm_cfg.rmsnorm)
  bool rms_norm = true, residual_in_fp32 = true, tie_embeddings = true;
  bool conv_bias = true, proj_bias = false;
  double norm_eps = 1e-5;
  double mixer_rms_eps = 1e-6;  // Falcon-Mamba B/C/dt norms
  double dt_min = 0.001, dt_max = 0.1, dt_init_floor = 1e-4;
  double dt_limit_lo = 0.0, dt_limit_hi = 1.0 / 0.0;
  // Mamba-3 SISO
  double a_floor = 1e-4;
  bool is_mimo = false;
  int64_t mimo_rank = 1;
  double rope_fraction = 0.5;
  int64_t bos_id = 0, eos_id = 0, pad_id = 0;

  // Reads config.json of either format (Hugging Face or mamba_ssm). Throws naming file and key.
  static ModelConfig from_json_file(const std::string& path);
  static ModelConfig from_json_text(const std::string& text, const std::string& where);
  std::string summary() const;  // one line: arch, sizes
  // Hugging Face config.json text (Infinity written as Python's json does); throws for
  // configurations that have no Hugging Face form (Mamba-3, LayerNorm blocks, D per channel).
  std::string to_hf_json(DType weight_dtype = DType::f32) const;
  // mamba_ssm config.json text (MambaLMHeadModel's fields; throws for Falcon-Mamba, which it lacks).
  std::string to_mamba_ssm_json() const;
  // The form a trained model is exported in: Hugging Face where it exists, else mamba_ssm (Mamba-3).
  std::string to_json() const;
};

struct DecodeScratch;  // the buffers of Model::step

// Recurrent state of a batch of sequences: one list of tensors per layer (Mamba-1/2: conv state
// [B, W-1, C] and SSM state [B, D, N] / [B, H, P, N]; Mamba-3 its own). Undefined = zeros.
struct InferenceState {
  int64_t batch = 0;
  std::vector<std::vector<Tensor>> layers;
  // Model::step's buffers and constants derived from the weights, made by its first call on this
  // state (so a state must not outlive a change of the model's weights).
  std::shared_ptr<DecodeScratch> scratch;
  size_t bytes() const;  // the recurrent state only
};

struct LoadOptions {
  // Storage dtype of the large matrices (in_proj, x_proj, out_proj, embedding). f32 (default)
  // computes in f32; bf16/f16 keep the checkpoint's half-precision bytes (or convert to them).
  // Small tensors (A_log, D, biases, norms, conv) are always f32.
  DType weight_dtype = DType::f32;
  // Copy weights out of the read-only file mapping so they can be trained in place.
  bool writable = false;
  // Where the weights live and forward() runs. Device::cuda runs inference of Mamba-1/2/3 (SISO) and
  // Falcon-Mamba, and training of Mamba-1 and Falcon-Mamba, with activations in weight_dtype unless
  // set_activation_dtype() says otherwise (bf16 weights: bf16 activations, f32 residual stream and SSM state).
  Device device = Device::cpu;
};

class Model {
 public:
  virtual ~Model() = default;
  // Loads a model directory: config.json + model.safetensors | model.safetensors.index.json |
  // pytorch_model.bin.
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& opts = {});
  // Builds a model with weights initialised as mamba_ssm does (seeded).
  static std::unique_ptr<Model> create(const ModelConfig& cfg, uint64_t seed, DType weight_dtype = DType::f32,
                                       Device device = Device::cpu);

  const ModelConfig& config() const { return cfg_; }
  Device device() const { return embedding_.device(); }

  // ids i64 [B, L] → logits f32 [B, L', V] for the last L' = last_n positions (0 = all).
  // With a state: starts from it (undefined entries = zeros) and leaves the final state in it.
  // hidden (optional) receives the residual stream after each layer, then the final-normed output.
  Tensor forward(const Tensor& ids, InferenceState* state = nullptr, int64_t last_n = 0,
                 std::vector<Tensor>* hidden = nullptr) const;
  // forward(ids) with the logits left in the activation dtype (GPU training: bf16 logits go straight
  // into the loss, which computes in f32, instead of through an f32 copy).
  Tensor forward_logits(const Tensor& ids) const;
  // GPU only: the dtype of the activations (default: the weights' dtype). Mixed-precision training
  // keeps f32 master weights and runs bf16 activations: GEMMs take bf16 copies of the weights with
  // fp32 accumulation; the residual stream, norms, SSM state and loss stay f32.
  void set_activation_dtype(DType t);
  DType activation_dtype() const { return act_dtype_set_ ? act_dtype_ : embedding_.dtype(); }
  InferenceState new_state(int64_t batch) const;
  // Decodes one token per sequence of `state` (ids[b] for b < state.batch) and returns its logits,
  // f32 [B, V], held by the state until its next step. The same as forward() of the token with the
  // state, fused: after the first call on a state it allocates nothing (Mamba-1/2; Mamba-3 runs
  // its parallel mixer). The state tensors are updated in place. On the GPU (Mamba-1, Falcon-Mamba)
  // the logits stay on the GPU, and the first call on a state (or batch size) captures the step as a
  // CUDA graph that later calls replay (SSM_CUDA_GRAPHS=0: plain kernel launches).
  const Tensor& step(std::span<const int64_t> ids, InferenceState& state) const;

  // Parameters with their checkpoint names, in a stable order.
  std::vector<std::pair<std::string, Tensor>> named_parameters() const;
  int64_t num_parameters() const;
  size_t weight_bytes() const;
  size_t state_bytes_per_sequence() const;

 protected:
  explicit Model(ModelConfig cfg) : cfg_(std::move(cfg)) {}
  // One mixer over h [B, L, d_model]; reads/writes `layer_state` when non-null.
  virtual Tensor mixer(int64_t layer, const Tensor& h, std::vector<Tensor>* layer_state) const = 0;
  // One token through mixer `layer` for B sequences: h [B, d_model] → out [B, d_model], the layer's
  // state updated in place. The default runs mixer() on a one-token sequence.
  virtual void mixer_step(int64_t layer, const float* h, float* out, int64_t B, std::vector<Tensor>& layer_state,
                          DecodeScratch& scratch) const;
  // step() of a model on the GPU; the default runs forward() on a one-token sequence (allocates per token).
  virtual const Tensor& step_cuda(std::span<const int64_t> ids, InferenceState& state) const;
  virtual size_t mixer_state_bytes() const = 0;
  virtual size_t mixer_state_count() const = 0;

  ModelConfig cfg_;
  DType act_dtype_ = DType::f32;
  bool act_dtype_set_ = false;
  Tensor forward_impl(const Tensor& ids, InferenceState* state, int64_t last_n, std::vector<Tensor>* hidden,
                      bool f32_logits) const;
  Tensor embedding_;                      // [V, d_model]
  Tensor lm_head_;                        // [V, d_model] (same tensor as embedding_ when tied)
  Tensor norm_f_, norm_f_bias_;           // [d_model]
  std::vector<Tensor> norm_, norm_bias_;  // per layer [d_model]
  // name → parameter (checkpoint names), filled by the architecture at load/create time.
  std::vector<std::pair<std::string, Tensor>> params_;
  friend struct ModelLoader;
};

}  // namespace ssm
