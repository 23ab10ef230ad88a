// Mamba-3 SISO mixer (mamba_ssm `Mamba3`, is_mimo=False). docs: shared/docs/reference/mamba.md §4.
// No conv; data-dependent decay A_t = -max(f(dd_A_t), A_floor) with the heavy-tailed f of §4.1 (the
// fixtures pin it: -softplus, which some mamba_ssm revisions use, misses them by 0.19 absolute);
// trapezoidal discretization; rotary B/C over cumulative data-dependent angles; RMSNorm + per-head
// bias on B and C.
#include <cmath>
#include <limits>

#include "models/model_impl.h"
#include "ssm/ops.h"
#include "ssm/ops_mamba3.h"

namespace ssm {
namespace {

struct Mamba3Layer {
  Tensor in_proj;         // [2*Di + 2*G*N + 3*H + S, dm], rows [z, x, B, C, dd_dt, dd_A, trap, angles]
  Tensor dt_bias, D;      // [H], [H]
  Tensor B_bias, C_bias;  // [H, 1, N] as in the checkpoint (viewed as [H, N] per forward, so gradients reach them)
  Tensor B_norm, C_norm;  // [N]
  Tensor out_proj;        // [dm, Di]
};

// Rotary angles: int(N * rope_fraction) rounded down to even, halved (mamba_ssm Mamba3.__init__).
int64_t num_rope_angles(const ModelConfig& c) {
  int64_t split = int64_t(double(c.d_state) * c.rope_fraction);
  if (split % 2 != 0) split -= 1;
  return split / 2;
}

class Mamba3Model : public Model {
 public:
  Mamba3Model(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) : Model(cfg) {
    const auto& c = cfg_;
    SSM_CHECK(!c.is_mimo, "mamba3", "MIMO Mamba-3 is not supported (SISO only)");
    SSM_CHECK(c.rope_fraction == 0.5 || c.rope_fraction == 1.0, "mamba3",
              "rope_fraction must be 0.5 or 1.0, got " + std::to_string(c.rope_fraction));
    SSM_CHECK(c.headdim >= 1 && c.d_inner == c.nheads * c.headdim, "mamba3",
              "d_inner " + std::to_string(c.d_inner) + " is not nheads * headdim = " + std::to_string(c.nheads) +
                  " * " + std::to_string(c.headdim));
    SSM_CHECK(c.ngroups >= 1 && c.nheads % c.ngroups == 0, "mamba3",
              "nheads " + std::to_string(c.nheads) + " is not divisible by ngroups " + std::to_string(c.ngroups));
    SSM_CHECK(num_rope_angles(c) >= 1, "mamba3", "d_state " + std::to_string(c.d_state) + " leaves no rotary angle");
    ModelLoader::load_common(*this, src, opts);
    using K = WeightSource::Kind;
    const int64_t Di = c.d_inner, N = c.d_state, G = c.ngroups, H = c.nheads, S = num_rope_angles(c);
    const int64_t d_in_proj = 2 * Di + 2 * G * N + 3 * H + S;
    DType md = matrix_dtype(opts);
    for (int64_t i = 0; i < c.n_layer; ++i) {
      std::string p = ModelLoader::layer_prefix(c, i) + "mixer.";
      Mamba3Layer l;
      auto get = [&](const std::string& n, const Shape& s, DType dt, K k) {
        Tensor t = src.get(p + n, s, dt, k);
        ModelLoader::add_param(*this, p + n, t);
        return t;
      };
      l.in_proj = get("in_proj.weight", {d_in_proj, c.d_model}, md, K::linear);
      l.dt_bias = get("dt_bias", {H}, DType::f32, K::dt_bias);
      l.B_bias = get("B_bias", {H, 1, N}, DType::f32, K::ones);
      l.C_bias = get("C_bias", {H, 1, N}, DType::f32, K::ones);
      l.B_norm = get("B_norm.weight", {N}, DType::f32, K::ones);
      l.C_norm = get("C_norm.weight", {N}, DType::f32, K::ones);
      l.D = get("D", {H}, DType::f32, K::ones);
      l.out_proj = get("out_proj.weight", {c.d_model, Di}, md, K::out_proj);
      layers_.push_back(l);
    }
  }

