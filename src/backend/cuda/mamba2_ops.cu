// The Mamba-2 kernels besides the chunked scan (see ssd.h): the SSD scan as a sequential recurrence,
// gated RMSNorm, clamp and the one-token SSD update of the decode step. fp32 math.
#include <cmath>

#include "backend/cuda/common.cuh"
#include "backend/cuda/ssd.h"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 256;

__device__ inline float silu(float v) { return v / (1.f + __expf(-v)); }
__device__ inline float softplus(float v) { return v > 20.f ? v : log1pf(__expf(v)); }  // PyTorch's threshold

// One block per (row, group).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gated_rms_norm_kernel(const T* x, const T* z, int64_t ldz, const float* w, T* out, int64_t C, int64_t group,
                          float eps, bool before) {
  __shared__ float partial[kThreads / 32];
  const int64_t ng = C / group, row = blockIdx.x / ng, g0 = (blockIdx.x % ng) * group;
  const T* xr = x + row * C + g0;
  const T* zr = z ? z + row * ldz + g0 : nullptr;
  auto v = [&](int64_t c) { return (zr && !before) ? ld(xr[c]) * silu(ld(zr[c])) : ld(xr[c]); };
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < group; c += kThreads) {
    const float vc = v(c);
    ss += vc * vc;
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  float tot = 0.f;
  for (int i = 0; i < kThreads / 32; ++i) tot += partial[i];
  const float inv = rsqrtf(tot / float(group) + eps);
  T* orow = out + row * C + g0;
  for (int64_t c = threadIdx.x; c < group; c += kThreads) {
    float o = v(c) * inv * w[g0 + c];
    if (zr && before) o *= silu(ld(zr[c]));
    orow[c] = st<T>(o);
  }
}

template <typename T>
__global__ void clamp_kernel(const T* x, T* y, int64_t n, float lo, float hi) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = st<T>(fminf(fmaxf(ld(x[i]), lo), hi));
}

// One block of 4 warps per (head, sequence, 16 head channels); a warp updates 4 channels p at once
// (independent load/update/reduce chains), lanes over N (NPL each).
constexpr int kStepRows = 4, kStepP = 4 * kStepRows;
template <typename T, int NPL>
__global__ void __launch_bounds__(128) ssd_step_kernel(SSDStepArgs a) {
  const int64_t h = blockIdx.x, b = blockIdx.y, H = a.H, P = a.P, N = a.N, G = a.G, g = h / (H / G);
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* xbc = static_cast<const T*>(a.xbc) + b * a.ld_xbc;
  float dt = softplus(ld(static_cast<const T*>(a.dtr)[b * a.ld_dt + h]) + a.dt_bias[h]);
  if (a.dt_lo > 0.f || !isinf(a.dt_hi)) dt = fminf(fmaxf(dt, a.dt_lo), a.dt_hi);
  const float dA = expf(-dt * expf(a.A_log[h]));
  const T* Bg = xbc + H * P + g * N;
  const T* Cg = xbc + H * P + G * N + g * N;
  float Bv[NPL], Cv[NPL];
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int64_t n = lane + 32 * j;
    Bv[j] = n < N ? ld(Bg[n]) : 0.f;
    Cv[j] = n < N ? ld(Cg[n]) : 0.f;
  }
  const int64_t p0 = int64_t(blockIdx.z) * kStepP + w * kStepRows;
  float xv[kStepRows], acc[kStepRows];
#pragma unroll
  for (int r = 0; r < kStepRows; ++r) {
    const int64_t p = p0 + r;
    xv[r] = p < P ? ld(xbc[h * P + p]) : 0.f;
    acc[r] = 0.f;
    if (p >= P) continue;
    float* s = a.state + ((b * H + h) * P + p) * N;
    const float dtx = dt * xv[r];
#pragma unroll
    for (int j = 0; j < NPL; ++j) {
      const int64_t n = lane + 32 * j;
      if (n < N) {
        const float v = dA * s[n] + dtx * Bv[j];
        s[n] = v;
        acc[r] += v * Cv[j];
      }
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], o);
  if (lane == 0) {
    T* y = static_cast<T*>(a.y) + b * H * P;
#pragma unroll
    for (int r = 0; r < kStepRows; ++r) {
      const int64_t p = p0 + r;
      if (p >= P) continue;
      const float d = a.D ? a.D[a.d_per_channel ? h * P + p : h] : 0.f;
      y[h * P + p] = st<T>(acc[r] + d * xv[r]);
    }
  }
}

