// Mamba-1 mixer (mamba_ssm `Mamba`, HF `MambaMixer`) and Falcon-Mamba (the same with weightless
// RMS norms on dt, B and C). docs: shared/docs/reference/mamba.md §1. With cfg.selective = false,
// the Mamba paper's LTI ablation (Table 1): Δ, B and C do not depend on the input.
#include <cmath>

#include "models/decode.h"
#include "models/model_impl.h"
#include "ops/rows.h"
#include "ssm/ops.h"
#ifdef SSM_HAVE_CUDA
#include "backend/cuda/mamba1_step.h"
#endif

namespace ssm {
namespace {

struct Mamba1Layer {
  Tensor in_proj, in_proj_b;    // [2*Di, dm], [2*Di]
  Tensor conv_w, conv_b;        // [Di, 1, W], [Di]
  Tensor x_proj;                // [R + 2N, Di]
  Tensor dt_proj, dt_proj_b;    // [Di, R], [Di]
  Tensor A_log, D;              // [Di, N], [Di]
  Tensor out_proj, out_proj_b;  // [dm, Di]
  Tensor B, C, dt_bias;         // LTI only: [Di, N], [Di, N], [Di] (replace x_proj and dt_proj)
};

class Mamba1Model : public Model {
 public:
  Mamba1Model(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) : Model(cfg) {
    ModelLoader::load_common(*this, src, opts);
    using K = WeightSource::Kind;
    const auto& c = cfg_;
    const int64_t Di = c.d_inner, N = c.d_state, R = c.dt_rank, W = c.d_conv;
    DType md = matrix_dtype(opts);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      std::string p = ModelLoader::layer_prefix(c, i) + "mixer.";
      Mamba1Layer l;
      auto get = [&](const std::string& n, const Shape& s, DType dt, K k) {
        Tensor t = src.get(p + n, s, dt, k);
        ModelLoader::add_param(*this, p + n, t);
        return t;
      };
      l.in_proj = get("in_proj.weight", {2 * Di, c.d_model}, md, K::linear);
      if (c.proj_bias) l.in_proj_b = get("in_proj.bias", {2 * Di}, DType::f32, K::zeros);
      l.conv_w = get("conv1d.weight", {Di, 1, W}, DType::f32, K::conv_weight);  // as stored
      if (c.conv_bias) l.conv_b = get("conv1d.bias", {Di}, DType::f32, K::conv_bias);
      if (c.selective) {
        l.x_proj = get("x_proj.weight", {R + 2 * N, Di}, md, K::linear);
        l.dt_proj = get("dt_proj.weight", {Di, R}, DType::f32, K::dt_proj_weight);
        l.dt_proj_b = get("dt_proj.bias", {Di}, DType::f32, K::dt_bias);
      } else {  // S4D-style: B = 1, C ~ N(0, 1), Δ from the same inverse-softplus bias init
        l.B = get("B", {Di, N}, DType::f32, K::ones);
        l.C = get("C", {Di, N}, DType::f32, K::normal);
        l.dt_bias = get("dt_bias", {Di}, DType::f32, K::dt_bias);
      }
      l.A_log = get("A_log", {Di, N}, DType::f32, K::a_log_s4d);
      l.D = get("D", {Di}, DType::f32, K::ones);
      l.out_proj = get("out_proj.weight", {c.d_model, Di}, md, K::out_proj);
      if (c.proj_bias) l.out_proj_b = get("out_proj.bias", {c.d_model}, DType::f32, K::zeros);
      layers_.push_back(l);
    }
    if (c.arch == Arch::falcon_mamba) {
      ones_r_ = Tensor::full({R}, 1.0).to(opts.device);
      ones_n_ = Tensor::full({N}, 1.0).to(opts.device);
    }
#ifdef SSM_HAVE_CUDA
    if (opts.device == Device::cuda) {
      gpu_.embedding = embedding_, gpu_.lm_head = lm_head_, gpu_.norm_f = norm_f_;
      for (int64_t i = 0; i < c.n_layer; ++i) {
        const Mamba1Layer& l = layers_[size_t(i)];
        gpu_.layers.push_back({norm_[size_t(i)], l.in_proj, l.in_proj_b, l.conv_w, l.conv_b, l.x_proj, l.dt_proj,
                               l.dt_proj_b, l.A_log, l.D, l.out_proj, l.out_proj_b});
      }
    }
#endif
  }

