// Mamba-2 SSD scan: argument checks, the chunked f32 forward (intra-chunk quadratic part and chunk
// states as GEMMs, inter-chunk state passing), the sequential-recurrence backward kernel, and the
// autograd record. For a chunk of Q steps of head h, with Λ_l = Σ_{i<=l} A_i inside the chunk:
//   Y[l]  = Σ_{s<=l} (C_l·B_s) e^{Λ_l-Λ_s} x_s  +  e^{Λ_l} S_in C_l
//   S_out = e^{Λ_last} S_in + Σ_s e^{Λ_last-Λ_s} x_s ⊗ B_s
// which is the recurrence S_t = e^{A_t} S_{t-1} + x_t ⊗ B_t, y_t = S_t C_t regrouped.
#include "ops/reference/ssd.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <tuple>
#include <vector>

#include "ops/op_util.h"
#include "ops/scan_common.h"
#include "ops/ssd_cuda.h"

namespace ssm {
namespace {

using detail::scan::splat;
using detail::scan::v8f;
constexpr const char* kOp = "ssd_scan";
// Chunks longer than this only cost memory ([Q, Q] scratch per head) and time (the quadratic part);
// the result does not depend on the chunk size beyond rounding.
constexpr int64_t kMaxChunk = 1024;

template <typename S>
struct SSDParams {
  const S* x;   // [B, L, H, P]
  const S* A;   // [B, L, H]
  const S* Bm;  // [B, L, G, N]
  const S* Cm;  // [B, L, G, N]
  const S* h0;  // [B, H, P, N] or null
  int64_t B, L, H, P, N, G;
};

template <typename S>
SSDParams<S> make_params(const std::vector<Tensor>& in) {
  // in: x, A, B, C, initial_state (contiguous, dtype S; the last may be undefined)
  SSDParams<S> p{};
  p.x = in[0].data<S>();
  p.A = in[1].data<S>();
  p.Bm = in[2].data<S>();
  p.Cm = in[3].data<S>();
  p.h0 = in[4].defined() ? in[4].data<S>() : nullptr;
  p.B = in[0].size(0);
  p.L = in[0].size(1);
  p.H = in[0].size(2);
  p.P = in[0].size(3);
  p.N = in[2].size(3);
  p.G = in[2].size(2);
  return p;
}

typedef double v8d __attribute__((vector_size(64)));

// e^{hi - lo[s]} for 8 consecutive s, the difference taken in double (Λ can be large while the
// difference is small).
inline v8f exp_diff8(double hi, const double* lo) {
  v8d l;
  std::memcpy(&l, lo, sizeof(l));
  v8d d = v8d{hi, hi, hi, hi, hi, hi, hi, hi} - l;
  return detail::scan::vexp(__builtin_convertvector(d, v8f));
}

// C[M, Nc] = beta C + A B in f32 with A(i, k) = A[i*ars + k*acs] (any strides) and B, C row-major.
// `lower`: A is lower triangular (A(i, k) = 0 for k > i), so rows stop at their diagonal. Register
// blocks of 4 rows x 16 columns; K is at most a chunk (the B panel stays in L1). Own kernel instead
// of BLAS: these products are small and run inside our parallel_for, where a threaded BLAS would
// oversubscribe the cores.
void gemm_f32(int64_t M, int64_t Nc, int64_t K, const float* A, int64_t ars, int64_t acs, const float* B, int64_t ldb,
              float beta, float* C, int64_t ldc, bool lower) {
  auto ld8 = [](const float* p) {
    v8f v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  auto st8 = [](float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); };
  int64_t j0 = 0;
  for (; j0 + 16 <= Nc; j0 += 16) {
    int64_t i0 = 0;
    for (; i0 + 4 <= M; i0 += 4) {
      v8f acc[4][2];
      for (int r = 0; r < 4; ++r) acc[r][0] = acc[r][1] = splat(0.0f);
      const int64_t kend = lower ? std::min(K, i0 + 4) : K;
      for (int64_t k = 0; k < kend; ++k) {
        const v8f b0 = ld8(B + k * ldb + j0), b1 = ld8(B + k * ldb + j0 + 8);
        for (int r = 0; r < 4; ++r) {
          const v8f a = splat(A[(i0 + r) * ars + k * acs]);
          acc[r][0] += a * b0;
          acc[r][1] += a * b1;
        }
      }
      for (int r = 0; r < 4; ++r) {
        float* c = C + (i0 + r) * ldc + j0;
        if (beta != 0.0f) {
          acc[r][0] += splat(beta) * ld8(c);
          acc[r][1] += splat(beta) * ld8(c + 8);
        }
        st8(c, acc[r][0]);
        st8(c + 8, acc[r][1]);
      }
    }
    for (; i0 < M; ++i0) {
      v8f a0 = splat(0.0f), a1 = splat(0.0f);
      const int64_t kend = lower ? std::min(K, i0 + 1) : K;
      for (int64_t k = 0; k < kend; ++k) {
        const v8f a = splat(A[i0 * ars + k * acs]);
        a0 += a * ld8(B + k * ldb + j0);
        a1 += a * ld8(B + k * ldb + j0 + 8);
      }
      float* c = C + i0 * ldc + j0;
      if (beta != 0.0f) {
        a0 += splat(beta) * ld8(c);
        a1 += splat(beta) * ld8(c + 8);
      }
      st8(c, a0);
      st8(c + 8, a1);
    }
  }
  for (int64_t i = 0; i < M; ++i) {  // remaining columns, scalar
    const int64_t kend = lower ? std::min(K, i + 1) : K;
    for (int64_t j = j0; j < Nc; ++j) {
      float acc = 0;
      for (int64_t k = 0; k < kend; ++k) acc += A[i * ars + k * acs] * B[k * ldb + j];
      float* c = C + i * ldc + j;
      *c = beta != 0.0f ? acc + beta * *c : acc;
    }
  }
}

// Chunked forward for f32. y [B, L, H, P], hT [B, H, P, N] (also the running state).
void ssd_chunked_f32(const SSDParams<float>& p, int64_t Q, float* y, float* hT) {
  const int64_t B = p.B, L = p.L, H = p.H, P = p.P, N = p.N, G = p.G, PN = P * N;
  const int64_t heads_per_group = H / G, nch = (L + Q - 1) / Q;
  for (int64_t i = 0; i < B * H * PN; ++i) hT[i] = p.h0 ? p.h0[i] : 0.0f;
  std::vector<float> CB(static_cast<size_t>(B * G * Q * Q));  // [B, G, Q, Q] for the current chunk
  for (int64_t c = 0; c < nch; ++c) {
    const int64_t t0 = c * Q, Qc = std::min(Q, L - t0);
    // CB[b, g, l, s] = C_l · B_s.
    parallel_for(B * G, 1, [&](int64_t i0, int64_t i1) {
      std::vector<float> Bt(static_cast<size_t>(N * Qc));  // [N, Qc] transposed B of the chunk
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / G, g = i % G;
        const float* Cc = p.Cm + ((b * L + t0) * G + g) * N;  // [Qc, N], row stride G*N
        const float* Bc = p.Bm + ((b * L + t0) * G + g) * N;
        for (int64_t s = 0; s < Qc; ++s)
          for (int64_t n = 0; n < N; ++n) Bt[size_t(n * Qc + s)] = Bc[s * G * N + n];
        gemm_f32(Qc, Qc, N, Cc, G * N, 1, Bt.data(), Qc, 0.0f, CB.data() + size_t(i * Q * Q), Q, false);
      }
    });
    parallel_for(B * H, 1, [&](int64_t i0, int64_t i1) {
      std::vector<double> lam(static_cast<size_t>(Q));                                    // [Q] cumulative log decay
      std::vector<float> M(static_cast<size_t>(Q * Q));                                   // [Q, Q]
      std::vector<float> Cs(static_cast<size_t>(Q * N)), Bs(static_cast<size_t>(Q * N));  // [Q, N] each
      std::vector<float> St(static_cast<size_t>(N * P));                                  // [N, P] state transposed
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t b = i / H, h = i % H, g = h / heads_per_group;
        double acc = 0;
        for (int64_t l = 0; l < Qc; ++l) lam[size_t(l)] = acc += double(p.A[(b * L + t0 + l) * H + h]);
        const double last = lam[size_t(Qc - 1)];
        const float* cb = CB.data() + size_t((b * G + g) * Q * Q);
        // M[l, s] = CB[l, s] e^{Λ_l - Λ_s} for s <= l, else 0.
        for (int64_t l = 0; l < Qc; ++l) {
          float* Mr = M.data() + l * Qc;
          const float* cbr = cb + l * Q;
          int64_t s = 0;
          for (; s + 8 <= l + 1; s += 8) {
            v8f cv;
            std::memcpy(&cv, cbr + s, sizeof(cv));
            v8f mv = cv * exp_diff8(lam[size_t(l)], lam.data() + s);
            std::memcpy(Mr + s, &mv, sizeof(mv));
          }
          for (; s <= l; ++s) Mr[s] = cbr[s] * float(std::exp(lam[size_t(l)] - lam[size_t(s)]));
          for (; s < Qc; ++s) Mr[s] = 0.0f;
        }
        // Cs = diag(e^{Λ_l}) C,  Bs = diag(e^{Λ_last - Λ_s}) B.
        const float* Cc = p.Cm + ((b * L + t0) * G + g) * N;
        const float* Bc = p.Bm + ((b * L + t0) * G + g) * N;
        for (int64_t l = 0; l < Qc; ++l) {
          const float ec = float(std::exp(lam[size_t(l)])), eb = float(std::exp(last - lam[size_t(l)]));
          for (int64_t n = 0; n < N; ++n) {
            Cs[size_t(l * N + n)] = ec * Cc[l * G * N + n];
            Bs[size_t(l * N + n)] = eb * Bc[l * G * N + n];
          }
        }
        const float* Xc = p.x + ((b * L + t0) * H + h) * P;  // [Qc, P], row stride H*P
        float* Yc = y + ((b * L + t0) * H + h) * P;
        float* S = hT + (b * H + h) * PN;  // [P, N] state entering the chunk
        for (int64_t q = 0; q < P; ++q)
          for (int64_t n = 0; n < N; ++n) St[size_t(n * P + q)] = S[q * N + n];
        gemm_f32(Qc, P, Qc, M.data(), Qc, 1, Xc, H * P, 0.0f, Yc, H * P, true);              // Y = M X
        gemm_f32(Qc, P, N, Cs.data(), N, 1, St.data(), P, 1.0f, Yc, H * P, false);           // Y += Cs Sᵀ
        gemm_f32(P, N, Qc, Xc, 1, H * P, Bs.data(), N, float(std::exp(last)), S, N, false);  // S = e S + Xᵀ Bs
      }
    });
  }
}

