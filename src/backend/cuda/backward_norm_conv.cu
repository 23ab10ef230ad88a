// Backward kernels of RMSNorm (with the fused residual add) and of the depthwise causal conv1d.
// Both recompute what they need from the forward's inputs (the normalised row's statistics, the
// conv's pre-activation) instead of storing it; parameter gradients are reduced per block in
// registers / shared memory, then added to global memory with one atomic per block and element.
#include "backend/cuda/common.cuh"
#include "backend/cuda/train_kernels.h"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 256;

// Sums of two values over the block; `sh` holds 32 float2. Ends with a barrier so `sh` can be reused.
__device__ inline float2 block_sum2(float a, float b, float2* sh) {
  for (int o = 16; o > 0; o /= 2) {
    a += __shfl_xor_sync(0xffffffffu, a, o);
    b += __shfl_xor_sync(0xffffffffu, b, o);
  }
  if (threadIdx.x % 32 == 0)
    sh[threadIdx.x / 32] = make_float2(a, b);
  __syncthreads();
  float2 s = make_float2(0.f, 0.f);
  for (int i = 0; i < int(blockDim.x / 32); ++i) {
    s.x += sh[i].x;
    s.y += sh[i].y;
  }
  __syncthreads();
  return s;
}

// Rows in a grid-stride loop. With v the normalised input, rstd = 1/sqrt(mean(v²) + eps), n = v·rstd,
// out = n·w: dv = rstd·(dout·w) − v·rstd³·mean(dout·w·v) (+ dres_out); dw = Σ_rows dout·n.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    rms_bwd_kernel(const T* x, const float* r, const float* w, const T* dout, const float* dres_out, T* dx,
                   float* dres_in, float* dw, int64_t rows, int64_t C, float eps) {
  extern __shared__ float sdw[];  // [C] this block's share of dw
  __shared__ float2 sh[32];
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
    sdw[c] = 0.f;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t o = row * C;
    float ss = 0.f, dot = 0.f;
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = r ? r[o + c] : ld(x[o + c]);
      ss += v * v;
      dot += ld(dout[o + c]) * w[c] * v;
    }
    const float2 s = block_sum2(ss, dot, sh);
    const float rstd = rsqrtf(s.x / float(C) + eps);
    const float k = rstd * rstd * rstd * s.y / float(C);
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
      const float v = r ? r[o + c] : ld(x[o + c]);
      const float g = ld(dout[o + c]);
      float d = rstd * g * w[c] - v * k;
      if (dres_out)
        d += dres_out[o + c];
      if (dx)
        dx[o + c] = st<T>(d);
      if (dres_in)
        dres_in[o + c] = d;
      sdw[c] += g * v * rstd;  // each thread owns its columns: no race
    }
  }
  __syncthreads();
  if (dw)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      atomicAdd(dw + c, sdw[c]);
}

constexpr int kMaxW = 8;
constexpr int64_t kConvChunk = 64;  // time steps per thread in the parameter-gradient kernel

// One thread per (channel, chunk of kConvChunk steps of one sequence): recomputes the pre-activation,
// writes dpre = dy · act'(pre) and accumulates dbias, dw over its chunk.
template <typename T>
__global__ void conv_bwd_params_kernel(const T* x, const float* w, const float* bias, const T* h0, const T* dy,
                                       float* dpre, float* dw, float* dbias, int64_t L, int64_t D, int W, bool silu) {
  const int64_t d = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (d >= D)
    return;
  const int64_t chunks = (L + kConvChunk - 1) / kConvChunk;
  const int64_t b = blockIdx.y / chunks, t0 = (blockIdx.y % chunks) * kConvChunk, t1 = min(L, t0 + kConvChunk);
  float wk[kMaxW], win[kMaxW], gw[kMaxW];
#pragma unroll
  for (int k = 0; k < kMaxW; ++k) {
    wk[k] = k < W ? w[d * W + k] : 0.f;
    gw[k] = 0.f;
    win[k] = 0.f;
  }
  // The window holds the inputs at t0 - (W-1) + k for k < W - 1 (slot W-1 is filled per step).
#pragma unroll
  for (int k = 0; k < kMaxW - 1; ++k) {
    if (k >= W - 1)
      continue;
    const int64_t p = t0 - (W - 1) + k;
    win[k] = p >= 0 ? ld(x[(b * L + p) * D + d]) : h0 ? ld(h0[(b * (W - 1) + p + W - 1) * D + d]) : 0.f;
  }
  float gb = 0.f;
  const float b0 = bias ? bias[d] : 0.f;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t i = (b * L + t) * D + d;
    float pre = b0;
#pragma unroll
    for (int k = 0; k < kMaxW; ++k) {
      if (k == W - 1)
        win[k] = ld(x[i]);
      if (k < W)
        pre += wk[k] * win[k];
    }
    float g = ld(dy[i]);
    if (silu) {
      const float s = 1.f / (1.f + expf(-pre));
      g *= s * (1.f + pre * (1.f - s));
    }
    dpre[i] = g;
    gb += g;
#pragma unroll
    for (int k = 0; k < kMaxW; ++k)
      if (k < W)
        gw[k] += g * win[k];
#pragma unroll
    for (int k = 0; k < kMaxW - 1; ++k)
      win[k] = win[k + 1];
  }
  if (dbias)
    atomicAdd(dbias + d, gb);
