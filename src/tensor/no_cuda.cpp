// Built only without CUDA: the device entry points say plainly that this build has no CUDA.
#ifndef SSM_HAVE_CUDA
#include <cstdint>

#include "ssm/base.h"

namespace ssm {
void* cuda_alloc(size_t) { fail_no_cuda("cuda"); }
void cuda_free(void*) {}
void cuda_memcpy(void*, const void*, size_t, bool, bool) { fail_no_cuda("cuda"); }
int cuda_device_count() { return 0; }
uint64_t cuda_alloc_calls() { return 0; }
void cuda_synchronize() {}
void cuda_set_device(int) { fail_no_cuda("cuda"); }
uint64_t cuda_peak_bytes() { return 0; }
uint64_t cuda_reserved_bytes() { return 0; }
void cuda_reset_peak() {}
void cuda_memset0(void*, size_t) { fail_no_cuda("cuda"); }
}  // namespace ssm
#endif
