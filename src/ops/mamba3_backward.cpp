// Backward of the Mamba-3 SISO scan (include/ssm/ops_mamba3.h has the forward math), for f32 and f64.
// One (batch, head) per task. The task first replays the forward once, keeping per token the
// cumulative angle θ_t and the rotated q̃_t, k̃_t ([L, S], [L, N], [L, N]) and the state S before
// every segment of kSeg tokens; then it walks the segments backwards, recomputing the segment's
// states S_t ([kSeg, P, N]) from its checkpoint, and runs the adjoint recurrence token by token:
//   dS ← dS + do_t ⊗ q̃_t;  dq̃_t = S_tᵀ do_t;  dα_t = <dS, S_{t-1}>;  dβ_t = v_{t-1}ᵀ dS k̃_{t-1};
//   dγ_t = v_tᵀ dS k̃_t;  dv_t += γ dS k̃_t, dk̃_t += γ dSᵀ v_t;  (v_{t-1}, k̃_{t-1}) get the β terms;
//   dS ← α_t dS  (the adjoint of S_{t-1}),
// then maps dα, dβ, dγ to adt, dt, trap, un-rotates dq̃ / dk̃ (and collects dθ), and carries dθ back
// through the cumulative sum. Gradients of tensors shared by several heads (q, k by group, angles by
// all heads) or batches (q_bias, k_bias, D) are written per (batch, head) and summed afterwards.
#include "ops/mamba3_backward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/op_util.h"
#include "ssm/base.h"

