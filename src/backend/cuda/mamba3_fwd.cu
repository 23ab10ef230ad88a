// The Mamba-3 SISO recurrence on the GPU, forward (the formulas of include/ssm/ops_mamba3.h). One
// block per (head, sequence) walks the tokens in order. The state S [P, N] lives in the ssm_out
// buffer (each element read and written by one thread, so it stays in L1/L2); a warp owns one row p
// at a time, its lanes the columns n, n + 32, ..., and sums S q̃ by shuffles. All math in fp32 with
// the accurate libm functions, as the CPU op.
#include "backend/cuda/common.cuh"
#include "backend/cuda/mamba3.h"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;

template <typename T>
__global__ void __launch_bounds__(kThreads) mamba3_fwd_kernel(Mamba3FwdArgs a) {
  const int64_t h = blockIdx.x, b = blockIdx.y, H = a.H, P = a.P, N = a.N, S = a.S, G = a.G;
  const int64_t g = h / (H / G), bh = b * H + h;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  extern __shared__ float sm[];
  float* th = sm;        // [S] cumulative angles
  float* qr = th + S;    // [N] q̃_t
  float* kr = qr + N;    // [N] k̃_t
  float* kp = kr + N;    // [N] k̃_{t-1}
  float* vt = kp + N;    // [P] v_t
  float* vp = vt + P;    // [P] v_{t-1}
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);
  const T* v = static_cast<const T*>(a.v);
  const T* z = static_cast<const T*>(a.z);
  T* y = static_cast<T*>(a.y);
  float* St = a.ssm_out + bh * P * N;
  for (int64_t i = tid; i < P * N; i += kThreads) St[i] = a.ssm0 ? a.ssm0[bh * P * N + i] : 0.f;
  for (int64_t i = tid; i < S; i += kThreads) th[i] = a.angle0 ? a.angle0[bh * S + i] : 0.f;
  for (int64_t n = tid; n < N; n += kThreads) kp[n] = a.k0 ? a.k0[bh * N + n] : 0.f;
  for (int64_t p = tid; p < P; p += kThreads) vp[p] = a.v0 ? a.v0[bh * P + p] : 0.f;
  const float pi = 3.14159265358979323846f, two_pi = 2.f * pi;
  const float Dh = a.D ? a.D[h] : 0.f;
  __syncthreads();
  for (int64_t t = 0; t < a.L; ++t) {
    const int64_t bt = b * a.L + t, bth = bt * H + h;
    const float dt = a.dt[bth];
    for (int64_t i = tid; i < S; i += kThreads) {
      const float x = th[i] + pi * tanhf(a.angles[bt * S + i]) * dt;
      th[i] = x - two_pi * floorf(x / two_pi);
    }
    for (int64_t n = tid; n < N; n += kThreads) {
      qr[n] = ld(q[(bt * G + g) * N + n]) + a.q_bias[h * N + n];
      kr[n] = ld(k[(bt * G + g) * N + n]) + a.k_bias[h * N + n];
    }
    for (int64_t p = tid; p < P; p += kThreads) vt[p] = ld(v[bth * P + p]);
    __syncthreads();
    for (int64_t i = tid; i < S; i += kThreads) {  // rotate the pairs (2i, 2i + 1)
      float s, c;
      sincosf(th[i], &s, &c);
      const float q0 = qr[2 * i], q1 = qr[2 * i + 1], k0 = kr[2 * i], k1 = kr[2 * i + 1];
      qr[2 * i] = q0 * c - q1 * s;
      qr[2 * i + 1] = q0 * s + q1 * c;
      kr[2 * i] = k0 * c - k1 * s;
      kr[2 * i + 1] = k0 * s + k1 * c;
    }
    __syncthreads();
    const float lam = 1.f / (1.f + expf(-a.trap[bth]));
    const float alpha = expf(a.adt[bth]);
    const float beta = (1.f - lam) * dt * alpha, gamma = lam * dt;
    for (int64_t p = warp; p < P; p += kWarps) {  // warp-uniform loop: every lane takes part in the sum
      const float bv = beta * vp[p], gv = gamma * vt[p];
      float acc = 0.f;
      for (int64_t n = lane; n < N; n += 32) {
        const float s = alpha * St[p * N + n] + bv * kp[n] + gv * kr[n];
        St[p * N + n] = s;
        acc += s * qr[n];
      }
#pragma unroll
      for (int o = 16; o > 0; o /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, o);
      if (lane == 0) {
        float out = acc + Dh * vt[p];
        if (z) {
          const float zz = ld(z[bth * P + p]);
          out *= zz / (1.f + expf(-zz));
        }
        y[bth * P + p] = st<T>(out);
      }
    }
    __syncthreads();
    for (int64_t n = tid; n < N; n += kThreads) kp[n] = kr[n];
    for (int64_t p = tid; p < P; p += kThreads) vp[p] = vt[p];
    __syncthreads();
  }
  for (int64_t i = tid; i < S; i += kThreads) a.angle_out[bh * S + i] = th[i];
  for (int64_t n = tid; n < N; n += kThreads) a.k_out[bh * N + n] = kp[n];
  for (int64_t p = tid; p < P; p += kThreads) a.v_out[bh * P + p] = vp[p];
}

}  // namespace

void mamba3_fwd(const Mamba3FwdArgs& a) {
  const size_t smem = size_t(a.S + 3 * a.N + 2 * a.P) * sizeof(float);
  SSM_CHECK(smem <= 48 * 1024, "mamba3_siso_scan",
            "state sizes too large for the CUDA kernel (S + 3N + 2P = " + std::to_string(smem / 4) + " > 12288)");
  SSM_CHECK(a.B <= 65535, "mamba3_siso_scan", "at most 65535 sequences per launch");
  dispatch_act("mamba3_siso_scan", a.act, [&](auto tag) {
    using T = decltype(tag);
    mamba3_fwd_kernel<T><<<dim3(unsigned(a.H), unsigned(a.B)), kThreads, smem>>>(a);
  });
  check_launch("mamba3_siso_scan");
}

}  // namespace ssm::cuda
