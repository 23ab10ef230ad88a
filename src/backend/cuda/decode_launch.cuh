// The decode step's launches: programmatic dependent launch (Hopper). A kernel launched this way may
// start while its predecessor in the stream is finishing; it must call pdl_wait() before touching
// anything the predecessor writes or reads-and-later-gets-overwritten (weights may be read before),
// and it lets its own successor start early with pdl_trigger(). pdl_wait() waits for the whole
// predecessor grid and its memory, so triggering early never changes results. SSM_CUDA_PDL=0 turns
// the attribute off (plain stream order).
#pragma once
#include <cstdlib>
#include <cstring>

#include "backend/cuda/common.cuh"

namespace ssm::cuda::decode {

__device__ inline void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ inline void pdl_trigger() { asm volatile("griddepcontrol.launch_dependents;" :::); }

inline bool pdl_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("SSM_CUDA_PDL");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return on;
}

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, void* stream, Args&&... args) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = static_cast<cudaStream_t>(stream);
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) fail("step", std::string("CUDA kernel launch failed: ") + cudaGetErrorString(e));
}

}  // namespace ssm::cuda::decode
