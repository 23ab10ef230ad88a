// Backward kernels of the elementwise ops and the reductions their broadcasts need: activation
// gradients, scalar affine maps, sums over dimensions, the bias gradient (column sums) and the
// embedding's scatter-add. Memory bound; fp32 math.
#include "backend/cuda/common.cuh"
#include "backend/cuda/train_kernels.h"

namespace ssm::cuda {
namespace {

template <typename T>
__global__ void unary_grad_kernel(UnaryGrad op, const T* x, const T* g, T* dx, int64_t n, float param) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = ld(x[i]), gv = ld(g[i]);
    float d = 0.f;
    if (op == UnaryGrad::silu) {
      const float s = 1.f / (1.f + expf(-v));
      d = s * (1.f + v * (1.f - s));
    } else {  // softplus: sigmoid(x) below the threshold, 1 above (where softplus(x) = x)
      d = v > param ? 1.f : 1.f / (1.f + expf(-v));
    }
    dx[i] = st<T>(gv * d);
  }
}

template <typename T>
__global__ void affine_kernel(const T* x, T* y, int64_t n, float a, float b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = st<T>(ld(x[i]) * a + b);
}

__device__ inline float warp_sum(float v) {
  for (int o = 16; o > 0; o /= 2)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One block per output element (grid-stride), threads over the reduced elements.
template <typename T>
__global__ void reduce_kernel(ReduceWalk w, const T* in, T* out, float scale) {
  __shared__ float part[32];
  for (int64_t o = blockIdx.x; o < w.nout; o += gridDim.x) {
    int64_t base = 0, rest = o;
    for (int d = w.nk - 1; d >= 0; --d) {
      base += (rest % w.kshape[d]) * w.kstride[d];
      rest /= w.kshape[d];
    }
    float acc = 0.f;
    for (int64_t j = threadIdx.x; j < w.nred; j += blockDim.x) {
      int64_t off = base, r = j;
      for (int d = w.nr - 1; d >= 0; --d) {
        off += (r % w.rshape[d]) * w.rstride[d];
        r /= w.rshape[d];
      }
      acc += ld(in[off]);
    }
    acc = warp_sum(acc);
    if (threadIdx.x % 32 == 0)
      part[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      float s = 0.f;
      for (int i = 0; i < int(blockDim.x / 32); ++i)
        s += part[i];
      out[o] = st<T>(s * scale);
    }
    __syncthreads();
  }
}

// Column sums: blockIdx.x over 256-column tiles, blockIdx.y over row chunks; one atomic per column and chunk.
template <typename T>
__global__ void col_sum_kernel(const T* g, float* out, int64_t rows, int64_t cols, int64_t chunk) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols)
    return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r)
    acc += ld(g[r * cols + c]);
  atomicAdd(out + c, acc);
}

__global__ void embedding_backward_kernel(const float* g, const int64_t* ids, float* dw, int64_t n, int64_t D) {
  const int64_t total = n * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    atomicAdd(dw + ids[i / D] * D + i % D, g[i]);
}

}  // namespace

void unary_grad(UnaryGrad op, DType dt, const void* x, const void* g, void* dx, int64_t n, float param) {
  if (n == 0)
    return;
  dispatch_act("unary_grad", dt, [&](auto tag) {
    using T = decltype(tag);
    unary_grad_kernel<T><<<blocks_for(n), 256>>>(op, static_cast<const T*>(x), static_cast<const T*>(g),
                                                 static_cast<T*>(dx), n, param);
  });
  check_launch("unary_grad");
}

void affine(DType dt, const void* x, void* y, int64_t n, float a, float b) {
  if (n == 0)
    return;
  dispatch_act("affine", dt, [&](auto tag) {
    using T = decltype(tag);
    affine_kernel<T><<<blocks_for(n), 256>>>(static_cast<const T*>(x), static_cast<T*>(y), n, a, b);
  });
  check_launch("affine");
}

void reduce_sum(DType dt, const ReduceWalk& w, const void* in, void* out, float scale) {
  if (w.nout == 0)
    return;
  const unsigned grid = unsigned(w.nout < 65535 * 4 ? w.nout : 65535 * 4);
  dispatch_act("sum", dt, [&](auto tag) {
    using T = decltype(tag);
    reduce_kernel<T><<<grid, 256>>>(w, static_cast<const T*>(in), static_cast<T*>(out), scale);
  });
  check_launch("sum");
}

void col_sum(DType dt, const void* g, float* out, int64_t rows, int64_t cols) {
  if (cols == 0)
    return;
  SSM_CHECK(cudaMemsetAsync(out, 0, size_t(cols) * 4) == cudaSuccess, "linear", "cudaMemsetAsync failed");
  if (rows == 0)
    return;
  const int64_t chunk = 256, nchunks = (rows + chunk - 1) / chunk;
  SSM_CHECK(nchunks <= 65535, "linear", "too many rows for the bias gradient");
  const dim3 grid(unsigned((cols + 255) / 256), unsigned(nchunks));
  dispatch_act("linear", dt, [&](auto tag) {
    using T = decltype(tag);
    col_sum_kernel<T><<<grid, 256>>>(static_cast<const T*>(g), out, rows, cols, chunk);
  });
  check_launch("linear");
}

void embedding_backward(const float* g, const int64_t* ids, float* dw, int64_t n, int64_t D) {
  if (n * D == 0)
    return;
  embedding_backward_kernel<<<blocks_for(n * D), 256>>>(g, ids, dw, n, D);
  check_launch("embedding");
}

}  // namespace ssm::cuda