// One row q of the adjoint step (row q of λ, S_t, S_{t-1}): λ += gy C; dC += gy S_t; dB += x_q λ;
// returns λ·B (dx_q) and λ·S_{t-1} (its share of dA / e^{A_t}); then λ ← e^{A_t} λ.
template <typename S>
inline void adjoint_row(S* lr, const S* Ct, const S* Bt, const S* st, const S* sp, S* dC, S* dB, S gy, S xq, S alpha,
                        int64_t N, S& dx, S& dA) {
  dx = dA = 0;
  for (int64_t n = 0; n < N; ++n) {
    const S l = lr[n] + gy * Ct[n];
    dC[n] += gy * st[n];
    dB[n] += l * xq;
    dx += l * Bt[n];
    dA += l * sp[n];
    lr[n] = l * alpha;
  }
}
// The f32 form, 8 lanes at a time (the generic loop's sums do not vectorise without reassociation).
inline void adjoint_row(float* lr, const float* Ct, const float* Bt, const float* st, const float* sp, float* dC,
                        float* dB, float gy, float xq, float alpha, int64_t N, float& dx, float& dA) {
  auto ld = [](const float* p) {
    v8f v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  auto sto = [](float* p, v8f v) { std::memcpy(p, &v, sizeof(v)); };
  const v8f g8 = splat(gy), x8 = splat(xq), a8 = splat(alpha);
  v8f px = splat(0.0f), pa = splat(0.0f);
  int64_t n = 0;
  for (; n + 8 <= N; n += 8) {
    const v8f l = ld(lr + n) + g8 * ld(Ct + n);
    sto(dC + n, ld(dC + n) + g8 * ld(st + n));
    sto(dB + n, ld(dB + n) + l * x8);
    px += l * ld(Bt + n);
    pa += l * ld(sp + n);
    sto(lr + n, l * a8);
  }
  dx = detail::scan::hsum(px);
  dA = detail::scan::hsum(pa);
  for (; n < N; ++n) {
    const float l = lr[n] + gy * Ct[n];
    dC[n] += gy * st[n];
    dB[n] += l * xq;
    dx += l * Bt[n];
    dA += l * sp[n];
    lr[n] = l * alpha;
  }
}

// next[q, n] = alpha prev[q, n] + x[q] B[n] (next may equal prev).
template <typename S>
inline void state_step(const S* prev, S* next, const S* __restrict x, const S* __restrict Bt, S alpha, int64_t P,
                       int64_t N) {
  for (int64_t q = 0; q < P; ++q) {
    const S* pr = prev + q * N;
    S* nx = next + q * N;
    const S xq = x[q];
    for (int64_t n = 0; n < N; ++n) nx[n] = alpha * pr[n] + xq * Bt[n];
  }
}

template <typename S>
struct SSDGrads {
  S* dx;       // [B, L, H, P]
  S* dA;       // [B, L, H]
  S* dh0;      // [B, H, P, N]
  S *dB, *dC;  // [slots, B, L, G, N]
};

// Backward of the sequential recurrence for one (batch, head): states are recomputed from
// checkpoints every K steps; λ = dL/dS_t runs backwards: λ += dy_t ⊗ C_t, then λ ← e^{A_t} λ.
template <typename S>
void ssd_bwd_head(const SSDParams<S>& p, const S* dy, const S* dhT, const SSDGrads<S>& gr, int64_t slot, int64_t item) {
  const int64_t L = p.L, H = p.H, P = p.P, N = p.N, G = p.G, PN = P * N;
  const int64_t b = item / H, h = item % H, g = h / (H / G);
  // K ≈ sqrt(L) balances the checkpoints (L/K states) against one chunk's recomputed states (K+1).
  const int64_t K = std::max<int64_t>(1, int64_t(std::ceil(std::sqrt(double(L))))), nck = (L + K - 1) / K;
  auto ck = std::make_unique_for_overwrite<S[]>(size_t(nck * PN));        // [nck, P, N]
  auto st = std::make_unique_for_overwrite<S[]>(size_t((K + 1) * PN));    // [K+1, P, N]
  std::vector<S> lam(static_cast<size_t>(PN));                            // [P, N]
  std::vector<S> dC(static_cast<size_t>(N)), dB(static_cast<size_t>(N));  // [N]
  S* dBs = gr.dB + slot * p.B * L * G * N;
  S* dCs = gr.dC + slot * p.B * L * G * N;
  auto step = [&](const S* prev, S* next, int64_t t) {  // next = e^{A_t} prev + x_t ⊗ B_t
    state_step(prev, next, p.x + ((b * L + t) * H + h) * P, p.Bm + ((b * L + t) * G + g) * N,
               S(std::exp(p.A[(b * L + t) * H + h])), P, N);
  };
  // Pass 1: checkpoints ck[c] = state before step c*K.
  S* cur = st.get();
  for (int64_t i = 0; i < PN; ++i) cur[i] = p.h0 ? p.h0[(b * H + h) * PN + i] : S(0);
  for (int64_t t = 0; t < L; ++t) {
    if (t % K == 0) std::copy(cur, cur + PN, ck.get() + (t / K) * PN);
    step(cur, cur, t);
  }
  // Pass 2: reverse.
  for (int64_t i = 0; i < PN; ++i) lam[size_t(i)] = dhT ? dhT[(b * H + h) * PN + i] : S(0);
  for (int64_t c = nck - 1; c >= 0; --c) {
    const int64_t t0 = c * K, t1 = std::min(L, t0 + K);
    std::copy(ck.get() + c * PN, ck.get() + (c + 1) * PN, st.get());
    for (int64_t t = t0; t < t1; ++t) step(st.get() + (t - t0) * PN, st.get() + (t - t0 + 1) * PN, t);
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const S alpha = std::exp(p.A[(b * L + t) * H + h]);
      const S* xt = p.x + ((b * L + t) * H + h) * P;   // [P]
      const S* Bt = p.Bm + ((b * L + t) * G + g) * N;  // [N]
      const S* Ct = p.Cm + ((b * L + t) * G + g) * N;  // [N]
      const S* dyt = dy ? dy + ((b * L + t) * H + h) * P : nullptr;
      const S* Sprev = st.get() + (t - t0) * PN;  // S_{t-1}
      const S* Scur = Sprev + PN;                 // S_t
      S* dxt = gr.dx + ((b * L + t) * H + h) * P;
      std::fill(dC.begin(), dC.end(), S(0));
      std::fill(dB.begin(), dB.end(), S(0));
      S dA = 0;
      for (int64_t q = 0; q < P; ++q) {
        S dxq, dAq;
        adjoint_row(lam.data() + q * N, Ct, Bt, Scur + q * N, Sprev + q * N, dC.data(), dB.data(), dyt ? dyt[q] : S(0),
                    xt[q], alpha, N, dxq, dAq);
        dxt[q] = dxq;
        dA += dAq;
      }
      gr.dA[(b * L + t) * H + h] = alpha * dA;
      S* dBt = dBs + ((b * L + t) * G + g) * N;
      S* dCt = dCs + ((b * L + t) * G + g) * N;
      for (int64_t n = 0; n < N; ++n) {
        dBt[n] += dB[size_t(n)];
        dCt[n] += dC[size_t(n)];
      }
    }
  }
  std::copy(lam.begin(), lam.end(), gr.dh0 + (b * H + h) * PN);
}

