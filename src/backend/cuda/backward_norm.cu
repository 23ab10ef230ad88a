// Backward kernel of RMSNorm (with the fused residual add); the conv1d backward is in conv.cu.
// Both recompute what they need from the forward's inputs (the normalised row's statistics, the
// conv's pre-activation) instead of storing it; parameter gradients are reduced per block in
// registers / shared memory into per-block partials, which sum_partials adds in a fixed order
// (deterministic: no atomics).
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
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = make_float2(a, b);
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
                   float* dres_in, float* dw_part, int64_t rows, int64_t C, float eps) {
  extern __shared__ float sdw[];  // [C] this block's share of dw (to its row of dw_part [grid, C])
  __shared__ float2 sh[32];
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) sdw[c] = 0.f;
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
      if (dres_out) d += dres_out[o + c];
      if (dx) dx[o + c] = st<T>(d);
      if (dres_in) dres_in[o + c] = d;
      sdw[c] += g * v * rstd;  // each thread owns its columns: no race
    }
  }
  if (dw_part)
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x)
      dw_part[blockIdx.x * C + c] = sdw[c];  // the thread's own columns: no barrier needed
}

}  // namespace

void rms_norm_backward(DType dt, const void* x, const float* r, const float* w, const void* dout, const float* dres_out,
                       void* dx, float* dres_in, float* dw, int64_t rows, int64_t C, float eps) {
  if (rows == 0 || C == 0) return;
  const size_t smem = size_t(C) * sizeof(float);
  SSM_CHECK(smem <= 48 * 1024, "rms_norm", "the GPU backward takes rows of at most 12288 channels");
  const unsigned grid = unsigned(rows < 132 * 8 ? rows : 132 * 8);
  Scratch<float> part(dw ? int64_t(grid) * C : 1);
  dispatch_act("rms_norm", dt, [&](auto tag) {
    using T = decltype(tag);
    rms_bwd_kernel<T><<<grid, kThreads, smem>>>(static_cast<const T*>(x), r, w, static_cast<const T*>(dout), dres_out,
                                                static_cast<T*>(dx), dres_in, dw ? part.p : nullptr, rows, C, eps);
  });
  check_launch("rms_norm");
  if (dw) sum_partials(part.p, grid, C, C, dw, false);
}

}  // namespace ssm::cuda
