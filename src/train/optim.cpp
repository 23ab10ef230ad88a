#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "ssm/autograd.h"
#include "ssm/ops.h"
#include "ssm/train.h"
#include "train/optim_cuda.h"

namespace ssm::train {

Tensor lm_loss(const Model& model, const Tensor& ids) {
  SSM_CHECK(ids.defined() && ids.dim() == 2 && ids.size(1) >= 2, "lm_loss",
            "ids must be [batch, length] with length >= 2");
  const int64_t B = ids.size(0), L = ids.size(1);
  if (model.device() == Device::cuda) {
    // On the GPU the logits stay in the activation dtype, and the last position of each row is
    // ignored (-100) instead of sliced off: the same mean over B·(L-1) targets, no copy of the logits.
    const std::vector<int64_t> v = ids.to_vector_i64();
    std::vector<int64_t> t(v.size());
    for (int64_t b = 0; b < B; ++b)
      for (int64_t l = 0; l < L; ++l) t[size_t(b * L + l)] = l + 1 < L ? v[size_t(b * L + l + 1)] : -100;
    Tensor logits = model.forward_logits(ids);  // [B, L, V]
    return cross_entropy(logits.view({B * L, logits.size(2)}), Tensor::from_vector(t, {B * L}), -100);
  }
  Tensor logits = model.forward(ids);  // [B, L, V]
  Tensor pred = logits.slice(1, 0, L - 1).contiguous().view({B * (L - 1), logits.size(2)});
  Tensor target = ids.slice(1, 1, L).contiguous().view({B * (L - 1)});
  return cross_entropy(pred, target.to(DType::i64));
}

Tensor masked_lm_loss(const Model& model, const Tensor& inputs, const Tensor& targets) {
  SSM_CHECK(inputs.shape() == targets.shape() && inputs.dim() == 2, "masked_lm_loss",
            "inputs and targets must both be [batch, length]");
  Tensor logits = model.forward_logits(inputs);  // [B, L, V] (f32 on the CPU; the activation dtype on the GPU)
  const int64_t n = inputs.size(0) * inputs.size(1);
  return cross_entropy(logits.view({n, logits.size(2)}), targets.contiguous().view({n}), -100);
}

double masked_accuracy(const Model& model, const Tensor& inputs, const Tensor& targets) {
  autograd::NoGradGuard ng;
  Tensor pred = argmax(model.forward(inputs).to(Device::cpu), -1);  // [B, L]
  auto p = pred.to_vector_i64(), t = targets.to_vector_i64();
  int64_t hit = 0, total = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == -100) continue;
    ++total;
    hit += p[i] == t[i];
  }
  SSM_CHECK(total > 0, "masked_accuracy", "no scored positions in the batch");
  return double(hit) / double(total);
}

bool no_weight_decay(const std::string& n) {
  auto ends = [&](const std::string& s) {
    return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0;
  };
  return ends("A_log") || ends(".D") || ends("dt_bias") || ends("dt_proj.bias") || ends("mixer.B") || ends(".bias") ||
         n.find("norm") != std::string::npos;
}

