// Mamba-3 SISO scan: argument checks and the f32 CPU kernel (include/ssm/ops_mamba3.h has the math).
// The kernel is the sequential recurrence, one (batch, head) per task: per token it rotates q and k
// (S cos/sin pairs), then makes one pass over the [P, N] state that applies the decay, both rank-1
// input terms (previous and current token) and the read-out S q̃ with 8-lane vectors. Its cost is
// that of the state update itself (~4·P·N flops per token and head), the state stays in L1, and the
// recurrent decode step (L = 1) is the same code path. The backward is in mamba3_backward.cpp.
#include "ops/reference/mamba3.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/mamba3_backward.h"
#include "ops/mamba3_cuda.h"
#include "ops/op_util.h"
#include "ops/scan_common.h"
#include "ssm/ops_mamba3.h"

namespace ssm {
namespace {

using detail::scan::splat;
using detail::scan::v8f;
constexpr const char* kOp = "mamba3_siso_scan";

inline v8f load8(const float* p) {
  v8f v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}
inline void store8(float* p, v8f v) { __builtin_memcpy(p, &v, sizeof(v)); }

// One pass over R consecutive rows of the state S [., N]: S_r = α S_r + bv_r k_prev + gv_r k_cur, and
// out_r = S_r · q. R rows at once share the loads of k_prev, k_cur and q and give R independent
// accumulator chains (one chain would be bound by the FMA latency).
template <int R>
inline void update_rows(float* S, int64_t N, float alpha, const float* bv, const float* gv, const float* kp,
                        const float* kc, const float* q, float* out) {
  const v8f va = splat(alpha);
  v8f vb[R], vg[R], acc[R];
  for (int r = 0; r < R; ++r) {
    vb[r] = splat(bv[r]);
    vg[r] = splat(gv[r]);
    acc[r] = splat(0.0f);
  }
  int64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    const v8f k0 = load8(kp + n), k1 = load8(kc + n), qq = load8(q + n);
    for (int r = 0; r < R; ++r) {
      float* s = S + r * N + n;
      const v8f sv = va * load8(s) + vb[r] * k0 + vg[r] * k1;
      store8(s, sv);
      acc[r] += sv * qq;
    }
  }
  for (int r = 0; r < R; ++r) {
    float o = detail::scan::hsum(acc[r]);
    float* s = S + r * N;
    for (int64_t m = n; m < N; ++m) {
      s[m] = alpha * s[m] + bv[r] * kp[m] + gv[r] * kc[m];
      o += s[m] * q[m];
    }
    out[r] = o;
  }
}

void mamba3_siso_f32(const ref::Mamba3RefArgs<float>& a) {
  const int64_t B = a.B, L = a.L, H = a.H, P = a.P, N = a.N, G = a.G, S = a.S, hpg = H / G;
  constexpr float kPi = 3.14159265358979323846f, kTwoPi = 2 * kPi;
  // ω = π tanh(angles), shared by all heads.
  std::vector<float> omega(static_cast<size_t>(B * L * S));  // [B, L, S]
  for (size_t i = 0; i < omega.size(); ++i) omega[i] = kPi * std::tanh(a.angles[i]);
  const int64_t work = std::max<int64_t>(1, L * P * N);
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 15) / work);
  parallel_for(B * H, grain, [&](int64_t i0, int64_t i1) {
    const size_t Sz = static_cast<size_t>(S), Nz = static_cast<size_t>(N), Pz = static_cast<size_t>(P);
    std::vector<float> th(Sz), kp(Nz), qr(Nz), kr(Nz), vp(Pz);  // [S], [N], [N], [N], [P]
    std::vector<float> bvp(Pz), gvp(Pz), yraw(Pz);              // [P] each
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, h = i % H, g = h / hpg;
      float* St = a.ssm_out + i * P * N;  // [P, N], the running state
      for (int64_t j = 0; j < P * N; ++j) St[j] = a.ssm0 ? a.ssm0[i * P * N + j] : 0.0f;
      for (int64_t j = 0; j < S; ++j) th[size_t(j)] = a.angle0 ? a.angle0[i * S + j] : 0.0f;
      for (int64_t n = 0; n < N; ++n) kp[size_t(n)] = a.k0 ? a.k0[i * N + n] : 0.0f;
      for (int64_t p = 0; p < P; ++p) vp[size_t(p)] = a.v0 ? a.v0[i * P + p] : 0.0f;
      const float Dh = a.D ? a.D[h] : 0.0f;
      const float* qb = a.q_bias + h * N;
      const float* kb = a.k_bias + h * N;
      for (int64_t t = 0; t < L; ++t) {
        const int64_t bt = b * L + t, bth = bt * H + h;
        const float dt = a.dt[bth];
        const float* om = omega.data() + bt * S;
        for (int64_t j = 0; j < S; ++j) {
          float x = th[size_t(j)] + om[j] * dt;
          th[size_t(j)] = x - kTwoPi * std::floor(x / kTwoPi);
        }
        const float* qt = a.q + (bt * G + g) * N;
        const float* kt = a.k + (bt * G + g) * N;
        for (int64_t n = 0; n < N; ++n) {
          qr[size_t(n)] = qt[n] + qb[n];
          kr[size_t(n)] = kt[n] + kb[n];
        }
        for (int64_t j = 0; j < S; ++j) {
          const float c = std::cos(th[size_t(j)]), s = std::sin(th[size_t(j)]);
          const float q0 = qr[size_t(2 * j)], q1 = qr[size_t(2 * j + 1)];
          const float k0 = kr[size_t(2 * j)], k1 = kr[size_t(2 * j + 1)];
          qr[size_t(2 * j)] = q0 * c - q1 * s;
          qr[size_t(2 * j + 1)] = q0 * s + q1 * c;
          kr[size_t(2 * j)] = k0 * c - k1 * s;
          kr[size_t(2 * j + 1)] = k0 * s + k1 * c;
        }
        const float lam = 1.0f / (1.0f + std::exp(-a.trap[bth]));
        const float alpha = std::exp(a.adt[bth]), beta = (1.0f - lam) * dt * alpha, gamma = lam * dt;
        const float* vt = a.v + bth * P;  // [P]
        float* yt = a.y + bth * P;        // [P]
        for (int64_t p = 0; p < P; ++p) {
          bvp[size_t(p)] = beta * vp[size_t(p)];
          gvp[size_t(p)] = gamma * vt[p];
        }
        int64_t p = 0;
        for (; p + 4 <= P; p += 4)
          update_rows<4>(St + p * N, N, alpha, bvp.data() + p, gvp.data() + p, kp.data(), kr.data(), qr.data(),
                         yraw.data() + p);
        for (; p < P; ++p)
          update_rows<1>(St + p * N, N, alpha, bvp.data() + p, gvp.data() + p, kp.data(), kr.data(), qr.data(),
                         yraw.data() + p);
        for (p = 0; p < P; ++p) {
          float out = yraw[size_t(p)] + Dh * vt[p];
          if (a.z) {
            const float zz = a.z[bth * P + p];
            out *= zz / (1.0f + std::exp(-zz));
          }
          yt[p] = out;
        }
        std::copy(kr.begin(), kr.end(), kp.begin());
        std::copy(vt, vt + P, vp.begin());
      }
      std::copy(th.begin(), th.end(), a.angle_out + i * S);
      std::copy(kp.begin(), kp.end(), a.k_out + i * N);
      std::copy(vp.begin(), vp.end(), a.v_out + i * P);
    }
  });
}