namespace ssm::detail {
namespace {

constexpr int64_t kSeg = 32;  // tokens per recomputed segment

template <typename T>
struct Ptrs {
  const T *q, *k, *v, *adt, *dt, *trap, *qb, *kb, *ang, *D, *z, *th0, *S0, *k0, *v0;  // inputs (null = absent)
  const T *dy, *dth, *dS, *dk, *dv;                                                   // output grads (null = zero)
};

template <typename T>
T* ptr_or_null(const Tensor& t) {
  return t.defined() ? t.data<T>() : nullptr;
}

template <typename T>
std::vector<Tensor> backward_impl(const std::vector<Tensor>& in, const std::vector<Tensor>& g) {
  const Tensor& vt = in[2];
  const int64_t B = vt.size(0), L = vt.size(1), H = vt.size(2), P = vt.size(3);
  const int64_t G = in[0].size(2), N = in[0].size(3), S = in[8].size(2), hpg = H / G;
  const DType dt = vt.dtype();
  Ptrs<T> a{};
  const T** ins[] = {&a.q,   &a.k, &a.v, &a.adt, &a.dt, &a.trap, &a.qb, &a.kb,
                     &a.ang, &a.D, &a.z, &a.th0, &a.S0, &a.k0,   &a.v0};
  for (size_t i = 0; i < 15; ++i) *ins[i] = ptr_or_null<T>(in[i]);
  const T** gs[] = {&a.dy, &a.dth, &a.dS, &a.dk, &a.dv};
  for (size_t i = 0; i < 5; ++i) *gs[i] = ptr_or_null<T>(g[i]);

  // Per-(batch, head) gradients; shared ones are reduced below.
  Tensor dq_h = Tensor::zeros({B, L, H, N}, dt), dk_h = Tensor::zeros({B, L, H, N}, dt);  // [B, L, H, N]
  Tensor dang_h = Tensor::zeros({B, L, H, S}, dt);                                        // [B, L, H, S]
  Tensor dqb_h = Tensor::zeros({B, H, N}, dt), dkb_h = Tensor::zeros({B, H, N}, dt);      // [B, H, N]
  Tensor dD_h = Tensor::zeros({B, H}, dt);                                                // [B, H]
  Tensor dv = Tensor::zeros({B, L, H, P}, dt), dz = Tensor::zeros({B, L, H, P}, dt);      // [B, L, H, P]
  Tensor dadt = Tensor::zeros({B, L, H}, dt), ddt = Tensor::zeros({B, L, H}, dt);         // [B, L, H]
  Tensor dtrap = Tensor::zeros({B, L, H}, dt);                                            // [B, L, H]
  Tensor dth0 = Tensor::zeros({B, H, S}, dt), dS0 = Tensor::zeros({B, H, P, N}, dt);      // initial state
  Tensor dk0 = Tensor::zeros({B, H, N}, dt), dv0 = Tensor::zeros({B, H, P}, dt);
  T *o_dq = dq_h.data<T>(), *o_dk = dk_h.data<T>(), *o_dang = dang_h.data<T>(), *o_dqb = dqb_h.data<T>(),
    *o_dkb = dkb_h.data<T>(), *o_dD = dD_h.data<T>(), *o_dv = dv.data<T>(), *o_dz = dz.data<T>(),
    *o_dadt = dadt.data<T>(), *o_ddt = ddt.data<T>(), *o_dtrap = dtrap.data<T>(), *o_dth0 = dth0.data<T>(),
    *o_dS0 = dS0.data<T>(), *o_dk0 = dk0.data<T>(), *o_dv0 = dv0.data<T>();

  const T pi = T(3.14159265358979323846), two_pi = 2 * pi;
  const int64_t PN = P * N, nseg = (L + kSeg - 1) / kSeg;
  parallel_for(B * H, 1, [&](int64_t i0, int64_t i1) {
    auto vec = [](int64_t n) { return std::vector<T>(static_cast<size_t>(n)); };
    std::vector<T> th = vec(L * S), qr = vec(L * N), kr = vec(L * N), ck = vec(nseg * PN), seg = vec(kSeg * PN);
    std::vector<T> St = vec(PN), dS = vec(PN), dqt = vec(N), dkt = vec(N), dkc = vec(N), dvt = vec(P), dvc = vec(P);
    std::vector<T> dth = vec(S), theta = vec(S), zero_n = vec(N), zero_p = vec(P), dox = vec(P);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / H, h = i % H, gr = h / hpg;
      auto at = [&](int64_t t) { return (b * L + t) * H + h; };  // index of (b, t, h) in [B, L, H]
      const T* qb = a.qb + h * N;
      const T* kb = a.kb + h * N;
      const T Dh = a.D ? a.D[h] : T(0);
      auto rotate = [&](const T* x, const T* bias, const T* ang, T* out) {
        for (int64_t n = 0; n < N; ++n) out[n] = x[n] + bias[n];
        for (int64_t j = 0; j < S; ++j) {
          const T c = std::cos(ang[j]), s = std::sin(ang[j]), x0 = out[2 * j], x1 = out[2 * j + 1];
          out[2 * j] = x0 * c - x1 * s;
          out[2 * j + 1] = x0 * s + x1 * c;
        }
      };
      auto coef = [&](int64_t t, T& alpha, T& beta, T& gamma, T& lam) {
        lam = T(1) / (T(1) + std::exp(-a.trap[at(t)]));
        alpha = std::exp(a.adt[at(t)]);
        beta = (T(1) - lam) * a.dt[at(t)] * alpha;
        gamma = lam * a.dt[at(t)];
      };
      const T* kprev0 = a.k0 ? a.k0 + i * N : zero_n.data();
      const T* vprev0 = a.v0 ? a.v0 + i * P : zero_p.data();
      auto kprev = [&](int64_t t) { return t > 0 ? kr.data() + (t - 1) * N : kprev0; };
      auto vprev = [&](int64_t t) { return t > 0 ? a.v + at(t - 1) * P : vprev0; };
      // S_t from S_{t-1} (in place).
      auto step = [&](int64_t t, T* Sx) {
        T alpha, beta, gamma, lam;
        coef(t, alpha, beta, gamma, lam);
        const T *kp = kprev(t), *vp = vprev(t), *kc = kr.data() + t * N, *vc = a.v + at(t) * P;
        for (int64_t p = 0; p < P; ++p)
          for (int64_t n = 0; n < N; ++n)
            Sx[p * N + n] = alpha * Sx[p * N + n] + beta * vp[p] * kp[n] + gamma * vc[p] * kc[n];
      };
      // Forward replay: angles, rotated q/k, segment checkpoints.
      for (int64_t j = 0; j < S; ++j) theta[size_t(j)] = a.th0 ? a.th0[i * S + j] : T(0);
      for (int64_t j = 0; j < PN; ++j) St[size_t(j)] = a.S0 ? a.S0[i * PN + j] : T(0);
      for (int64_t t = 0; t < L; ++t) {
        const int64_t bt = b * L + t;
        for (int64_t j = 0; j < S; ++j) {
          T x = theta[size_t(j)] + pi * std::tanh(a.ang[bt * S + j]) * a.dt[at(t)];
          theta[size_t(j)] = x - two_pi * std::floor(x / two_pi);
          th[size_t(t * S + j)] = theta[size_t(j)];
        }
        rotate(a.q + (bt * G + gr) * N, qb, th.data() + t * S, qr.data() + t * N);
        rotate(a.k + (bt * G + gr) * N, kb, th.data() + t * S, kr.data() + t * N);
        if (t % kSeg == 0) std::copy(St.begin(), St.end(), ck.begin() + (t / kSeg) * PN);
        step(t, St.data());
      }
      // Adjoint, segment by segment from the end.
      for (int64_t j = 0; j < PN; ++j) dS[size_t(j)] = a.dS ? a.dS[i * PN + j] : T(0);
      for (int64_t n = 0; n < N; ++n) dkc[size_t(n)] = a.dk ? a.dk[i * N + n] : T(0);
      for (int64_t p = 0; p < P; ++p) dvc[size_t(p)] = a.dv ? a.dv[i * P + p] : T(0);
      for (int64_t j = 0; j < S; ++j) dth[size_t(j)] = a.dth ? a.dth[i * S + j] : T(0);
      T dD = 0;
      for (int64_t sg = nseg - 1; sg >= 0; --sg) {
        const int64_t t0 = sg * kSeg, t1 = std::min(L, t0 + kSeg);
        std::copy(ck.begin() + sg * PN, ck.begin() + (sg + 1) * PN, St.begin());
        for (int64_t t = t0; t < t1; ++t) {
          step(t, St.data());
          std::copy(St.begin(), St.end(), seg.begin() + (t - t0) * PN);
        }
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t bt = b * L + t;
          const T* Sc = seg.data() + (t - t0) * PN;                                     // S_t
          const T* Sp = t > t0 ? seg.data() + (t - t0 - 1) * PN : ck.data() + sg * PN;  // S_{t-1}
          const T *q = qr.data() + t * N, *kc = kr.data() + t * N, *vc = a.v + at(t) * P;
          const T *kp = kprev(t), *vp = vprev(t);
          std::copy(dkc.begin(), dkc.end(), dkt.begin());
          std::copy(dvc.begin(), dvc.end(), dvt.begin());
          // Output: y = (S q̃ + D v) · silu(z).
          for (int64_t p = 0; p < P; ++p) {
            const T gy = a.dy ? a.dy[at(t) * P + p] : T(0);
            T o = Dh * vc[p];
            for (int64_t n = 0; n < N; ++n) o += Sc[p * N + n] * q[n];
            T d = gy;
            if (a.z) {
              const T zz = a.z[at(t) * P + p], sz = T(1) / (T(1) + std::exp(-zz));
              o_dz[at(t) * P + p] = gy * o * sz * (T(1) + zz * (T(1) - sz));
              d = gy * zz * sz;
            }
            dox[size_t(p)] = d;
            dD += d * vc[p];
            dvt[size_t(p)] += Dh * d;
          }
          std::fill(dqt.begin(), dqt.end(), T(0));
          for (int64_t p = 0; p < P; ++p)
            for (int64_t n = 0; n < N; ++n) {
              dqt[size_t(n)] += Sc[p * N + n] * dox[size_t(p)];
              dS[size_t(p * N + n)] += dox[size_t(p)] * q[n];
            }
          // State update S_t = α S_{t-1} + β v_{t-1} k̃_{t-1}ᵀ + γ v_t k̃_tᵀ.
          T alpha, beta, gamma, lam;
          coef(t, alpha, beta, gamma, lam);
          T da = 0, db = 0, dg = 0;
          std::fill(dkc.begin(), dkc.end(), T(0));
          std::fill(dvc.begin(), dvc.end(), T(0));
          for (int64_t p = 0; p < P; ++p) {
            T sk_c = 0, sk_p = 0;
            for (int64_t n = 0; n < N; ++n) {
              const T d = dS[size_t(p * N + n)];
              da += d * Sp[p * N + n];
              sk_c += d * kc[n];
              sk_p += d * kp[n];
              dkt[size_t(n)] += gamma * d * vc[p];
              dkc[size_t(n)] += beta * d * vp[p];
            }
            dg += sk_c * vc[p];
            db += sk_p * vp[p];
            dvt[size_t(p)] += gamma * sk_c;
            dvc[size_t(p)] = beta * sk_p;
          }
          for (int64_t j = 0; j < PN; ++j) dS[size_t(j)] *= alpha;
          const T dtv = a.dt[at(t)];
          o_dadt[at(t)] = alpha * da + beta * db;
          const T dlam = -db * dtv * alpha + dg * dtv;
          o_dtrap[at(t)] = dlam * lam * (T(1) - lam);
          T ddtv = db * (T(1) - lam) * alpha + dg * lam;
          // Un-rotate dq̃_t, dk̃_t; collect dθ_t.
          const T* tht = th.data() + t * S;
          for (int64_t j = 0; j < S; ++j) {
            const T c = std::cos(tht[j]), s = std::sin(tht[j]);
            T dtheta = 0;
            for (auto [dx, x] : {std::pair{dqt.data(), q}, std::pair{dkt.data(), kc}}) {
              const T d0 = dx[2 * j], d1 = dx[2 * j + 1];
              dtheta += -d0 * x[2 * j + 1] + d1 * x[2 * j];
              dx[2 * j] = d0 * c + d1 * s;
              dx[2 * j + 1] = -d0 * s + d1 * c;
            }
            dth[size_t(j)] += dtheta;
            const T ang = a.ang[bt * S + j], tn = std::tanh(ang);
            ddtv += dth[size_t(j)] * pi * tn;
            o_dang[(bt * H + h) * S + j] = dth[size_t(j)] * dtv * pi * (T(1) - tn * tn);
          }
          o_ddt[at(t)] = ddtv;
          for (int64_t n = 0; n < N; ++n) {
            o_dq[at(t) * N + n] = dqt[size_t(n)];
            o_dk[at(t) * N + n] = dkt[size_t(n)];
            o_dqb[i * N + n] += dqt[size_t(n)];
            o_dkb[i * N + n] += dkt[size_t(n)];
          }
          for (int64_t p = 0; p < P; ++p) o_dv[at(t) * P + p] = dvt[size_t(p)];
        }
      }
      o_dD[i] = dD;
      std::copy(dth.begin(), dth.end(), o_dth0 + i * S);
      std::copy(dS.begin(), dS.end(), o_dS0 + i * PN);
      std::copy(dkc.begin(), dkc.end(), o_dk0 + i * N);
      std::copy(dvc.begin(), dvc.end(), o_dv0 + i * P);
    }
  });

