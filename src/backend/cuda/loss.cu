// Row kernels of the losses: cross-entropy (forward: log-sum-exp and per-row loss; backward:
// softmax − one-hot) and (log-)softmax over the last dimension with its backward. One block per row
// (grid-stride), an online max/sum in one pass over the row, fp32 math.
#include "backend/cuda/common.cuh"
#include "backend/cuda/train_kernels.h"

namespace ssm::cuda {
namespace {

constexpr int kThreads = 512;

// Merges two (max, sum of exp(x - max)) pairs.
__device__ inline void merge(float& m, float& s, float m2, float s2) {
  if (m2 == -INFINITY) return;
  if (m == -INFINITY) {
    m = m2;
    s = s2;
    return;
  }
  const float mm = fmaxf(m, m2);
  s = s * expf(m - mm) + s2 * expf(m2 - mm);
  m = mm;
}

// log-sum-exp of row[0..n) over the block (every thread gets it).
template <typename T>
__device__ float row_lse(const T* row, int64_t n, float2* sh) {
  float m = -INFINITY, s = 0.f;
  for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
    const float v = ld(row[c]);
    if (v > m) {
      s = (m == -INFINITY ? 0.f : s * expf(m - v)) + 1.f;
      m = v;
    } else {
      s += expf(v - m);
    }
  }
  for (int o = 16; o > 0; o /= 2) merge(m, s, __shfl_xor_sync(0xffffffffu, m, o), __shfl_xor_sync(0xffffffffu, s, o));
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = make_float2(m, s);
  __syncthreads();
  float M = -INFINITY, S = 0.f;
  for (int i = 0; i < int(blockDim.x / 32); ++i) merge(M, S, sh[i].x, sh[i].y);
  __syncthreads();
  return M + logf(S);
}

__device__ inline float block_sum(float v, float* sh) {
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) sh[threadIdx.x / 32] = v;
  __syncthreads();
  float s = 0.f;
  for (int i = 0; i < int(blockDim.x / 32); ++i) s += sh[i];
  __syncthreads();
  return s;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) ce_fwd_kernel(const T* logits, const int64_t* targets, int64_t ignore,
                                                          float* lse, float* row_loss, int64_t N, int64_t V) {
  __shared__ float2 sh[32];
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T* row = logits + i * V;
    const float l = row_lse(row, V, sh);
    if (threadIdx.x == 0) {
      lse[i] = l;
      const int64_t t = targets[i];
      row_loss[i] = t == ignore ? 0.f : l - ld(row[t]);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    ce_bwd_kernel(const T* logits, const int64_t* targets, int64_t ignore, const float* lse, const float* g,
                  float inv_count, T* dlogits, int64_t N, int64_t V) {
  const float scale = g[0] * inv_count;
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const T* row = logits + i * V;
    T* drow = dlogits + i * V;
    const int64_t t = targets[i];
    if (t == ignore) {
      for (int64_t c = threadIdx.x; c < V; c += blockDim.x) drow[c] = st<T>(0.f);
      continue;
    }
    const float l = lse[i];
    for (int64_t c = threadIdx.x; c < V; c += blockDim.x)
      drow[c] = st<T>((expf(ld(row[c]) - l) - (c == t ? 1.f : 0.f)) * scale);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) softmax_fwd_kernel(const T* x, T* y, int64_t rows, int64_t n, bool log) {
  __shared__ float2 sh[32];
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const float l = row_lse(x + i * n, n, sh);
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
      const float v = ld(x[i * n + c]) - l;
      y[i * n + c] = st<T>(log ? v : expf(v));
    }
  }
}

// log: dx = g − exp(y)·Σg; softmax: dx = y·(g − Σ g·y).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    softmax_bwd_kernel(const T* y, const T* g, T* dx, int64_t rows, int64_t n, bool log) {
  __shared__ float sh[32];
  for (int64_t i = blockIdx.x; i < rows; i += gridDim.x) {
    const int64_t o = i * n;
    float acc = 0.f;
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) acc += log ? ld(g[o + c]) : ld(g[o + c]) * ld(y[o + c]);
    const float s = block_sum(acc, sh);
    for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
      const float yv = ld(y[o + c]), gv = ld(g[o + c]);
      dx[o + c] = st<T>(log ? gv - expf(yv) * s : yv * (gv - s));
    }
  }
}

unsigned row_grid(int64_t rows) { return unsigned(rows < 132 * 16 ? rows : 132 * 16); }

}  // namespace

void cross_entropy_fwd(DType dt, const void* logits, const int64_t* targets, int64_t ignore, float* lse,
                       float* row_loss, int64_t N, int64_t V) {
  if (N == 0) return;
  dispatch_act("cross_entropy", dt, [&](auto tag) {
    using T = decltype(tag);
    ce_fwd_kernel<T><<<row_grid(N), kThreads>>>(static_cast<const T*>(logits), targets, ignore, lse, row_loss, N, V);
  });
  check_launch("cross_entropy");
}

void cross_entropy_bwd(DType dt, const void* logits, const int64_t* targets, int64_t ignore, const float* lse,
                       const float* g, float inv_count, void* dlogits, int64_t N, int64_t V) {
  if (N == 0) return;
  dispatch_act("cross_entropy", dt, [&](auto tag) {
    using T = decltype(tag);
    ce_bwd_kernel<T><<<row_grid(N), kThreads>>>(static_cast<const T*>(logits), targets, ignore, lse, g, inv_count,
                                                static_cast<T*>(dlogits), N, V);
  });
  check_launch("cross_entropy");
}

void softmax_fwd(DType dt, const void* x, void* y, int64_t rows, int64_t n, bool log) {
  if (rows * n == 0) return;
  dispatch_act("softmax", dt, [&](auto tag) {
    using T = decltype(tag);
    softmax_fwd_kernel<T><<<row_grid(rows), kThreads>>>(static_cast<const T*>(x), static_cast<T*>(y), rows, n, log);
  });
  check_launch("softmax");
}

void softmax_bwd(DType dt, const void* y, const void* g, void* dx, int64_t rows, int64_t n, bool log) {
  if (rows * n == 0) return;
  dispatch_act("softmax", dt, [&](auto tag) {
    using T = decltype(tag);
    softmax_bwd_kernel<T><<<row_grid(rows), kThreads>>>(static_cast<const T*>(y), static_cast<const T*>(g),
                                                        static_cast<T*>(dx), rows, n, log);
  });
  check_launch("softmax");
}

}  // namespace ssm::cuda