 protected:
  // state: {conv [B, W-1, Di], ssm [B, Di, N]}
  Tensor mixer(int64_t li, const Tensor& h, std::vector<Tensor>* st) const override {
    const auto& c = cfg_;
    const Mamba1Layer& l = layers_[size_t(li)];
    const int64_t B = h.size(0), L = h.size(1), Di = c.d_inner, N = c.d_state;
    Tensor x, z;  // [B, L, Di] each
    if (h.device() == Device::cuda) {
      // On the GPU the two halves of in_proj are two GEMMs over row views of its weight: x and z come
      // out contiguous, and training scatters no slice gradients back into a [B, L, 2*Di] tensor.
      auto half = [&](const Tensor& t, int64_t k) { return t.defined() ? t.slice(0, k * Di, (k + 1) * Di) : Tensor(); };
      x = linear(h, half(l.in_proj, 0), half(l.in_proj_b, 0));
      z = linear(h, half(l.in_proj, 1), half(l.in_proj_b, 1));
    } else {
      Tensor xz = linear(h, l.in_proj, l.in_proj_b);  // [B, L, 2*Di]
      x = xz.slice(2, 0, Di), z = xz.slice(2, Di, 2 * Di);
    }
    Conv1dOut conv =
        causal_conv1d(x.contiguous(), l.conv_w.view({Di, c.d_conv}), l.conv_b, st ? (*st)[0] : Tensor(), true);
    Tensor xs = conv.y;  // [B, L, Di]
    SelectiveScanArgs a;
    a.u = xs;
    a.A = neg(exp(l.A_log));  // [Di, N]
    a.D = l.D;
    a.z = z.contiguous();
    a.delta_softplus = true;
    if (st) a.initial_state = (*st)[1];
    if (c.selective) {
      select_inputs(l, xs, a);
    } else {
      // Δ = softplus(0 + dt_bias) for every token; B, C broadcast over batch and time with one group
      // per channel (the broadcasting adds give their gradients the sum over batch and time).
      Tensor zeros = Tensor::zeros({B, L, Di, N});
      a.delta = Tensor::zeros({B, L, Di});
      a.delta_bias = l.dt_bias;
      a.B = add(zeros, l.B);
      a.C = add(zeros, l.C);
    }
    ScanOut s = selective_scan(a);  // y [B, L, Di]
    if (st) {
      (*st)[0] = conv.final_state.detach();
      (*st)[1] = s.final_state.detach();
    }
    return linear(s.y, l.out_proj, l.out_proj_b);  // [B, L, dm]
  }
  // The same layer for one token, fused: in_proj, conv update, x_proj, (Falcon norms), dt_proj + SSM
  // update + gate per channel, out_proj; four parallel regions, no allocation.
  void mixer_step(int64_t li, const float* h, float* out, int64_t B, std::vector<Tensor>& st,
                  DecodeScratch& ws) const override {
    const auto& c = cfg_;
    if (!c.selective) return Model::mixer_step(li, h, out, B, st, ws);  // the LTI ablation: the parallel mixer
    const Mamba1Layer& l = layers_[size_t(li)];
    const int64_t Di = c.d_inner, N = c.d_state, R = c.dt_rank, W = c.d_conv, E = R + 2 * N;
    float* xz = ws.buf(0, B * 2 * Di);  // [B, 2Di]: x, z
    float* xs = ws.buf(1, B * Di);      // [B, Di] conv output
    float* xdbl = ws.buf(2, B * E);     // [B, R + 2N]: dt, B, C
    float* delta = ws.buf(3, B * Di);
    float* y = ws.buf(4, B * Di);
    float* conv = decode::state_buffer(st[0], {B, W - 1, Di});
    float* ssm = decode::state_buffer(st[1], {B, Di, N});
    const float* A = ws.neg_exp(li, l.A_log);  // [Di, N]
    decode::linear(h, B, l.in_proj, l.in_proj_b, xz);
    decode::conv_step(xz, 2 * Di, conv, l.conv_w.data<float>(), l.conv_b.defined() ? l.conv_b.data<float>() : nullptr,
                      xs, B, Di, W, true);
    decode::linear(xs, B, l.x_proj, Tensor(), xdbl);
    if (c.arch == Arch::falcon_mamba) {  // weightless RMS norms of dt, B and C, in place
      const float eps = float(c.mixer_rms_eps);
      for (int64_t b = 0; b < B; ++b) {
        float* r = xdbl + b * E;
        kernels::rms_norm_row(r, nullptr, ones_r_.data<float>(), r, R, R, eps, false, nullptr);
        kernels::rms_norm_row(r + R, nullptr, ones_n_.data<float>(), r + R, N, N, eps, false, nullptr);
        kernels::rms_norm_row(r + R + N, nullptr, ones_n_.data<float>(), r + R + N, N, N, eps, false, nullptr);
      }
    }
    struct Args {
      const Mamba1Layer* l;
      const float *xz, *xs, *xdbl, *A;
      float *ssm, *y, *delta;
      int64_t B, Di, N, R, E;
    } a{&l, xz, xs, xdbl, A, ssm, y, delta, B, Di, N, R, E};
    parallel_for(Di, 64, [&a](int64_t d0, int64_t d1) {
      for (int64_t b = 0; b < a.B; ++b) {
        const float* dbl = a.xdbl + b * a.E;
        decode::Mamba1Step s{dbl,
                             a.l->dt_proj.data<float>(),
                             a.l->dt_proj_b.data<float>(),
                             a.A,
                             dbl + a.R,
                             dbl + a.R + a.N,
                             a.l->D.data<float>(),
                             a.xs + b * a.Di,
                             a.xz + b * 2 * a.Di + a.Di,
                             a.ssm + b * a.Di * a.N,
                             a.y + b * a.Di,
                             a.delta + b * a.Di,
                             a.R,
                             a.N};
        decode::mamba1_scan_step(s, d0, d1);
      }
    });
    decode::linear(y, B, l.out_proj, l.out_proj_b, out);
  }
#ifdef SSM_HAVE_CUDA
  const Tensor& step_cuda(std::span<const int64_t> ids, InferenceState& state) const override {
    return cuda::mamba1_step(cfg_, gpu_, ids, state);
  }
#endif
  size_t mixer_state_count() const override { return 2; }
  size_t mixer_state_bytes() const override {
    const auto& c = cfg_;
    return size_t(c.n_layer) * size_t(c.d_inner) * size_t((c.d_conv - 1) + c.d_state) * sizeof(float);
  }

