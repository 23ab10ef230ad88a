// ssm.cpp — training building blocks: the language-model loss, AdamW, gradient clipping, the LR
// schedule.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "ssm/model.h"

namespace ssm::train {

// Mean next-token cross-entropy of ids [B, L] with labels = ids (logits at t predict ids[t+1]),
// as Hugging Face computes `model(ids, labels=ids).loss`. Differentiable.
Tensor lm_loss(const Model& model, const Tensor& ids);

// Loss and accuracy on a batch of (inputs [B, L], targets [B, L]) with -100 = not scored.
Tensor masked_lm_loss(const Model& model, const Tensor& inputs, const Tensor& targets);
// Fraction of scored positions where the argmax prediction equals the target (no grad).
double masked_accuracy(const Model& model, const Tensor& inputs, const Tensor& targets);

// mamba_ssm applies no weight decay to A_log, D, dt biases, norm weights and biases; nor does S4 to
// B (the LTI ablation's mixer.B).
bool no_weight_decay(const std::string& param_name);

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// AdamW with decoupled weight decay, state in f32 (one m and v per parameter).
class AdamW {
 public:
  AdamW(std::vector<std::pair<std::string, Tensor>> params, AdamWConfig cfg);
  void step(double lr);  // uses each parameter's .grad (skips those without)
  void zero_grad();
  int64_t steps() const { return t_; }
  void set_steps(int64_t t) { t_ = t; }
  // Optimizer state for checkpoints: "m.<name>", "v.<name>".
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& st);  // names must match

 private:
  std::vector<std::pair<std::string, Tensor>> params_;
  std::vector<Tensor> m_, v_;
  AdamWConfig cfg_;
  int64_t t_ = 0;
};

// Scales all gradients so that their global L2 norm is at most max_norm; returns the norm before.
double clip_grad_norm(const std::vector<std::pair<std::string, Tensor>>& params, double max_norm);

// Linear warmup to max_lr over `warmup` steps, then cosine decay to min_lr at `total` steps.
double cosine_lr(int64_t step, int64_t warmup, int64_t total, double max_lr, double min_lr);

}  // namespace ssm::train
