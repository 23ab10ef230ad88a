// Reference loop for the Mamba-1 selective scan (token-major), the oracle of the fast kernel and the
// f64 forward. Mirrors mamba_ssm's selective_scan_ref: sequential over time, math in T.
//   Δ = delta (+ bias); if softplus: Δ = softplus(Δ) (threshold 20)
//   h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t·h_t + D u_t;  if z: y_t *= silu(z_t)
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace ssm::ref {

template <typename T>
struct SelectiveScanRefArgs {
  const T* u;      // [B, L, D]
  const T* delta;  // [B, L, D]
  const T* A;      // [D, N]
  const T* Bm;     // [B, L, G, N]
  const T* Cm;     // [B, L, G, N]
  const T* Dskip;  // [D] or null
  const T* z;      // [B, L, D] or null
  const T* dbias;  // [D] or null
  const T* h0;     // [B, D, N] or null (zeros)
  T* y;            // [B, L, D]
  T* hT;           // [B, D, N]
  int64_t B, L, D, N, G;
  bool softplus;
};

template <typename T>
void selective_scan_ref(const SelectiveScanRefArgs<T>& a) {
  const int64_t per_group = a.D / a.G;
  std::vector<T> h(static_cast<size_t>(a.N));  // [N]
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t d = 0; d < a.D; ++d) {
      const int64_t g = d / per_group;
      for (int64_t n = 0; n < a.N; ++n) h[size_t(n)] = a.h0 ? a.h0[(b * a.D + d) * a.N + n] : T(0);
      for (int64_t t = 0; t < a.L; ++t) {
        const int64_t i = (b * a.L + t) * a.D + d;             // into [B, L, D]
        const T* Bt = a.Bm + ((b * a.L + t) * a.G + g) * a.N;  // [N]
        const T* Ct = a.Cm + ((b * a.L + t) * a.G + g) * a.N;  // [N]
        T dt = a.delta[i] + (a.dbias ? a.dbias[d] : T(0));
        if (a.softplus) dt = dt > T(20) ? dt : std::log1p(std::exp(dt));
        T acc = 0;
        for (int64_t n = 0; n < a.N; ++n) {
          T& hn = h[size_t(n)];
          hn = std::exp(dt * a.A[d * a.N + n]) * hn + dt * Bt[n] * a.u[i];
          acc += Ct[n] * hn;
        }
        if (a.Dskip) acc += a.Dskip[d] * a.u[i];
        if (a.z) acc *= a.z[i] / (T(1) + std::exp(-a.z[i]));
        a.y[i] = acc;
      }
      for (int64_t n = 0; n < a.N; ++n) a.hT[(b * a.D + d) * a.N + n] = h[size_t(n)];
    }
  }
}

}  // namespace ssm::ref