void check_args(const Mamba3SisoArgs& a) {
  using namespace detail;
  check_defined(kOp, a.v, "v");
  const bool gpu = a.v.device() == Device::cuda;
  if (gpu)
    SSM_CHECK(a.v.dtype() == DType::f32 || a.v.dtype() == DType::bf16 || a.v.dtype() == DType::f16, kOp,
              std::string("v on the GPU must be f32, bf16 or f16, got ") + dtype_name(a.v.dtype()));
  else
    check_float(kOp, a.v, "v");
  check_dim(kOp, a.v, 4, "v");
  const int64_t B = a.v.size(0), L = a.v.size(1), H = a.v.size(2), P = a.v.size(3);
  SSM_CHECK(B >= 1 && L >= 1 && H >= 1 && P >= 1, kOp, "v must be non-empty, got shape " + shape_str(a.v.shape()));
  check_defined(kOp, a.q, "q");
  check_defined(kOp, a.k, "k");
  check_dim(kOp, a.q, 4, "q");
  const int64_t G = a.q.size(2), N = a.q.size(3);
  SSM_CHECK(G >= 1 && H % G == 0, kOp,
            "q has " + std::to_string(G) + " groups but H=" + std::to_string(H) + " heads is not divisible by it");
  SSM_CHECK(N >= 2, kOp, "state size N must be >= 2, got " + std::to_string(N));
  check_shape(kOp, a.q, {B, L, G, N}, "q");
  check_shape(kOp, a.k, {B, L, G, N}, "k");
  for (const auto& [t, name] : {std::pair{&a.adt, "adt"}, {&a.dt, "dt"}, {&a.trap, "trap"}}) {
    check_defined(kOp, *t, name);
    check_shape(kOp, *t, {B, L, H}, name);
  }
  check_defined(kOp, a.q_bias, "q_bias");
  check_defined(kOp, a.k_bias, "k_bias");
  check_shape(kOp, a.q_bias, {H, N}, "q_bias");
  check_shape(kOp, a.k_bias, {H, N}, "k_bias");
  check_defined(kOp, a.angles, "angles");
  check_dim(kOp, a.angles, 3, "angles");
  const int64_t S = a.angles.size(2);
  SSM_CHECK(S >= 1 && 2 * S <= N, kOp,
            "angles has " + std::to_string(S) + " rotary angles; it needs 1 to N/2 = " + std::to_string(N / 2));
  check_shape(kOp, a.angles, {B, L, S}, "angles");
  if (a.D.defined()) check_shape(kOp, a.D, {H}, "D");
  if (a.z.defined()) check_shape(kOp, a.z, {B, L, H, P}, "z");
  if (a.angle_state.defined()) check_shape(kOp, a.angle_state, {B, H, S}, "angle_state");
  if (a.ssm_state.defined()) check_shape(kOp, a.ssm_state, {B, H, P, N}, "ssm_state");
  if (a.k_state.defined()) check_shape(kOp, a.k_state, {B, H, N}, "k_state");
  if (a.v_state.defined()) check_shape(kOp, a.v_state, {B, H, P}, "v_state");
  const std::pair<const Tensor*, const char*> all[] = {{&a.q, "q"},
                                                       {&a.k, "k"},
                                                       {&a.adt, "adt"},
                                                       {&a.dt, "dt"},
                                                       {&a.trap, "trap"},
                                                       {&a.q_bias, "q_bias"},
                                                       {&a.k_bias, "k_bias"},
                                                       {&a.angles, "angles"},
                                                       {&a.D, "D"},
                                                       {&a.z, "z"},
                                                       {&a.angle_state, "angle_state"},
                                                       {&a.ssm_state, "ssm_state"},
                                                       {&a.k_state, "k_state"},
                                                       {&a.v_state, "v_state"}};
  // On the GPU, q, k and z have v's dtype and the rest (per-step scalars, parameters, states) may also be f32.
  for (const auto& [t, name] : all) {
    if (!t->defined()) continue;
    SSM_CHECK(t->device() == a.v.device(), kOp,
              std::string(name) + " is on " + device_name(t->device()) + " but v is on " + device_name(a.v.device()));
    const bool act = t == &a.q || t == &a.k || t == &a.z;
    if (!(gpu && !act && t->dtype() == DType::f32)) check_same_dtype(kOp, a.v, "v", *t, name);
  }
}

}  // namespace