  // Reductions of the shared gradients.
  Tensor dq = Tensor::zeros({B, L, G, N}, dt), dk = Tensor::zeros({B, L, G, N}, dt);  // [B, L, G, N]
  Tensor dang = Tensor::zeros({B, L, S}, dt);                                         // [B, L, S]
  Tensor dqb = Tensor::zeros({H, N}, dt), dkb = Tensor::zeros({H, N}, dt), dD = Tensor::zeros({H}, dt);
  T *rq = dq.data<T>(), *rk = dk.data<T>(), *ra = dang.data<T>(), *rqb = dqb.data<T>(), *rkb = dkb.data<T>(),
    *rD = dD.data<T>();
  for (int64_t bt = 0; bt < B * L; ++bt)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t n = 0; n < N; ++n) {
        rq[(bt * G + h / hpg) * N + n] += o_dq[(bt * H + h) * N + n];
        rk[(bt * G + h / hpg) * N + n] += o_dk[(bt * H + h) * N + n];
      }
      for (int64_t j = 0; j < S; ++j) ra[bt * S + j] += o_dang[(bt * H + h) * S + j];
    }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t n = 0; n < N; ++n) {
        rqb[h * N + n] += o_dqb[(b * H + h) * N + n];
        rkb[h * N + n] += o_dkb[(b * H + h) * N + n];
      }
      rD[h] += o_dD[b * H + h];
    }
  auto keep = [&](size_t idx, const Tensor& grad) { return in[idx].defined() ? grad : Tensor(); };
  return {dq,   dk,          dv,           dadt,           ddt,           dtrap,         dqb,          dkb,
          dang, keep(9, dD), keep(10, dz), keep(11, dth0), keep(12, dS0), keep(13, dk0), keep(14, dv0)};
}

}  // namespace

std::vector<Tensor> mamba3_siso_backward(const std::vector<Tensor>& in, const std::vector<Tensor>& grads) {
  return dispatch_float("mamba3_siso_scan", in[2].dtype(), [&]<typename T>() { return backward_impl<T>(in, grads); });
}

}  // namespace ssm::detail
