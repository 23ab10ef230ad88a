// Backward kernels of the elementwise ops and the reductions their broadcasts need: activation
// gradients, scalar affine maps, sums over dimensions, the bias gradient (column sums), the fixed-order
// sum of per-block partials and the embedding's scatter-add (sorted: deterministic). Memory bound;
// fp32 math.
#include <cub/device/device_radix_sort.cuh>

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
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
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
    if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      float s = 0.f;
      for (int i = 0; i < int(blockDim.x / 32); ++i) s += part[i];
      out[o] = st<T>(s * scale);
    }
    __syncthreads();
  }
}

// Column sums: blockIdx.x over 256-column tiles, blockIdx.y over row chunks; each chunk's sums go to
// its row of `part` [chunks, cols] (summed in order by sum_partials).
template <typename T>
__global__ void col_sum_kernel(const T* g, float* part, int64_t rows, int64_t cols, int64_t chunk) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = blockIdx.y * chunk, r1 = min(rows, r0 + chunk);
  float acc = 0.f;
  for (int64_t r = r0; r < r1; ++r) acc += ld(g[r * cols + c]);
  part[blockIdx.y * cols + c] = acc;
}

// 32 columns per block (threadIdx.x) x 8 subsets of the partial rows (threadIdx.y: rows y, y + 8, ...),
// each summed in ascending order, then the 8 subset sums in order: a fixed tree.
constexpr int kPartSets = 8;
__global__ void sum_partials_kernel(const float* part, int64_t P, int64_t stride, int64_t n, float* out,
                                    bool accumulate) {
  __shared__ float sh[kPartSets][33];
  const int64_t i = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (i < n)
    for (int64_t p = threadIdx.y; p < P; p += kPartSets) acc += part[p * stride + i];
  sh[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && i < n) {
    float s = 0.f;
    for (int k = 0; k < kPartSets; ++k) s += sh[k][threadIdx.x];
    out[i] = accumulate ? out[i] + s : s;
  }
}

__global__ void embedding_keys_kernel(const int64_t* ids, uint32_t* keys, int32_t* pos, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    keys[i] = uint32_t(ids[i]);
    pos[i] = int32_t(i);
  }
}

// keys / pos: the ids and positions sorted by id (stable: positions ascend within an id), cut into fixed
// chunks of kEmbChunk entries (one block each, threads over the D columns). Each block sums the pieces
// of the id runs in its chunk in order: a run wholly inside the chunk goes straight to its dw row; the
// chunk's first piece, when it continues a run from the previous chunk, goes to part[chunk][0], and a
// run that starts in the chunk and continues past its end to part[chunk][1] (part: [chunks][2][D]).
constexpr int64_t kEmbChunk = 64;
__global__ void embedding_chunks_kernel(const uint32_t* keys, const int32_t* pos, const float* g, float* dw,
                                        float* part, int64_t n, int64_t D) {
  const int64_t c = blockIdx.x, i0 = c * kEmbChunk, i1 = min(n, i0 + kEmbChunk);
  for (int64_t col = threadIdx.x; col < D; col += blockDim.x) {
    int64_t i = i0;
    while (i < i1) {
      const uint32_t k = keys[i];
      const bool from_prev = i == i0 && i0 > 0 && keys[i0 - 1] == k;
      float acc = 0.f;
      int64_t j = i;
      for (; j < i1 && keys[j] == k; ++j) acc += g[int64_t(pos[j]) * D + col];
      const bool to_next = j == i1 && i1 < n && keys[i1] == k;
      if (from_prev)
        part[(c * 2 + 0) * D + col] = acc;
      else if (to_next)
        part[(c * 2 + 1) * D + col] = acc;
      else
        dw[int64_t(k) * D + col] = acc;
      i = j;
    }
  }
}

// One block per chunk whose last run starts in it and continues: that run's pieces, chunk by chunk in
// order (its own part[chunk][1], then part[c'][0] of each later chunk the run reaches), into dw.
__global__ void embedding_runs_kernel(const uint32_t* keys, const float* part, float* dw, int64_t n, int64_t D,
                                      int64_t chunks) {
  const int64_t c = blockIdx.x, i0 = c * kEmbChunk, e = min(n, i0 + kEmbChunk) - 1;
  const uint32_t k = keys[e];
  const bool to_next = e + 1 < n && keys[e + 1] == k;
  const bool whole_from_prev = i0 > 0 && keys[i0 - 1] == k && keys[i0] == k;  // a continuing piece (slot 0)
  if (!to_next || whole_from_prev) return;
  for (int64_t col = threadIdx.x; col < D; col += blockDim.x) {
    float acc = part[(c * 2 + 1) * D + col];
    for (int64_t cc = c + 1; cc < chunks && keys[cc * kEmbChunk] == k; ++cc) acc += part[(cc * 2 + 0) * D + col];
    dw[int64_t(k) * D + col] = acc;
  }
}

}  // namespace

