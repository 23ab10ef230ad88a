// Reference loop for the Mamba-3 SISO recurrence (the test oracle): one token at a time, exactly the
// formulas of include/ssm/ops_mamba3.h, every quantity recomputed from the inputs at each step.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

namespace ssm::ref {

template <typename T>
struct Mamba3RefArgs {
  const T* q;       // [B, L, G, N]
  const T* k;       // [B, L, G, N]
  const T* v;       // [B, L, H, P]
  const T* adt;     // [B, L, H]
  const T* dt;      // [B, L, H]
  const T* trap;    // [B, L, H]
  const T* q_bias;  // [H, N]
  const T* k_bias;  // [H, N]
  const T* angles;  // [B, L, S]
  const T* D;       // [H] or null
  const T* z;       // [B, L, H, P] or null
  const T* angle0;  // [B, H, S] or null (zeros)
  const T* ssm0;    // [B, H, P, N] or null
  const T* k0;      // [B, H, N] or null
  const T* v0;      // [B, H, P] or null
  T* y;             // [B, L, H, P]
  T* angle_out;     // [B, H, S]
  T* ssm_out;       // [B, H, P, N]
  T* k_out;         // [B, H, N]
  T* v_out;         // [B, H, P]
  int64_t B, L, H, P, N, G, S;
};

template <typename T>
void mamba3_siso_ref(const Mamba3RefArgs<T>& a) {
  const T pi = T(3.14159265358979323846), two_pi = 2 * pi;
  const int64_t hpg = a.H / a.G, P = a.P, N = a.N, S = a.S;
  const size_t PN = static_cast<size_t>(P * N), Sz = static_cast<size_t>(S), Nz = static_cast<size_t>(N),
               Pz = static_cast<size_t>(P);
  std::vector<T> St(PN), th(Sz), kp(Nz), vp(Pz), qr(Nz), kr(Nz);  // [P, N], [S], [N], [P], [N], [N]
  for (int64_t b = 0; b < a.B; ++b) {
    for (int64_t h = 0; h < a.H; ++h) {
      const int64_t g = h / hpg, bh = b * a.H + h;
      for (int64_t i = 0; i < P * N; ++i) St[size_t(i)] = a.ssm0 ? a.ssm0[bh * P * N + i] : T(0);
      for (int64_t i = 0; i < S; ++i) th[size_t(i)] = a.angle0 ? a.angle0[bh * S + i] : T(0);
      for (int64_t n = 0; n < N; ++n) kp[size_t(n)] = a.k0 ? a.k0[bh * N + n] : T(0);
      for (int64_t p = 0; p < P; ++p) vp[size_t(p)] = a.v0 ? a.v0[bh * P + p] : T(0);
      for (int64_t t = 0; t < a.L; ++t) {
        const int64_t bt = b * a.L + t, bth = bt * a.H + h;
        const T dt = a.dt[bth];
        for (int64_t i = 0; i < S; ++i) {
          T x = th[size_t(i)] + pi * std::tanh(a.angles[bt * S + i]) * dt;
          th[size_t(i)] = x - two_pi * std::floor(x / two_pi);
        }
        for (int64_t n = 0; n < N; ++n) {
          qr[size_t(n)] = a.q[(bt * a.G + g) * N + n] + a.q_bias[h * N + n];
          kr[size_t(n)] = a.k[(bt * a.G + g) * N + n] + a.k_bias[h * N + n];
        }
        for (int64_t i = 0; i < S; ++i) {
          const T c = std::cos(th[size_t(i)]), s = std::sin(th[size_t(i)]);
          const T q0 = qr[size_t(2 * i)], q1 = qr[size_t(2 * i + 1)];
          const T k0 = kr[size_t(2 * i)], k1 = kr[size_t(2 * i + 1)];
          qr[size_t(2 * i)] = q0 * c - q1 * s;
          qr[size_t(2 * i + 1)] = q0 * s + q1 * c;
          kr[size_t(2 * i)] = k0 * c - k1 * s;
          kr[size_t(2 * i + 1)] = k0 * s + k1 * c;
        }
        const T lam = T(1) / (T(1) + std::exp(-a.trap[bth]));
        const T alpha = std::exp(a.adt[bth]), beta = (T(1) - lam) * dt * alpha, gamma = lam * dt;
        const T* vt = a.v + bth * P;  // [P]
        T* yt = a.y + bth * P;        // [P]
        for (int64_t p = 0; p < P; ++p) {
          T acc = 0;
          for (int64_t n = 0; n < N; ++n) {
            T& s = St[size_t(p * N + n)];
            s = alpha * s + beta * vp[size_t(p)] * kp[size_t(n)] + gamma * vt[p] * kr[size_t(n)];
            acc += s * qr[size_t(n)];
          }
          T out = acc + (a.D ? a.D[h] : T(0)) * vt[p];
          if (a.z) {
            const T zz = a.z[bth * P + p];
            out *= zz / (T(1) + std::exp(-zz));
          }
          yt[p] = out;
        }
        for (int64_t n = 0; n < N; ++n) kp[size_t(n)] = kr[size_t(n)];
        for (int64_t p = 0; p < P; ++p) vp[size_t(p)] = vt[p];
      }
      for (int64_t i = 0; i < P * N; ++i) a.ssm_out[bh * P * N + i] = St[size_t(i)];
      for (int64_t i = 0; i < S; ++i) a.angle_out[bh * S + i] = th[size_t(i)];
      for (int64_t n = 0; n < N; ++n) a.k_out[bh * N + n] = kp[size_t(n)];
      for (int64_t p = 0; p < P; ++p) a.v_out[bh * P + p] = vp[size_t(p)];
    }
  }
}

}  // namespace ssm::ref
