// Optimizer kernels: the sum of squares for the gradient norm (f64 accumulation; per-block partials
// added in block order by the last block: deterministic), the in-place scale of gradient clipping,
// and AdamW (fp32 master weights and state), with the arithmetic of the CPU AdamW (src/train/optim.cpp) in the same
// order.
#include "backend/cuda/common.cuh"
#include "backend/cuda/train_kernels.h"

namespace ssm::cuda {
namespace {

// Each block writes its partial sum; the last block to finish (an integer ticket, reset for the next
// call) adds the partials in block order to acc[0]. Which block is last varies, the order does not.
__device__ unsigned int g_ticket = 0;

__global__ void sum_squares_kernel(const float* x, int64_t n, double* part, double* acc) {
  __shared__ double sh[32];
  __shared__ bool last;
  double s = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    s += double(x[i]) * double(x[i]);
  for (int o = 16; o > 0; o /= 2) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int i = 0; i < int(blockDim.x / 32); ++i) t += sh[i];
    part[blockIdx.x] = t;
    __threadfence();
    last = atomicAdd(&g_ticket, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The last block: the partials in a fixed order (strided per thread, then the warps' sums in order).
  double v = 0;
  for (unsigned i = threadIdx.x; i < gridDim.x; i += blockDim.x) v += static_cast<volatile double*>(part)[i];
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int i = 0; i < int(blockDim.x / 32); ++i) t += sh[i];
    acc[0] += t;
    g_ticket = 0;
  }
}

__global__ void scale_kernel(float* x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= s;
}

__global__ void adamw_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamWStep s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float mi = s.b1 * m[i] + (1 - s.b1) * gi;
    const float vi = s.b2 * v[i] + (1 - s.b2) * gi * gi;
    float pi = p[i];
    pi -= s.wd * pi;
    pi -= s.lr_bc1 * mi / (sqrtf(vi) * s.inv_sqrt_bc2 + s.eps);
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
  }
}

unsigned grid_for(int64_t n) {
  const int64_t b = (n + 255) / 256;
  return unsigned(b < 1 ? 1 : b > 132 * 16 ? 132 * 16 : b);
}

}  // namespace

void sum_squares(const float* x, int64_t n, double* acc) {
  if (n == 0) return;
  const unsigned grid = grid_for(n);
  Scratch<double> part(grid);
  sum_squares_kernel<<<grid, 256>>>(x, n, part.p, acc);
  check_launch("clip_grad_norm");
}

void scale(float* x, int64_t n, float s) {
  if (n == 0) return;
  scale_kernel<<<grid_for(n), 256>>>(x, n, s);
  check_launch("clip_grad_norm");
}

void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s) {
  if (n == 0) return;
  adamw_kernel<<<grid_for(n), 256>>>(p, g, m, v, n, s);
  check_launch("adamw");
}

}  // namespace ssm::cuda