template <typename S>
std::vector<Tensor> ssd_backward(const std::vector<Tensor>& in, const Tensor& dy_in, const Tensor& dhT_in) {
  const SSDParams<S> p = make_params<S>(in);
  const DType dt = in[0].dtype();
  Tensor dy = dy_in.defined() ? dy_in.contiguous() : Tensor();
  Tensor dhT = dhT_in.defined() ? dhT_in.contiguous() : Tensor();
  Tensor dx = Tensor::empty(in[0].shape(), dt);          // [B, L, H, P]
  Tensor dA = Tensor::empty(in[1].shape(), dt);          // [B, L, H]
  Tensor dh0 = Tensor::empty({p.B, p.H, p.P, p.N}, dt);  // [B, H, P, N]
  const int64_t items = p.B * p.H, slots = detail::scan::slot_count(items), m = p.B * p.L * p.G * p.N;
  Tensor dBs = Tensor::zeros({slots, p.B, p.L, p.G, p.N}, dt), dCs = Tensor::zeros({slots, p.B, p.L, p.G, p.N}, dt);
  SSDGrads<S> gr{dx.data<S>(), dA.data<S>(), dh0.data<S>(), dBs.data<S>(), dCs.data<S>()};
  const S* dyp = dy.defined() ? dy.data<S>() : nullptr;
  const S* dhp = dhT.defined() ? dhT.data<S>() : nullptr;
  detail::scan::run_slots(items, [&](int64_t slot, int64_t item) { ssd_bwd_head<S>(p, dyp, dhp, gr, slot, item); });
  auto reduce_slots = [&](const Tensor& acc) {  // [slots, B, L, G, N] -> [B, L, G, N]
    Tensor out = Tensor::empty(in[2].shape(), dt);
    const S* a = acc.data<S>();
    S* o = out.data<S>();
    for (int64_t i = 0; i < m; ++i) {
      S s = 0;
      for (int64_t k = 0; k < slots; ++k) s += a[k * m + i];
      o[i] = s;
    }
    return out;
  };
  return {dx, dA, reduce_slots(dBs), reduce_slots(dCs), in[4].defined() ? dh0 : Tensor()};
}