void unary_grad(UnaryGrad op, DType dt, const void* x, const void* g, void* dx, int64_t n, float param) {
  if (n == 0) return;
  dispatch_act("unary_grad", dt, [&](auto tag) {
    using T = decltype(tag);
    unary_grad_kernel<T>
        <<<blocks_for(n), 256>>>(op, static_cast<const T*>(x), static_cast<const T*>(g), static_cast<T*>(dx), n, param);
  });
  check_launch("unary_grad");
}

void affine(DType dt, const void* x, void* y, int64_t n, float a, float b) {
  if (n == 0) return;
  dispatch_act("affine", dt, [&](auto tag) {
    using T = decltype(tag);
    affine_kernel<T><<<blocks_for(n), 256>>>(static_cast<const T*>(x), static_cast<T*>(y), n, a, b);
  });
  check_launch("affine");
}

void reduce_sum(DType dt, const ReduceWalk& w, const void* in, void* out, float scale) {
  if (w.nout == 0) return;
  const unsigned grid = unsigned(w.nout < 65535 * 4 ? w.nout : 65535 * 4);
  dispatch_act("sum", dt, [&](auto tag) {
    using T = decltype(tag);
    reduce_kernel<T><<<grid, 256>>>(w, static_cast<const T*>(in), static_cast<T*>(out), scale);
  });
  check_launch("sum");
}

void sum_partials(const float* part, int64_t P, int64_t stride, int64_t n, float* out, bool accumulate) {
  if (n == 0) return;
  SSM_CHECK((n + 31) / 32 <= 2147483647, "sum_partials", "too many elements");
  sum_partials_kernel<<<unsigned((n + 31) / 32), dim3(32, kPartSets)>>>(part, P, stride, n, out, accumulate);
  check_launch("sum_partials");
}

void col_sum(DType dt, const void* g, float* out, int64_t rows, int64_t cols) {
  if (cols == 0) return;
  if (rows == 0) {
    SSM_CHECK(cudaMemsetAsync(out, 0, size_t(cols) * 4) == cudaSuccess, "linear", "cudaMemsetAsync failed");
    return;
  }
  const int64_t chunk = 256, nchunks = (rows + chunk - 1) / chunk;
  SSM_CHECK(nchunks <= 65535, "linear", "too many rows for the bias gradient");
  Scratch<float> part(nchunks * cols);
  const dim3 grid(unsigned((cols + 255) / 256), unsigned(nchunks));
  dispatch_act("linear", dt, [&](auto tag) {
    using T = decltype(tag);
    col_sum_kernel<T><<<grid, 256>>>(static_cast<const T*>(g), part.p, rows, cols, chunk);
  });
  check_launch("linear");
  sum_partials(part.p, nchunks, cols, cols, out, false);
}

void embedding_backward(const float* g, const int64_t* ids, float* dw, int64_t n, int64_t D, int64_t V) {
  if (n * D == 0) return;
  SSM_CHECK(n <= 2147483647 && V <= 2147483647, "embedding", "the GPU backward takes at most 2^31 ids and rows");
  int bits = 1;
  while (bits < 32 && (int64_t(1) << bits) < V) ++bits;
  Scratch<uint32_t> keys(n), keys_sorted(n);
  Scratch<int32_t> pos(n), pos_sorted(n);
  embedding_keys_kernel<<<blocks_for(n), 256>>>(ids, keys.p, pos.p, n);
  check_launch("embedding");
  size_t temp_bytes = 0;
  SSM_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.p, keys_sorted.p, pos.p, pos_sorted.p, int(n), 0,
                                            bits) == cudaSuccess,
            "embedding", "CUB radix sort failed (temporary storage query)");
  Scratch<unsigned char> temp{int64_t(temp_bytes)};
  SSM_CHECK(cub::DeviceRadixSort::SortPairs(temp.p, temp_bytes, keys.p, keys_sorted.p, pos.p, pos_sorted.p, int(n), 0,
                                            bits) == cudaSuccess,
            "embedding", "CUB radix sort failed");
  const int64_t chunks = (n + kEmbChunk - 1) / kEmbChunk;
  SSM_CHECK(chunks <= 2147483647, "embedding", "too many ids for the GPU backward");
  Scratch<float> part(chunks * 2 * D);
  embedding_chunks_kernel<<<unsigned(chunks), 128>>>(keys_sorted.p, pos_sorted.p, g, dw, part.p, n, D);
  embedding_runs_kernel<<<unsigned(chunks), 128>>>(keys_sorted.p, part.p, dw, n, D, chunks);
  check_launch("embedding");
}

}  // namespace ssm::cuda
