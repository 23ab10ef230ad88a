// Mamba-2 mixer (mamba_ssm `Mamba2`, HF `Mamba2Mixer`). docs: shared/docs/reference/mamba.md §3.
#include <cmath>

#include "models/decode.h"
#include "models/model_impl.h"
#include "ops/fast_math.h"
#include "ops/rows.h"
#include "ops/scan_common.h"
#include "ssm/ops.h"
#ifdef SSM_HAVE_CUDA
#include "backend/cuda/mamba2_step.h"
#endif

namespace ssm {
namespace {

struct Mamba2Layer {
  Tensor in_proj, in_proj_b;    // [2*Di + 2*G*N + H, dm]
  Tensor conv_w, conv_b;        // [Di + 2*G*N, W]
  Tensor dt_bias, A_log, D;     // [H], [H], [H] or [Di]
  Tensor norm_w;                // [Di]
  Tensor out_proj, out_proj_b;  // [dm, Di]
};

class Mamba2Model : public Model {
 public:
  Mamba2Model(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) : Model(cfg) {
    ModelLoader::load_common(*this, src, opts);
    using K = WeightSource::Kind;
    const auto& c = cfg_;
    const int64_t Di = c.d_inner, N = c.d_state, G = c.ngroups, H = c.nheads, W = c.d_conv;
    const int64_t conv_dim = Di + 2 * G * N, d_in_proj = 2 * Di + 2 * G * N + H;
    DType md = matrix_dtype(opts);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      std::string p = ModelLoader::layer_prefix(c, i) + "mixer.";
      Mamba2Layer l;
      auto get = [&](const std::string& n, const Shape& s, DType dt, K k) {
        Tensor t = src.get(p + n, s, dt, k);
        ModelLoader::add_param(*this, p + n, t);
        return t;
      };
      l.in_proj = get("in_proj.weight", {d_in_proj, c.d_model}, md, K::linear);
      if (c.proj_bias) l.in_proj_b = get("in_proj.bias", {d_in_proj}, DType::f32, K::zeros);
      l.conv_w = get("conv1d.weight", {conv_dim, 1, W}, DType::f32, K::conv_weight);  // as stored
      if (c.conv_bias) l.conv_b = get("conv1d.bias", {conv_dim}, DType::f32, K::conv_bias);
      l.dt_bias = get("dt_bias", {H}, DType::f32, K::dt_bias);
      l.A_log = get("A_log", {H}, DType::f32, K::a_log_heads);
      l.D = get("D", {c.d_has_hdim ? Di : H}, DType::f32, K::ones);
      if (c.gated_norm) l.norm_w = get("norm.weight", {Di}, DType::f32, K::ones);
      l.out_proj = get("out_proj.weight", {c.d_model, Di}, md, K::out_proj);
      if (c.proj_bias) l.out_proj_b = get("out_proj.bias", {c.d_model}, DType::f32, K::zeros);
      layers_.push_back(l);
    }
#ifdef SSM_HAVE_CUDA
    if (opts.device == Device::cuda) {
      gpu_.embedding = embedding_, gpu_.lm_head = lm_head_, gpu_.norm_f = norm_f_;
      for (int64_t i = 0; i < c.n_layer; ++i) {
        const Mamba2Layer& l = layers_[size_t(i)];
        gpu_.layers.push_back({norm_[size_t(i)], l.in_proj, l.in_proj_b, l.conv_w, l.conv_b, l.dt_bias, l.A_log, l.D,
                               l.norm_w, l.out_proj, l.out_proj_b});
      }
    }
#endif
  }