void check_args(const SSDArgs& a) {
  using namespace detail;
  check_defined(kOp, a.x, "x");
  const bool gpu = a.x.device() == Device::cuda;
  if (gpu)
    SSM_CHECK(a.x.dtype() == DType::f32 || a.x.dtype() == DType::bf16 || a.x.dtype() == DType::f16, kOp,
              std::string("x on the GPU must be f32, bf16 or f16, got ") + dtype_name(a.x.dtype()));
  else
    check_float(kOp, a.x, "x");
  check_dim(kOp, a.x, 4, "x");
  const int64_t Bsz = a.x.size(0), L = a.x.size(1), H = a.x.size(2), P = a.x.size(3);
  SSM_CHECK(Bsz >= 1 && L >= 1 && H >= 1 && P >= 1, kOp, "x must be non-empty, got shape " + shape_str(a.x.shape()));
  check_defined(kOp, a.A, "A");
  check_shape(kOp, a.A, {Bsz, L, H}, "A");
  check_defined(kOp, a.B, "B");
  check_defined(kOp, a.C, "C");
  check_dim(kOp, a.B, 4, "B");
  const int64_t G = a.B.size(2), N = a.B.size(3);
  SSM_CHECK(G >= 1 && H % G == 0, kOp,
            "B has " + std::to_string(G) + " groups but H=" + std::to_string(H) + " heads is not divisible by " +
                std::to_string(G));
  SSM_CHECK(N >= 1, kOp, "B has state size 0");
  check_shape(kOp, a.B, {Bsz, L, G, N}, "B");
  check_shape(kOp, a.C, {Bsz, L, G, N}, "C");
  if (a.initial_state.defined()) check_shape(kOp, a.initial_state, {Bsz, H, P, N}, "initial_state");
  SSM_CHECK(a.chunk_size >= 1, kOp, "chunk_size must be >= 1, got " + std::to_string(a.chunk_size));
  // On the CPU every tensor has x's dtype; on the GPU A and initial_state may also be f32 (the decays
  // and the state are fp32 there).
  const std::tuple<const Tensor*, const char*, bool> all[] = {
      {&a.A, "A", true}, {&a.B, "B", false}, {&a.C, "C", false}, {&a.initial_state, "initial_state", true}};
  for (const auto& [t, name, f32_ok] : all) {
    if (!t->defined()) continue;
    SSM_CHECK(t->device() == a.x.device(), kOp,
              std::string(name) + " is on " + device_name(t->device()) + " but x is on " + device_name(a.x.device()));
    if (!(gpu && f32_ok && t->dtype() == DType::f32)) check_same_dtype(kOp, a.x, "x", *t, name);
  }
}

}  // namespace

