// Model::step, the fused one-token decode shared by every architecture (embedding, residual norms,
// final norm, head), and the single-token kernels the architectures' mixer_step use.
#include "models/decode.h"

#include <algorithm>
#include <cmath>

#include "ops/fast_math.h"
#include "ops/rows.h"
#include "ops/scan_common.h"
#include "ssm/autograd.h"

namespace ssm {

namespace decode {
using detail::scan::Lanes;
using detail::scan::v8f;
using LV = Lanes<v8f>;

float* state_buffer(Tensor& t, std::initializer_list<int64_t> shape) {
  if (!t.defined()) {
    t = Tensor::zeros(Shape(shape), DType::f32);
    return t.data<float>();
  }
  bool same = t.dim() == int64_t(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = t.size(int64_t(i)) == shape.begin()[i];
  SSM_CHECK(same, "model", "decode state has shape " + shape_str(t.shape()) + ", expected " + shape_str(Shape(shape)));
  if (t.dtype() != DType::f32 || !t.is_contiguous()) t = t.to(DType::f32).contiguous();
  return t.data<float>();
}

void conv_step(const float* x, int64_t ldx, float* state, const float* w, const float* bias, float* y, int64_t B,
               int64_t C, int64_t W, bool silu) {
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x + b * ldx;
    float* st = state + b * (W - 1) * C;  // [W-1, C], oldest first
    float* yb = y + b * C;
    for (int64_t c = 0; c < C; ++c) {
      const float* wc = w + c * W;
      float acc = bias ? bias[c] : 0.f;
      for (int64_t k = 0; k < W - 1; ++k) acc += wc[k] * st[k * C + c];
      acc += wc[W - 1] * xb[c];
      yb[c] = silu ? fm::silu(acc) : acc;
    }
    if (W > 1) {
      std::copy(st + C, st + (W - 1) * C, st);  // drop the oldest token
      std::copy(xb, xb + C, st + (W - 2) * C);
    }
  }
}

void mamba1_scan_step(const Mamba1Step& s, int64_t d0, int64_t d1) {
  using detail::scan::splat;
  // dt for the channel range: one matvec against dt_proj [Di, R] (bias included), then softplus.
  kernels::matvec(s.dtr, 1, s.R, s.dt_proj, kernels::WeightKind::f32, s.dt_bias, s.delta, 0, d0, d1);
  int64_t d = d0;
  for (; d + 8 <= d1; d += 8) LV::store(s.delta + d, detail::scan::vsoftplus(LV::load(s.delta + d, 8)), 8);
  if (d < d1) {
    const int k = int(d1 - d);
    LV::store(s.delta + d, detail::scan::vsoftplus(LV::load(s.delta + d, k)), k);
  }
  const int64_t N = s.N;
  for (d = d0; d < d1; ++d) {
    const float u = s.u[d], dt = s.delta[d], dtu = dt * u;
    const float* A = s.A + d * N;
    float* h = s.h + d * N;
    v8f acc = splat(0.f);
    for (int64_t n = 0; n < N; n += 8) {
      const int k = int(std::min<int64_t>(8, N - n));
      v8f hv = detail::scan::vexp(LV::load(A + n, k) * dt) * LV::load(h + n, k) + LV::load(s.Bv + n, k) * dtu;
      LV::store(h + n, hv, k);
      acc += LV::load(s.Cv + n, k) * hv;
    }
    float yd = LV::sum(acc) + (s.Dv ? s.Dv[d] * u : 0.f);
    if (s.z) yd *= fm::silu(s.z[d]);
    s.y[d] = yd;
  }
}

void mamba2_scan_step(const Mamba2Step& s, int64_t h0, int64_t h1) {
  using detail::scan::splat;
  const int64_t P = s.P, N = s.N;
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t g = h / s.heads_per_group;
    const float dt = s.dt[h], dA = std::exp(dt * s.A[h]);
    const float* Bg = s.Bm + g * N;
    const float* Cg = s.Cm + g * N;
    for (int64_t p = 0; p < P; ++p) {
      const int64_t ch = h * P + p;
      const float xv = s.x[ch], dtx = dt * xv;
      float* st = s.state + ch * N;
      v8f acc = splat(0.f);
      for (int64_t n = 0; n < N; n += 8) {
        const int k = int(std::min<int64_t>(8, N - n));
        v8f sv = LV::load(st + n, k) * dA + LV::load(Bg + n, k) * dtx;
        LV::store(st + n, sv, k);
        acc += LV::load(Cg + n, k) * sv;
      }
      s.y[ch] = LV::sum(acc) + (s.Dv ? s.Dv[s.d_per_channel ? ch : h] * xv : 0.f);
    }
  }
}

}  // namespace decode

