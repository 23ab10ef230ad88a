// RMSNorm (with the fused residual add), fp32 math. (The causal conv1d is in conv.cu.)
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace ssm::cuda {
namespace {

constexpr int kNormThreads = 256;

__device__ inline float block_sum(float v, float* shared) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
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
    if (ri) v += ri[c];
    if (ro) ro[c] = v;
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, partial) / float(C) + eps);
  T* orow = out + row * C;
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    const float v = ro ? ro[c] : ld(xr[c]) + (ri ? ri[c] : 0.f);
    orow[c] = st<T>(v * inv * w[c]);
  }
}

}  // namespace

void rms_norm(DType dt, const void* x, const float* res_in, float* res_out, const float* w, void* out, int64_t rows,
              int64_t C, float eps) {
  if (rows == 0) return;
  SSM_CHECK(rows <= 2147483647, "rms_norm", "too many rows for one launch");
  dispatch_act("rms_norm", dt, [&](auto tag) {
    using T = decltype(tag);
    rms_norm_kernel<T>
        <<<unsigned(rows), kNormThreads>>>(static_cast<const T*>(x), res_in, res_out, w, static_cast<T*>(out), C, eps);
  });
  check_launch("rms_norm");
}

}  // namespace ssm::cuda