 private:
  // The selective parameters computed from the conv output xs [B, L, Di]: Δ, B, C.
  void select_inputs(const Mamba1Layer& l, const Tensor& xs, SelectiveScanArgs& a) const {
    const auto& c = cfg_;
    const int64_t B = xs.size(0), L = xs.size(1), N = c.d_state, R = c.dt_rank;
    Tensor x_dbl = linear(xs, l.x_proj);  // [B, L, R + 2N]
    Tensor dt = x_dbl.slice(2, 0, R), Bm = x_dbl.slice(2, R, R + N), Cm = x_dbl.slice(2, R + N, R + 2 * N);
    if (c.arch == Arch::falcon_mamba) {
      dt = rms_norm(dt.contiguous(), ones_r_, c.mixer_rms_eps);
      Bm = rms_norm(Bm.contiguous(), ones_n_, c.mixer_rms_eps);
      Cm = rms_norm(Cm.contiguous(), ones_n_, c.mixer_rms_eps);
    }
    a.delta = linear(dt.contiguous(), l.dt_proj);  // [B, L, Di] (bias added inside the scan)
    a.delta_bias = l.dt_proj_b;
    a.B = Bm.contiguous().view({B, L, 1, N});
    a.C = Cm.contiguous().view({B, L, 1, N});
  }
  std::vector<Mamba1Layer> layers_;
  Tensor ones_r_, ones_n_;
#ifdef SSM_HAVE_CUDA
  cuda::Mamba1StepWeights gpu_;  // the GPU step's view of the weights (device cuda only)
#endif
};

}  // namespace

std::unique_ptr<Model> make_mamba1(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) {
  return std::make_unique<Mamba1Model>(cfg, src, opts);
}

}  // namespace ssm