Mamba3SisoOut mamba3_siso_scan(const Mamba3SisoArgs& a) {
  check_args(a);
  if (a.v.device() == Device::cuda) return detail::mamba3_siso_cuda(a);
  auto cont = [](const Tensor& t) {  // contiguous copy recording no history (this op records its own)
    autograd::NoGradGuard ng;
    return t.defined() ? t.contiguous() : Tensor();
  };
  const std::vector<Tensor> orig = {a.q,      a.k, a.v, a.adt,         a.dt,        a.trap,    a.q_bias, a.k_bias,
                                    a.angles, a.D, a.z, a.angle_state, a.ssm_state, a.k_state, a.v_state};
  std::vector<Tensor> in;  // contiguous, same order as orig
  for (const Tensor& t : orig) in.push_back(cont(t));
  const DType dt = a.v.dtype();
  const int64_t B = a.v.size(0), L = a.v.size(1), H = a.v.size(2), P = a.v.size(3);
  const int64_t G = a.q.size(2), N = a.q.size(3), S = a.angles.size(2);
  Mamba3SisoOut o;
  o.y = Tensor::empty({B, L, H, P}, dt);          // [B, L, H, P]
  o.angle_state = Tensor::empty({B, H, S}, dt);   // [B, H, S]
  o.ssm_state = Tensor::empty({B, H, P, N}, dt);  // [B, H, P, N]
  o.k_state = Tensor::empty({B, H, N}, dt);       // [B, H, N]
  o.v_state = Tensor::empty({B, H, P}, dt);       // [B, H, P]
  detail::dispatch_float(kOp, dt, [&]<typename T>() {
    auto ptr = [&](size_t i) -> const T* { return in[i].defined() ? in[i].template data<T>() : nullptr; };
    ref::Mamba3RefArgs<T> r{ptr(0),
                            ptr(1),
                            ptr(2),
                            ptr(3),
                            ptr(4),
                            ptr(5),
                            ptr(6),
                            ptr(7),
                            ptr(8),
                            ptr(9),
                            ptr(10),
                            ptr(11),
                            ptr(12),
                            ptr(13),
                            ptr(14),
                            o.y.data<T>(),
                            o.angle_state.data<T>(),
                            o.ssm_state.data<T>(),
                            o.k_state.data<T>(),
                            o.v_state.data<T>(),
                            B,
                            L,
                            H,
                            P,
                            N,
                            G,
                            S};
    if constexpr (std::is_same_v<T, float>) {
      if (detail::use_fast(dt)) {
        mamba3_siso_f32(r);
        return;
      }
    }
    ref::mamba3_siso_ref(r);
  });
  autograd::record(kOp, orig, {&o.y, &o.angle_state, &o.ssm_state, &o.k_state, &o.v_state},
                   [in](const std::vector<Tensor>& g) {
                     std::vector<Tensor> gc;
                     for (const Tensor& t : g) gc.push_back(t.defined() ? t.contiguous() : Tensor());
                     return detail::mamba3_siso_backward(in, gc);
                   });
  return o;
}

}  // namespace ssm