AdamW::AdamW(std::vector<std::pair<std::string, Tensor>> params, AdamWConfig cfg)
    : params_(std::move(params)), cfg_(cfg) {
  for (auto& [name, p] : params_) {
    SSM_CHECK(p.dtype() == DType::f32 && p.is_contiguous() && !p.storage()->read_only(), "adamw",
              "parameter '" + name + "' must be a writable contiguous f32 tensor (load with writable weights)");
    SSM_CHECK(p.device() == params_.front().second.device(), "adamw",
              "parameter '" + name + "' is on another device than the first parameter");
    m_.push_back(Tensor::zeros(p.shape(), DType::f32, p.device()));
    v_.push_back(Tensor::zeros(p.shape(), DType::f32, p.device()));
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double bc1 = 1 - std::pow(cfg_.beta1, double(t_)), bc2 = 1 - std::pow(cfg_.beta2, double(t_));
  for (size_t k = 0; k < params_.size(); ++k) {
    Tensor& p = params_[k].second;
    Tensor g = p.grad();
    if (!g.defined()) continue;
    g = g.to(DType::f32).contiguous();
    if (p.device() == Device::cuda) {
      const float wd = no_weight_decay(params_[k].first) ? 0.f : float(lr * cfg_.weight_decay);
      gpu::adamw_(p, g, m_[k], v_[k], float(lr / bc1), float(cfg_.beta1), float(cfg_.beta2), float(cfg_.eps), wd,
                  float(1.0 / std::sqrt(bc2)));
      continue;
    }
    const float* gp = g.data<float>();
    float *pp = p.data<float>(), *m = m_[k].data<float>(), *v = v_[k].data<float>();
    const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
    const float wd = no_weight_decay(params_[k].first) ? 0.f : float(lr * cfg_.weight_decay);
    const float step = float(lr / bc1), inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
    parallel_for(p.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {  // elementwise: the same result on any thread count
      for (int64_t i = i0; i < i1; ++i) {
        m[i] = b1 * m[i] + (1 - b1) * gp[i];
        v[i] = b2 * v[i] + (1 - b2) * gp[i] * gp[i];
        pp[i] -= wd * pp[i];
        pp[i] -= step * m[i] / (std::sqrt(v[i]) * inv_sqrt_bc2 + eps);
      }
    });
  }
}

void AdamW::zero_grad() {
  for (auto& [name, p] : params_) p.zero_grad();
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t k = 0; k < params_.size(); ++k) {
    s.push_back({"m." + params_[k].first, m_[k]});
    s.push_back({"v." + params_[k].first, v_[k]});
  }
  return s;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& st) {
  std::map<std::string, Tensor> byname(st.begin(), st.end());
  for (size_t k = 0; k < params_.size(); ++k) {
    for (auto [prefix, dst] : {std::pair{"m.", &m_[k]}, std::pair{"v.", &v_[k]}}) {
      auto it = byname.find(prefix + params_[k].first);
      SSM_CHECK(it != byname.end(), "adamw", std::string("optimizer state has no '") + prefix + params_[k].first + "'");
      SSM_CHECK(it->second.shape() == dst->shape(), "adamw",
                "optimizer state '" + it->first + "' has shape " + shape_str(it->second.shape()) + ", expected " +
                    shape_str(dst->shape()));
      dst->copy_(it->second);
    }
  }
}

double clip_grad_norm(const std::vector<std::pair<std::string, Tensor>>& params, double max_norm) {
  // Sum of squares in f64, then (if clipping) every gradient scaled in place: no copies of the
  // gradients (a mamba-130m step spent 7 % of its time in them).
  double sq = 0;
  std::vector<Tensor> on_gpu;  // f32 contiguous GPU gradients: one reduction on the device
  for (const auto& [name, p] : params) {
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (g.device() == Device::cuda && g.dtype() == DType::f32 && g.is_contiguous()) {
      on_gpu.push_back(g);
    } else if (g.device() == Device::cuda) {
      for (double x : g.to_vector_f64()) sq += x * x;
    } else if (g.dtype() == DType::f32 && g.is_contiguous()) {
      // Fixed blocks summed in a fixed order: the same norm on any thread count.
      const float* d = g.data<float>();
      const int64_t n = g.numel(), blk = 1 << 16, nb = (n + blk - 1) / blk;
      std::vector<double> part(static_cast<size_t>(nb));
      parallel_for(nb, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) {
          double acc[4] = {0, 0, 0, 0};
          const int64_t e = std::min(n, (b + 1) * blk);
          int64_t i = b * blk;
          for (; i + 4 <= e; i += 4)
            for (int k = 0; k < 4; ++k) acc[k] += double(d[i + k]) * double(d[i + k]);
          for (; i < e; ++i) acc[0] += double(d[i]) * double(d[i]);
          part[size_t(b)] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        }
      });
      for (double x : part) sq += x;
    } else {
      for (double x : g.to_vector_f64()) sq += x * x;
    }
  }
  if (!on_gpu.empty()) sq += gpu::sum_squares(on_gpu);
  double norm = std::sqrt(sq);
  if (max_norm > 0 && norm > max_norm) {
    autograd::NoGradGuard ng;
    double s = max_norm / (norm + 1e-6);
    for (const auto& [name, p] : params) {
      Tensor t = p, g = p.grad();
      if (!g.defined()) continue;
      if (g.device() == Device::cuda && g.dtype() == DType::f32 && g.is_contiguous()) {
        gpu::scale_(g, float(s));
      } else if (g.dtype() == DType::f32 && g.is_contiguous() && g.device() == Device::cpu) {
        float* d = g.data<float>();
        const float sf = float(s);
        parallel_for(g.numel(), 1 << 15, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) d[i] *= sf;
        });
      } else {
        t.set_grad(mul_scalar(g, s));
      }
    }
  }
  return norm;
}

double cosine_lr(int64_t step, int64_t warmup, int64_t total, double max_lr, double min_lr) {
  if (warmup > 0 && step < warmup) return max_lr * double(step + 1) / double(warmup);
  if (step >= total) return min_lr;
  double progress = double(step - warmup) / double(std::max<int64_t>(1, total - warmup));
  return min_lr + 0.5 * (max_lr - min_lr) * (1 + std::cos(M_PI * progress));
}

}  // namespace ssm::train
