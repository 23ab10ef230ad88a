// Device helpers shared by the forward kernels: fp32 loads/stores of the activation dtypes, launch
// checks and the host-side dtype dispatch.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>
#include <type_traits>

#include "ssm/base.h"

namespace ssm {
void* cuda_alloc(size_t bytes);  // the caching allocator of the GPU tensors (device.cu)
void cuda_free(void* p);
}  // namespace ssm

namespace ssm::cuda {

// Temporary device memory for one launch sequence (the block goes back to the tensor cache on
// destruction; safe on the one default stream: later work queued after this launch reuses it).
template <typename E>
struct Scratch {
  E* p = nullptr;
  explicit Scratch(int64_t n) : p(static_cast<E*>(ssm::cuda_alloc(size_t(n < 1 ? 1 : n) * sizeof(E)))) {}
  ~Scratch() { ssm::cuda_free(p); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
};

__device__ inline float ld(float x) { return x; }
__device__ inline float ld(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ inline float ld(__half x) { return __half2float(x); }
template <typename T>
__device__ inline T st(float x);
template <>
__device__ inline float st<float>(float x) {
  return x;
}
template <>
__device__ inline __nv_bfloat16 st<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ inline __half st<__half>(float x) {
  return __float2half_rn(x);
}

inline void check_launch(const char* op) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail(op, std::string("CUDA kernel launch failed: ") + cudaGetErrorString(e));
}

// Blocks of 256 threads covering n elements (grid-stride loops cover the rest).
inline unsigned blocks_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  return unsigned(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

// Calls f(T{}) with the device type T of a float activation dtype (use decltype of the argument).
template <typename F>
void dispatch_act(const char* op, DType t, F&& f) {
  if (t == DType::f32) return f(float{});
  if (t == DType::bf16) return f(__nv_bfloat16{});
  if (t == DType::f16) return f(__half{});
  fail(op, std::string("no CUDA kernel for dtype ") + dtype_name(t) + " (expected f32, bf16 or f16)");
}

}  // namespace ssm::cuda