 protected:
  // state: {angle [B, H, S], ssm [B, H, P, N], k [B, H, N] (rotated + biased B of the last token),
  //         v [B, H, P] (x of the last token)}; all f32.
  Tensor mixer(int64_t li, const Tensor& h, std::vector<Tensor>* st) const override {
    const auto& c = cfg_;
    const Mamba3Layer& l = layers_[size_t(li)];
    const int64_t B = h.size(0), L = h.size(1), Di = c.d_inner, N = c.d_state, G = c.ngroups, H = c.nheads,
                  P = c.headdim, S = num_rope_angles(c);
    Tensor proj = linear(h, l.in_proj);  // [B, L, 2Di + 2GN + 3H + S]
    int64_t off = 0;
    auto take = [&](int64_t n) {
      Tensor t = proj.slice(2, off, off + n).contiguous();
      off += n;
      return t;
    };
    Tensor z = take(Di).view({B, L, H, P});
    Tensor x = take(Di).view({B, L, H, P});
    Tensor Bm = take(G * N).view({B, L, G, N});
    Tensor Cm = take(G * N).view({B, L, G, N});
    Tensor dd_dt = take(H);   // [B, L, H]
    Tensor dd_A = take(H);    // [B, L, H]
    Tensor trap = take(H);    // [B, L, H]
    Tensor angles = take(S);  // [B, L, S]
    // Δ and A in f32 (on the GPU the activations may be bf16/f16; the scan takes f32 per-step scalars).
    Tensor DT = softplus(add(dd_dt.to(DType::f32), l.dt_bias));  // [B, L, H]
    // A = -max(f(dd_A), A_floor) with the heavy-tailed f(x) = 1 + x (x >= 0), 1 / (1 - x) (x < 0),
    // written branch-free as f(x) = relu(x) + 1 / (1 + relu(-x)), relu as clamp(x, 0, inf) (both devices).
    const double inf = std::numeric_limits<double>::infinity();
    Tensor ddA = dd_A.to(DType::f32), one = Tensor::full({1}, 1.0).to(h.device());
    Tensor f = add(clamp(ddA, 0, inf), div(one, add(clamp(neg(ddA), 0, inf), one)));
    Tensor A = neg(clamp(f, c.a_floor, std::numeric_limits<double>::infinity()));  // [B, L, H]
    Mamba3SisoArgs a;
    a.q = rms_norm(Cm, l.C_norm, 1e-5);  // [B, L, G, N]
    a.k = rms_norm(Bm, l.B_norm, 1e-5);  // [B, L, G, N]
    a.v = x;
    a.adt = mul(A, DT);
    a.dt = DT;
    a.trap = trap;

    a.q_bias = l.C_bias.view({H, N});
    a.k_bias = l.B_bias.view({H, N});
    a.angles = angles;
    a.D = l.D;
    a.z = z;
    if (st) {
      a.angle_state = (*st)[0];
      a.ssm_state = (*st)[1];
      a.k_state = (*st)[2];
      a.v_state = (*st)[3];
    }
    Mamba3SisoOut o = mamba3_siso_scan(a);  // y [B, L, H, P]
    if (st) {
      (*st)[0] = o.angle_state.detach();
      (*st)[1] = o.ssm_state.detach();
      (*st)[2] = o.k_state.detach();
      (*st)[3] = o.v_state.detach();
    }
    return linear(o.y.view({B, L, Di}), l.out_proj);  // [B, L, dm]
  }
  size_t mixer_state_count() const override { return 4; }
  size_t mixer_state_bytes() const override {
    const auto& c = cfg_;
    const size_t H = size_t(c.nheads), P = size_t(c.headdim), N = size_t(c.d_state), S = size_t(num_rope_angles(c));
    return size_t(c.n_layer) * H * (S + P * N + N + P) * sizeof(float);
  }

 private:
  std::vector<Mamba3Layer> layers_;
};

}  // namespace

std::unique_ptr<Model> make_mamba3(const ModelConfig& cfg, WeightSource& src, const LoadOptions& opts) {
  return std::make_unique<Mamba3Model>(cfg, src, opts);
}

}  // namespace ssm