 protected:
  // state: {conv [B, W-1, Di + 2GN], ssm [B, H, P, N]}
  Tensor mixer(int64_t li, const Tensor& h, std::vector<Tensor>* st) const override {
    const auto& c = cfg_;
    const Mamba2Layer& l = layers_[size_t(li)];
    const int64_t B = h.size(0), L = h.size(1), Di = c.d_inner, N = c.d_state, G = c.ngroups, H = c.nheads,
                  P = c.headdim;
    Tensor zxbcdt = linear(h, l.in_proj, l.in_proj_b);  // [B, L, 2Di + 2GN + H]
    Tensor z = zxbcdt.slice(2, 0, Di);
    Tensor xBC = zxbcdt.slice(2, Di, 2 * Di + 2 * G * N);
    Tensor dt = zxbcdt.slice(2, 2 * Di + 2 * G * N, 2 * Di + 2 * G * N + H);  // [B, L, H]
    Conv1dOut conv = causal_conv1d(xBC.contiguous(), l.conv_w.view({Di + 2 * G * N, c.d_conv}), l.conv_b,
                                   st ? (*st)[0] : Tensor(), true);
    Tensor x = conv.y.slice(2, 0, Di).contiguous().view({B, L, H, P});
    Tensor Bm = conv.y.slice(2, Di, Di + G * N).contiguous().view({B, L, G, N});
    Tensor Cm = conv.y.slice(2, Di + G * N, Di + 2 * G * N).contiguous().view({B, L, G, N});
    // Δ and the decays in f32 (the parameters' dtype); on the GPU the activations (act) may be bf16/f16,
    // and the SSD scan takes the f32 decays and state as they are.
    const DType act = x.dtype();
    Tensor delta = softplus(add(dt.contiguous().to(DType::f32), l.dt_bias));  // [B, L, H] f32
    if (c.dt_limit_lo > 0 || std::isfinite(c.dt_limit_hi)) delta = clamp(delta, c.dt_limit_lo, c.dt_limit_hi);
    Tensor A = neg(exp(l.A_log));  // [H]
    SSDArgs a;
    a.x = mul(x, delta.to(act).unsqueeze(3));  // [B, L, H, P]
    a.A = mul(delta, A);                       // [B, L, H]
    a.B = Bm;
    a.C = Cm;
    a.chunk_size = c.chunk_size;
    if (st) a.initial_state = (*st)[1];
    ScanOut s = ssd_scan(a);  // y [B, L, H, P]
    Tensor Dv = (c.d_has_hdim ? l.D.view({H, P}) : l.D.view({H, 1})).to(act);
    Tensor y = add(s.y, mul(x, Dv)).view({B, L, Di});
    if (c.gated_norm)
      y = gated_rms_norm(y, z.contiguous(), l.norm_w, Di / G, 1e-5, c.norm_before_gate);
    else
      y = mul(y, silu(z.contiguous()));
    if (st) {
      (*st)[0] = conv.final_state.detach();
      (*st)[1] = s.final_state.detach();
    }
    return linear(y, l.out_proj, l.out_proj_b);  // [B, L, dm]
  }
  // The same layer for one token, fused: in_proj, conv update, dt, SSD state update per head,
  // gated norm, out_proj; three parallel regions, no allocation.
  void mixer_step(int64_t li, const float* h, float* out, int64_t B, std::vector<Tensor>& st,
                  DecodeScratch& ws) const override {
    const auto& c = cfg_;
    const Mamba2Layer& l = layers_[size_t(li)];
    const int64_t Di = c.d_inner, N = c.d_state, G = c.ngroups, H = c.nheads, P = c.headdim, W = c.d_conv;
    const int64_t conv_dim = Di + 2 * G * N, E = 2 * Di + 2 * G * N + H;
    float* zx = ws.buf(0, B * E);          // [B, E]: z, xBC, dt
    float* xbc = ws.buf(1, B * conv_dim);  // [B, conv_dim] conv output: x, B, C
    float* dt = ws.buf(2, B * H);
    float* y = ws.buf(3, B * Di);
    float* yn = ws.buf(4, B * Di);
    float* conv = decode::state_buffer(st[0], {B, W - 1, conv_dim});
    float* ssm = decode::state_buffer(st[1], {B, H, P, N});
    const float* A = ws.neg_exp(li, l.A_log);  // [H]
    decode::linear(h, B, l.in_proj, l.in_proj_b, zx);
    decode::conv_step(zx + Di, E, conv, l.conv_w.data<float>(), l.conv_b.defined() ? l.conv_b.data<float>() : nullptr,
                      xbc, B, conv_dim, W, true);
    const bool clamp = c.dt_limit_lo > 0 || std::isfinite(c.dt_limit_hi);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < H; ++i) {
        float v = detail::scan::softplus_s(zx[b * E + 2 * Di + 2 * G * N + i] + l.dt_bias.data<float>()[i]);
        if (clamp) v = std::min(std::max(v, float(c.dt_limit_lo)), float(c.dt_limit_hi));
        dt[b * H + i] = v;
      }
    struct Args {
      const Mamba2Layer* l;
      const float *xbc, *dt, *A;
      float *ssm, *y;
      int64_t B, Di, G, H, P, N, conv_dim;
      bool d_per_channel;
    } a{&l, xbc, dt, A, ssm, y, B, Di, G, H, P, N, conv_dim, c.d_has_hdim};
    parallel_for(H, 1, [&a](int64_t h0, int64_t h1) {
      for (int64_t b = 0; b < a.B; ++b) {
        const float* xb = a.xbc + b * a.conv_dim;
        decode::Mamba2Step s{a.dt + b * a.H,
                             a.A,
                             xb,
                             xb + a.Di,
                             xb + a.Di + a.G * a.N,
                             a.l->D.data<float>(),
                             a.ssm + b * a.H * a.P * a.N,
                             a.y + b * a.Di,
                             a.P,
                             a.N,
                             a.H / a.G,
                             a.d_per_channel};
        decode::mamba2_scan_step(s, h0, h1);
      }
    });
    for (int64_t b = 0; b < B; ++b) {
      const float* z = zx + b * E;
      float* yb = y + b * Di;
      if (c.gated_norm) {
        kernels::rms_norm_row(yb, z, l.norm_w.data<float>(), yn + b * Di, Di, Di / G, 1e-5, c.norm_before_gate,
                              ws.tmp.data());
      } else {
        for (int64_t i = 0; i < Di; ++i) yn[b * Di + i] = yb[i] * fm::silu(z[i]);
      }
    }
    decode::linear(yn, B, l.out_proj, l.out_proj_b, out);
  }
#ifdef SSM_HAVE_CUDA
  const Tensor& step_cuda(std::span<const int64_t> ids, InferenceState& state) const override {
    if (cfg_.gated_norm) return cuda::mamba2_step(cfg_, gpu_, ids, state);
    return Model::step_cuda(ids, state);  // without the gated norm: the op path (allocates per token)
  }
#endif
  size_t mixer_state_count() const override { return 2; }
  size_t mixer_state_bytes() const override {
    const auto& c = cfg_;
    size_t conv = size_t(c.d_conv - 1) * size_t(c.d_inner + 2 * c.ngroups * c.d_state);
    size_t ssm = size_t(c.nheads) * size_t(c.headdim) * size_t(c.d_state);
    return size_t(c.n_layer) * (conv + ssm) * sizeof(float);
  }

 private:
  std::vector<Mamba2Layer> layers_;
#ifdef SSM_HAVE_CUDA
  cuda::Mamba2StepWeights gpu_;  // the GPU step's view of the weights (device cuda only)
#endif
};

}  // namespace

std::unique_ptr<Model> make_mamba2(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) {
  return std::make_unique<Mamba2Model>(cfg, src, opts);
}

}  // namespace ssm
