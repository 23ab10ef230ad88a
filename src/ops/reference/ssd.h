// Reference loop for the Mamba-2 SSD scan: the sequential recurrence that the chunked kernel must
// equal up to rounding. Per batch b and head h (group g = h / (H/G)), state S [P, N]:
//   S_t = exp(A_t) S_{t-1} + x_t ⊗ B_t;  y_t = S_t C_t
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace ssm::ref {

template <typename T>
struct SSDRefArgs {
  const T* x;   // [B, L, H, P]
  const T* A;   // [B, L, H]
  const T* Bm;  // [B, L, G, N]
  const T* Cm;  // [B, L, G, N]
  const T* h0;  // [B, H, P, N] or null (zeros)
  T* y;         // [B, L, H, P]
  T* hT;        // [B, H, P, N]
  int64_t B, L, H, P, N, G;
};

template <typename T>
void ssd_ref(const SSDRefArgs<T>& a) {
  const int64_t heads_per_group = a.H / a.G, PN = a.P * a.N;
  std::vector<T> S(static_cast<size_t>(PN));  // [P, N]
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t g = h / heads_per_group;
      for (int64_t i = 0; i < PN; ++i) S[size_t(i)] = a.h0 ? a.h0[(b * a.H + h) * PN + i] : T(0);
      for (int64_t t = 0; t < a.L; ++t) {
        const T alpha = std::exp(a.A[(b * a.L + t) * a.H + h]);
        const T* xt = a.x + ((b * a.L + t) * a.H + h) * a.P;   // [P]
        const T* Bt = a.Bm + ((b * a.L + t) * a.G + g) * a.N;  // [N]
        const T* Ct = a.Cm + ((b * a.L + t) * a.G + g) * a.N;  // [N]
        T* yt = a.y + ((b * a.L + t) * a.H + h) * a.P;         // [P]
        for (int64_t p = 0; p < a.P; ++p) {
          T acc = 0;
          for (int64_t n = 0; n < a.N; ++n) {
            T& s = S[size_t(p * a.N + n)];
            s = alpha * s + xt[p] * Bt[n];
            acc += s * Ct[n];
          }
          yt[p] = acc;
        }
      }
      for (int64_t i = 0; i < PN; ++i) a.hT[(b * a.H + h) * PN + i] = S[size_t(i)];
    }
  }
}

}  // namespace ssm::ref
