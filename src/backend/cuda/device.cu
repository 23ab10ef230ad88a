// CUDA device memory for Storage: allocation, copies, device queries. Errors name the CUDA call.
#include <cuda_runtime.h>

#include <string>

#include "ssm/base.h"

namespace ssm {

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("cuda", std::string(what) + ": " + cudaGetErrorString(e));
}
}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

void* cuda_alloc(size_t bytes) {
  SSM_CHECK(cuda_device_count() > 0, "cuda", "no CUDA device is visible (run on a machine with an NVIDIA GPU)");
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (e == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("cuda", "out of device memory allocating " + std::to_string(bytes) + " bytes (" +
                     std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB)");
  }
  check(e, "cudaMalloc");
  return p;
}

void cuda_free(void* p) {
  if (p) cudaFree(p);
}

void cuda_memcpy(void* dst, const void* src, size_t bytes, bool dst_on_device, bool src_on_device) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
}

}  // namespace ssm
