// The Mamba-3 SISO recurrence on the GPU (see mamba3.h and include/ssm/ops_mamba3.h): one warp per
// (batch, head, head channel p) walks the sequence; lane l holds the state entries n = l + 32 j of row p,
// the rotated q̃, k̃ and the previous token's k̃ for those n, and its own copy of the cumulative angles
// of its rotary pairs (both lanes of a pair (2i, 2i+1) are neighbours and exchange values by shuffle).
// Per token: α S + β v_{t-1} k̃_{t-1} + γ v_t k̃_t, read out by q̃, plus D v, times silu(z).
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/mamba3.h"

namespace ssm::cuda {
namespace {

constexpr const char* kOp = "mamba3_siso_scan";

template <typename T, int NPL>
__global__ void __launch_bounds__(128) mamba3_kernel(Mamba3FwdArgs a) {
  constexpr float kPi = 3.14159265358979323846f, kTwoPi = 2 * kPi;
  const int lane = threadIdx.x & 31;
  const int64_t p = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5), h = blockIdx.y, b = blockIdx.z;
  if (p >= a.P) return;
  const int64_t L = a.L, H = a.H, P = a.P, N = a.N, G = a.G, S = a.S, g = h / (H / G), bh = b * H + h;
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* z = static_cast<const T*>(a.z);
  T* y = static_cast<T*>(a.y);
  float sv[NPL], kp[NPL], th[NPL], qb[NPL], kb[NPL];
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int64_t n = lane + 32 * j;
    const bool in = n < N, rot = n < 2 * S;
    sv[j] = (in && a.ssm0) ? a.ssm0[(bh * P + p) * N + n] : 0.f;
    kp[j] = (in && a.k0) ? a.k0[bh * N + n] : 0.f;
    th[j] = (rot && a.angle0) ? a.angle0[bh * S + n / 2] : 0.f;
    qb[j] = in ? a.q_bias[h * N + n] : 0.f;
    kb[j] = in ? a.k_bias[h * N + n] : 0.f;
  }
  float vp = a.v0 ? a.v0[bh * P + p] : 0.f;
  const float Dh = a.D ? a.D[h] : 0.f;
  for (int64_t t = 0; t < L; ++t) {
    const int64_t bt = b * L + t, bth = bt * H + h;
    const float dt = a.dt[bth];
    const float lam = 1.f / (1.f + expf(-a.trap[bth]));
    const float alpha = expf(a.adt[bth]), beta = (1.f - lam) * dt * alpha, gamma = lam * dt;
    const float vt = ld(v[bth * P + p]);
    const T* qt = q + (bt * G + g) * N;
    const T* kt = k + (bt * G + g) * N;
    float acc = 0.f;
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int64_t n = lane + 32 * j;
      const bool in = n < N, rot = n < 2 * S;
      float qv = in ? ld(qt[n]) + qb[j] : 0.f, kv = in ? ld(kt[n]) + kb[j] : 0.f;
      if (rot) {
        const float x = th[j] + kPi * tanhf(a.angles[bt * S + n / 2]) * dt;
        th[j] = x - kTwoPi * floorf(x / kTwoPi);
      }
      float c, s;
      sincosf(th[j], &s, &c);
      const float qo = __shfl_xor_sync(0xffffffffu, qv, 1), ko = __shfl_xor_sync(0xffffffffu, kv, 1);
      if (rot) {  // even n: (x0 c - x1 s); odd n: (x0 s + x1 c) with x0 the partner
        if ((n & 1) == 0) {
          qv = qv * c - qo * s;
          kv = kv * c - ko * s;
        } else {
          qv = qo * s + qv * c;
          kv = ko * s + kv * c;
        }
      }
      if (in) {
        sv[j] = alpha * sv[j] + beta * vp * kp[j] + gamma * vt * kv;
        acc += sv[j] * qv;
      }
      kp[j] = kv;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) {
      float out = acc + Dh * vt;
      if (z) {
        const float zz = ld(z[bth * P + p]);
        out *= zz / (1.f + expf(-zz));
      }
      y[bth * P + p] = st<T>(out);
    }
    vp = vt;
  }
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int64_t n = lane + 32 * j;
    if (n >= N) continue;
    a.ssm_out[(bh * P + p) * N + n] = sv[j];
    if (p == 0) {
      a.k_out[bh * N + n] = kp[j];
      if (n < 2 * S && (n & 1) == 0) a.angle_out[bh * S + n / 2] = th[j];
    }
  }
  if (lane == 0) a.v_out[bh * P + p] = vp;
}

template <typename T>
void launch(const Mamba3FwdArgs& a, cudaStream_t s) {
  const dim3 grid(unsigned((a.P + 3) / 4), unsigned(a.H), unsigned(a.B));
  if (a.N <= 32)
    mamba3_kernel<T, 1><<<grid, 128, 0, s>>>(a);
  else if (a.N <= 64)
    mamba3_kernel<T, 2><<<grid, 128, 0, s>>>(a);
  else if (a.N <= 128)
    mamba3_kernel<T, 4><<<grid, 128, 0, s>>>(a);
  else if (a.N <= 256)
    mamba3_kernel<T, 8><<<grid, 128, 0, s>>>(a);
  else
    fail(kOp, "state size N=" + std::to_string(a.N) + " is above the GPU kernel's limit of 256");
  check_launch(kOp);
}

}  // namespace

void mamba3_siso_fwd(const Mamba3FwdArgs& a, void* stream) {
  dispatch_act(kOp, a.act, [&](auto t) { launch<decltype(t)>(a, static_cast<cudaStream_t>(stream)); });
}

}  // namespace ssm::cuda