ScanOut ssd_scan(const SSDArgs& a) {
  check_args(a);
  if (a.x.device() == Device::cuda) return detail::ssd_scan_cuda(a);
  auto cont = [](const Tensor& t) {  // contiguous copy recording no history (this op records its own)
    autograd::NoGradGuard ng;
    return t.defined() ? t.contiguous() : Tensor();
  };
  std::vector<Tensor> in = {cont(a.x), cont(a.A), cont(a.B), cont(a.C), cont(a.initial_state)};  // contiguous
  const std::vector<Tensor> orig = {a.x, a.A, a.B, a.C, a.initial_state};
  const DType dt = a.x.dtype();
  const int64_t Bsz = a.x.size(0), L = a.x.size(1), H = a.x.size(2), P = a.x.size(3), N = a.B.size(3);
  Tensor y = Tensor::empty({Bsz, L, H, P}, dt);   // [B, L, H, P]
  Tensor hT = Tensor::empty({Bsz, H, P, N}, dt);  // [B, H, P, N]
  if (detail::use_fast(dt)) {
    ssd_chunked_f32(make_params<float>(in), std::min({a.chunk_size, L, kMaxChunk}), y.data<float>(), hT.data<float>());
  } else {
    detail::dispatch_float(kOp, dt, [&]<typename S>() {
      const SSDParams<S> p = make_params<S>(in);
      ref::ssd_ref(
          ref::SSDRefArgs<S>{p.x, p.A, p.Bm, p.Cm, p.h0, y.data<S>(), hT.data<S>(), p.B, p.L, p.H, p.P, p.N, p.G});
    });
  }
  autograd::record(kOp, orig, {&y, &hT}, [in, dt](const std::vector<Tensor>& g) {
    return detail::dispatch_float(kOp, dt, [&]<typename S>() { return ssd_backward<S>(in, g[0], g[1]); });
  });
  return {y, hT};
}

}  // namespace ssm