// ---- the sequential recurrence: one warp per (b, h, p), lanes over N (NPL states each) ----------------
template <typename T, int NPL>
__global__ void __launch_bounds__(128) ssd_recurrent_kernel(SSDFwdArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t p = int64_t(blockIdx.x) * 4 + (threadIdx.x >> 5), h = blockIdx.y, b = blockIdx.z;
  if (p >= a.P) return;
  const int64_t L = a.L, H = a.H, P = a.P, N = a.N, G = a.G, g = h / (H / G);
  const T* x = static_cast<const T*>(a.x);
  const T* Bm = static_cast<const T*>(a.B);
  const T* Cm = static_cast<const T*>(a.C);
  T* y = static_cast<T*>(a.y);
  const int64_t sbase = ((b * H + h) * P + p) * N;
  float s[NPL];
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int64_t n = lane + 32 * j;
    s[j] = (a.h0 && n < N) ? a.h0[sbase + n] : 0.f;
  }
  constexpr int U = 4;  // steps per iteration: their output reductions are independent
  for (int64_t t0 = 0; t0 < L; t0 += U) {
    float acc[U];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      acc[u] = 0.f;
      const int64_t t = t0 + u;
      if (t >= L) continue;
      const int64_t row = b * L + t;
      const float dA = expf(a.A[row * H + h]);
      const float xv = ld(x[(row * H + h) * P + p]);
      const T* Bt = Bm + (row * G + g) * N;
      const T* Ct = Cm + (row * G + g) * N;
#pragma unroll
      for (int j = 0; j < NPL; ++j) {
        const int64_t n = lane + 32 * j;
        if (n < N) {
          s[j] = dA * s[j] + xv * ld(Bt[n]);
          acc[u] += s[j] * ld(Ct[n]);
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
#pragma unroll
      for (int u = 0; u < U; ++u) acc[u] += __shfl_xor_sync(0xffffffffu, acc[u], o);
    if (lane < U && t0 + lane < L) {
      float v = acc[0];
#pragma unroll
      for (int u = 1; u < U; ++u)
        if (lane == u) v = acc[u];
      y[((b * L + t0 + lane) * H + h) * P + p] = st<T>(v);
    }
  }
#pragma unroll
  for (int j = 0; j < NPL; ++j) {
    const int64_t n = lane + 32 * j;
    if (n < N) a.hT[sbase + n] = s[j];
  }
}

template <typename T>
void launch_recurrent(const SSDFwdArgs& a, cudaStream_t s) {
  const char* kOp = "ssd_scan";
  const dim3 grid(unsigned((a.P + 3) / 4), unsigned(a.H), unsigned(a.batch));
  if (a.N <= 32)
    ssd_recurrent_kernel<T, 1><<<grid, 128, 0, s>>>(a);
  else if (a.N <= 64)
    ssd_recurrent_kernel<T, 2><<<grid, 128, 0, s>>>(a);
  else if (a.N <= 128)
    ssd_recurrent_kernel<T, 4><<<grid, 128, 0, s>>>(a);
  else if (a.N <= 256)
    ssd_recurrent_kernel<T, 8><<<grid, 128, 0, s>>>(a);
  else
    fail(kOp, "state size N=" + std::to_string(a.N) + " is above the GPU kernel's limit of 256");
  check_launch(kOp);
}

}  // namespace

void ssd_recurrent(const SSDFwdArgs& a, void* stream) {
  dispatch_act("ssd_scan", a.act, [&](auto t) { launch_recurrent<decltype(t)>(a, static_cast<cudaStream_t>(stream)); });
}

void gated_rms_norm(DType act, const void* x, const void* z, int64_t ldz, const float* w, void* out, int64_t R,
                    int64_t C, int64_t group, float eps, bool norm_before_gate, void* stream) {
  const char* op = "gated_rms_norm";
  if (R == 0 || C == 0) return;
  SSM_CHECK(group >= 1 && C % group == 0, op, "group size must divide the channels");
  dispatch_act(op, act, [&](auto t) {
    using T = decltype(t);
    gated_rms_norm_kernel<T><<<unsigned(R * (C / group)), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(x), static_cast<const T*>(z), ldz, w, static_cast<T*>(out), C, group, eps,
        norm_before_gate);
  });
  check_launch(op);
}

void clamp(DType act, const void* x, void* y, int64_t n, float lo, float hi, void* stream) {
  if (n == 0) return;
  dispatch_act("clamp", act, [&](auto t) {
    using T = decltype(t);
    clamp_kernel<T><<<blocks_for(n), 256, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<const T*>(x),
                                                                                  static_cast<T*>(y), n, lo, hi);
  });
  check_launch("clamp");
}

void ssd_step(const SSDStepArgs& a, void* stream) {
  const char* op = "ssd_step";
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  const dim3 grid(unsigned(a.H), unsigned(a.B), unsigned((a.P + kStepP - 1) / kStepP));
  dispatch_act(op, a.act, [&](auto t) {
    using T = decltype(t);
    if (a.N <= 32)
      ssd_step_kernel<T, 1><<<grid, 128, 0, s>>>(a);
    else if (a.N <= 64)
      ssd_step_kernel<T, 2><<<grid, 128, 0, s>>>(a);
    else if (a.N <= 128)
      ssd_step_kernel<T, 4><<<grid, 128, 0, s>>>(a);
    else if (a.N <= 256)
      ssd_step_kernel<T, 8><<<grid, 128, 0, s>>>(a);
    else
      fail(op, "state size N=" + std::to_string(a.N) + " is above the GPU kernel's limit of 256");
  });
  check_launch(op);
}

}  // namespace ssm::cuda
