// Elementwise CUDA kernels: strided copies and casts, unary activations, broadcasting binary ops,
// the embedding gather and the bias add. Memory bound; grid-stride loops, fp32 math.
#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"

namespace ssm::cuda {
namespace {

// Offsets of element i of the walk in each operand.
struct Offsets {
  int64_t o0 = 0, o1 = 0, o2 = 0;
};
__device__ inline Offsets offsets(const Walk& w, int64_t i) {
  Offsets r;
  for (int d = w.nd - 1; d >= 0; --d) {
    const int64_t k = i % w.shape[d];
    i /= w.shape[d];
    r.o0 += k * w.s0[d];
    r.o1 += k * w.s1[d];
    r.o2 += k * w.s2[d];
  }
  return r;
}

template <typename TO, typename TI>
__global__ void copy_kernel(Walk w, TO* out, const TI* in) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < w.n; i += int64_t(gridDim.x) * blockDim.x) {
    const Offsets o = offsets(w, i);
    if constexpr (std::is_same_v<TO, TI>)
      out[o.o0] = in[o.o1];
    else
      out[o.o0] = st<TO>(ld(in[o.o1]));
  }
}

template <typename T>
__device__ inline float apply(Unary op, float x, float param) {
  switch (op) {
    case Unary::neg: return -x;
    case Unary::exp: return expf(x);
    case Unary::silu: return x / (1.f + expf(-x));
    case Unary::softplus: return x > param ? x : log1pf(expf(x));
  }
  return x;
}

template <typename T>
__global__ void unary_kernel(Unary op, const T* x, T* y, int64_t n, float param) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = st<T>(apply<T>(op, ld(x[i]), param));
}

template <typename T>
__global__ void binary_kernel(Binary op, Walk w, T* out, const T* a, const T* b) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < w.n; i += int64_t(gridDim.x) * blockDim.x) {
    const Offsets o = offsets(w, i);
    const float x = ld(a[o.o1]), y = ld(b[o.o2]);
    float r = 0.f;
    switch (op) {
      case Binary::add: r = x + y; break;
      case Binary::sub: r = x - y; break;
      case Binary::mul: r = x * y; break;
      case Binary::div: r = x / y; break;
    }
    out[o.o0] = st<T>(r);
  }
}

template <typename T>
__global__ void embedding_kernel(const T* weight, const int64_t* ids, float* out, int64_t n, int64_t D) {
  const int64_t total = n * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = i / D, d = i % D;
    out[i] = ld(weight[ids[t] * D + d]);
  }
}

template <typename T>
__global__ void bias_kernel(T* out, const float* bias, int64_t rows, int64_t cols) {
  const int64_t total = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = st<T>(ld(out[i]) + bias[i % cols]);
}

// Same-dtype copies of non-float dtypes move raw elements of their size.
template <typename F>
void dispatch_bytes(size_t size, F&& f) {
  if (size == 8) return f(int64_t{});
  if (size == 4) return f(int32_t{});
  if (size == 2) return f(int16_t{});
  return f(int8_t{});
}

bool is_act(DType t) { return t == DType::f32 || t == DType::bf16 || t == DType::f16; }

}  // namespace

void copy(const Walk& w, void* out, DType dt, const void* in, DType stt) {
  if (w.n == 0) return;
  if (dt == stt) {
    dispatch_bytes(dtype_size(dt), [&](auto tag) {
      using T = decltype(tag);
      copy_kernel<T, T><<<blocks_for(w.n), 256>>>(w, static_cast<T*>(out), static_cast<const T*>(in));
    });
  } else {
    SSM_CHECK(is_act(dt) && is_act(stt), "copy_",
              std::string("no CUDA cast from ") + dtype_name(stt) + " to " + dtype_name(dt) +
                  " (casts on the GPU are between f32, bf16 and f16)");
    dispatch_act("copy_", dt, [&](auto to) {
      using TO = decltype(to);
      dispatch_act("copy_", stt, [&](auto ti) {
        using TI = decltype(ti);
        copy_kernel<TO, TI><<<blocks_for(w.n), 256>>>(w, static_cast<TO*>(out), static_cast<const TI*>(in));
      });
    });
  }
  check_launch("copy_");
}

void unary(Unary op, DType dt, const void* x, void* y, int64_t n, float param) {
  if (n == 0) return;
  dispatch_act("unary", dt, [&](auto tag) {
    using T = decltype(tag);
    unary_kernel<T><<<blocks_for(n), 256>>>(op, static_cast<const T*>(x), static_cast<T*>(y), n, param);
  });
  check_launch("unary");
}

void binary(Binary op, DType dt, const Walk& w, void* out, const void* a, const void* b) {
  if (w.n == 0) return;
  dispatch_act("binary", dt, [&](auto tag) {
    using T = decltype(tag);
    binary_kernel<T>
        <<<blocks_for(w.n), 256>>>(op, w, static_cast<T*>(out), static_cast<const T*>(a), static_cast<const T*>(b));
  });
  check_launch("binary");
}

void embedding(DType wdt, const void* weight, const int64_t* ids, float* out, int64_t n, int64_t D) {
  if (n * D == 0) return;
  dispatch_act("embedding", wdt, [&](auto tag) {
    using T = decltype(tag);
    embedding_kernel<T><<<blocks_for(n * D), 256>>>(static_cast<const T*>(weight), ids, out, n, D);
  });
  check_launch("embedding");
}

void add_bias(DType dt, void* out, const float* bias, int64_t rows, int64_t cols) {
  if (rows * cols == 0) return;
  dispatch_act("linear", dt, [&](auto tag) {
    using T = decltype(tag);
    bias_kernel<T><<<blocks_for(rows * cols), 256>>>(static_cast<T*>(out), bias, rows, cols);
  });
  check_launch("linear");
}

}  // namespace ssm::cuda