void Model::mixer_step(int64_t li, const float* h, float* out, int64_t B, std::vector<Tensor>& st,
                       DecodeScratch&) const {
  // Architectures without a fused step: the parallel mixer on a one-token sequence (allocates).
  const int64_t dm = cfg_.d_model;
  Tensor y = mixer(li, Tensor::from_vector(std::vector<float>(h, h + B * dm), {B, 1, dm}), &st).contiguous();
  std::copy_n(y.data<float>(), B * dm, out);
}

// Architectures without a fused GPU step: the parallel forward on a one-token sequence (allocates per token).
const Tensor& Model::step_cuda(std::span<const int64_t> ids, InferenceState& state) const {
  const int64_t B = state.batch;
  if (!state.scratch || state.scratch->batch != B || state.scratch->cuda) {
    state.scratch = std::make_shared<DecodeScratch>();
    state.scratch->batch = B;
  }
  Tensor t = Tensor::from_vector(std::vector<int64_t>(ids.begin(), ids.end()), {B, 1});
  state.scratch->logits = forward(t, &state, 1).view({B, cfg_.vocab_size});
  return state.scratch->logits;
}

const Tensor& Model::step(std::span<const int64_t> ids, InferenceState& state) const {
  const ModelConfig& c = cfg_;
  const int64_t B = state.batch, dm = c.d_model, V = c.vocab_size;
  SSM_CHECK(B >= 1 && int64_t(state.layers.size()) == c.n_layer, "model",
            "step: the state was not made by new_state()");
  SSM_CHECK(int64_t(ids.size()) == B, "model",
            "step: the state holds " + std::to_string(B) + " sequences but " + std::to_string(ids.size()) +
                " token ids were given");
  for (int64_t b = 0; b < B; ++b)
    SSM_CHECK(
        ids[size_t(b)] >= 0 && ids[size_t(b)] < V, "model",
        "token id " + std::to_string(ids[size_t(b)]) + " is out of range for a vocabulary of " + std::to_string(V));
  autograd::NoGradGuard no_grad;
  if (device() == Device::cuda) return step_cuda(ids, state);
  if (!state.scratch || state.scratch->batch != B) {  // the first step (or the batch shrank)
    auto ws = std::make_shared<DecodeScratch>();
    ws->batch = B;
    for (auto* v : {&ws->x, &ws->resid, &ws->normed}) v->assign(size_t(B * dm), 0.f);
    ws->tmp.assign(size_t(std::max(dm, c.d_inner)), 0.f);
    ws->logits = Tensor::empty({B, V});
    if (state.scratch) ws->cached = std::move(state.scratch->cached);
    state.scratch = ws;
  }
  DecodeScratch& ws = *state.scratch;
  float* x = ws.x.data();
  float* resid = ws.resid.data();
  float* normed = ws.normed.data();
  const DType edt = embedding_.dtype();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row = ids[size_t(b)] * dm;
    float* xb = x + b * dm;
    if (edt == DType::f32) {
      std::copy_n(embedding_.data<float>() + row, dm, xb);
    } else {
      const uint16_t* e = static_cast<const uint16_t*>(embedding_.raw_data()) + row;
      for (int64_t i = 0; i < dm; ++i) xb[i] = edt == DType::bf16 ? bf16_to_f32(e[i]) : f16_to_f32(e[i]);
    }
  }
  // residual += x; normed = norm(residual): mamba_ssm's fused add + norm, residual in f32.
  auto add_norm = [&](bool first, const Tensor& w, const Tensor& bias) {
    for (int64_t b = 0; b < B; ++b) {
      float* r = resid + b * dm;
      const float* xb = x + b * dm;
      if (first)
        std::copy_n(xb, dm, r);
      else
        for (int64_t i = 0; i < dm; ++i) r[i] += xb[i];
      if (c.rms_norm)
        kernels::rms_norm_row(r, nullptr, w.data<float>(), normed + b * dm, dm, dm, c.norm_eps, false, nullptr);
      else
        kernels::layer_norm_row(r, w.data<float>(), bias.data<float>(), normed + b * dm, dm, c.norm_eps, ws.tmp.data());
    }
  };
  for (int64_t i = 0; i < c.n_layer; ++i) {
    add_norm(i == 0, norm_[size_t(i)], c.rms_norm ? Tensor() : norm_bias_[size_t(i)]);
    mixer_step(i, normed, x, B, state.layers[size_t(i)], ws);
  }
  add_norm(false, norm_f_, norm_f_bias_);
  kernels::matvec_parallel(normed, B, dm, lm_head_.raw_data(), kernels::weight_kind(lm_head_.dtype()), nullptr,
                           ws.logits.data<float>(), V, V);
  return ws.logits;
}

}  // namespace ssm
