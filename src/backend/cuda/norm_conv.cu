// RMSNorm (with the fused residual add) and the depthwise causal conv1d, fp32 math.
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace ssm::cuda {
namespace {

constexpr int kNormThreads = 256;

__device__ inline float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0)
    shared[warp] = v;
  __syncthreads();
  float s = 0.f;
  for (int i = 0; i < int(blockDim.x / 32); ++i) s += shared[i];
  return s;
}

// One block per row: r = x (+ res_in) kept in res_out (f32) when given; out = r * rsqrt(mean(r²) + eps) * w.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
    rms_norm_kernel(const T* x, const float* res_in, float* res_out, const float* w, T* out, int64_t C, float eps) {
  __shared__ float partial[kNormThreads / 32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * C;
  const float* ri = res_in ? res_in + row * C : nullptr;
  float* ro = res_out ? res_out + row * C : nullptr;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float v = ld(xr[c]);
    if (ri)
      v += ri[c];
    if (ro)
      ro[c] = v;
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, partial) / float(C) + eps);
  T* orow = out + row * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = ro ? ro[c] : ld(xr[c]) + (ri ? ri[c] : 0.f);
    orow[c] = st<T>(v * inv * w[c]);
  }
}

// One thread per (b, t, d), d fastest.
template <typename T>
__global__ void conv_kernel(const T* x, const float* w, const float* bias, const T* h0, T* y, int64_t B, int64_t L,
                            int64_t D, int W, bool silu) {
  const int64_t total = B * L * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, t = (i / D) % L, b = i / (D * L);
    float acc = bias ? bias[d] : 0.f;
    for (int k = 0; k < W; ++k) {
      const int64_t p = t - (W - 1) + k;  // input position; < 0 reads the initial state
      float v = 0.f;
      if (p >= 0)
        v = ld(x[(b * L + p) * D + d]);
      else if (h0)
        v = ld(h0[(b * (W - 1) + p + W - 1) * D + d]);
      acc += w[d * W + k] * v;
    }
    if (silu)
      acc = acc / (1.f + expf(-acc));
    y[i] = st<T>(acc);
  }
}

// hT[b, j, d] = the input at position L - (W-1) + j (the initial state's row when that is < 0).
template <typename T>
__global__ void conv_state_kernel(const T* x, const T* h0, T* hT, int64_t B, int64_t L, int64_t D, int W) {
  const int64_t total = B * (W - 1) * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, j = (i / D) % (W - 1), b = i / (D * (W - 1));
    const int64_t p = L - (W - 1) + j;
    T v = st<T>(0.f);
    if (p >= 0)
      v = x[(b * L + p) * D + d];
    else if (h0)
      v = h0[(b * (W - 1) + p + W - 1) * D + d];
    hT[i] = v;
  }
}

}  // namespace

void rms_norm(DType dt, const void* x, const float* res_in, float* res_out, const float* w, void* out, int64_t rows,
              int64_t C, float eps) {
  if (rows == 0)
    return;
  SSM_CHECK(rows <= 2147483647, "rms_norm", "too many rows for one launch");
  dispatch_act("rms_norm", dt, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_kernel<T>
        <<<unsigned(rows), kNormThreads>>>(static_cast<const T*>(x), res_in, res_out, w, static_cast<T*>(out), C, eps);
  });
  check_launch("rms_norm");
}

void conv1d(DType dt, const void* x, const float* w, const float* bias, const void* h0, void* y, void* hT, int64_t B,
            int64_t L, int64_t D, int64_t W, bool silu) {
  dispatch_act("causal_conv1d", dt, [&](auto tag) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x);
    const T* hp = static_cast<const T*>(h0);
    conv_kernel<T><<<blocks_for(B * L * D), 256>>>(xp, w, bias, hp, static_cast<T*>(y), B, L, D, int(W), silu);
    conv_state_kernel<T><<<blocks_for(B * (W - 1) * D), 256>>>(xp, hp, static_cast<T*>(hT), B, L, D, int(W));
  });
  check_launch("causal_conv1d");
}

}  // namespace ssm::cuda