#pragma unroll
  for (int k = 0; k < kMaxW; ++k)
    if (k < W)
      atomicAdd(dw + d * W + k, gw[k]);
}

// One thread per (b, p, d) for input positions p in [-(W-1), L): the gradient of the input at p
// (x when p >= 0, the initial state's row p + W - 1 otherwise), from the steps t = p + W-1-k that read
// it and from the final state's gradient where p is among the last W-1 positions.
template <typename T>
__global__ void conv_bwd_input_kernel(const float* w, const float* dpre, const T* dhT, T* dx, T* dh0, int64_t B,
                                      int64_t L, int64_t D, int W) {
  const int64_t P = L + W - 1, total = B * P * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, q = (i / D) % P, b = i / (D * P), p = q - (W - 1);
    if (p < 0 && !dh0)
      continue;
    float acc = 0.f;
    for (int k = 0; k < W; ++k) {
      const int64_t t = p + (W - 1) - k;
      if (t >= 0 && t < L)
        acc += w[d * W + k] * dpre[(b * L + t) * D + d];
    }
    const int64_t j = p - (L - (W - 1));  // row of the final state holding this input
    if (dhT && j >= 0)
      acc += ld(dhT[(b * (W - 1) + j) * D + d]);
    if (p >= 0)
      dx[(b * L + p) * D + d] = st<T>(acc);
    else
      dh0[(b * (W - 1) + p + W - 1) * D + d] = st<T>(acc);
  }
}

}  // namespace

void rms_norm_backward(DType dt, const void* x, const float* r, const float* w, const void* dout,
                       const float* dres_out, void* dx, float* dres_in, float* dw, int64_t rows, int64_t C, float eps) {
  if (rows == 0 || C == 0)
    return;
  const size_t smem = size_t(C) * sizeof(float);
  SSM_CHECK(smem <= 48 * 1024, "rms_norm", "the GPU backward takes rows of at most 12288 channels");
  const unsigned grid = unsigned(rows < 132 * 8 ? rows : 132 * 8);
  dispatch_act("rms_norm", dt, [&](auto tag) {
    using T = decltype(tag);
    rms_bwd_kernel<T><<<grid, kThreads, smem>>>(static_cast<const T*>(x), r, w, static_cast<const T*>(dout),
                                                dres_out, static_cast<T*>(dx), dres_in, dw, rows, C, eps);
  });
  check_launch("rms_norm");
}

void conv1d_backward(DType dt, const void* x, const float* w, const float* bias, const void* h0, const void* dy,
                     const void* dhT, float* dpre, void* dx, void* dh0, float* dw, float* dbias, int64_t B, int64_t L,
                     int64_t D, int64_t W, bool silu) {
  SSM_CHECK(W >= 2 && W <= kMaxW, "causal_conv1d", "kernel width must be in [2, 8]");
  if (B * D == 0)
    return;
  dispatch_act("causal_conv1d", dt, [&](auto tag) {
    using T = decltype(tag);
    if (L > 0) {
      const int64_t chunks = (L + kConvChunk - 1) / kConvChunk;
      SSM_CHECK(B * chunks <= 65535, "causal_conv1d", "batch x length too large for the GPU backward");
      const dim3 grid(unsigned((D + 127) / 128), unsigned(B * chunks));
      conv_bwd_params_kernel<T><<<grid, 128>>>(static_cast<const T*>(x), w, bias, static_cast<const T*>(h0),
                                               static_cast<const T*>(dy), dpre, dw, dbias, L, D, int(W), silu);
    }
    conv_bwd_input_kernel<T><<<blocks_for(B * (L + W - 1) * D), 256>>>(
        w, dpre, static_cast<const T*>(dhT), static_cast<T*>(dx), static_cast<T*>(dh0), B, L, D, int(W));
  });
  check_launch("causal_conv1d");
}

}  // namespace ssm::cuda
