// ssm.cpp — base types: errors, dtypes, devices, threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace ssm {

// Every user-facing failure is an ssm::Error whose message reads "[where] what went wrong".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

[[noreturn]] void fail(const std::string& where, const std::string& what);

// SSM_CHECK(cond, "op", "message " + std::to_string(x)) throws ssm::Error("[op] message ...").
#define SSM_CHECK(cond, where, what)           \
  do {                                         \
    if (!(cond)) ::ssm::fail((where), (what)); \
  } while (0)

enum class DType : uint8_t { f64, f32, f16, bf16, i64, i32, i8, u8 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);                     // "f32", ...
const char* dtype_safetensors_name(DType t);         // "F32", ...
DType dtype_from_safetensors(const std::string& s);  // throws on unknown
bool dtype_is_float(DType t);

enum class Device : uint8_t { cpu, cuda };
const char* device_name(Device d);
// GPU queries (src/backend/cuda/device.cu; in a build without CUDA: 0 devices, 0 calls, no-op).
int cuda_device_count();         // visible CUDA devices
uint64_t cuda_alloc_calls();     // device allocations requested so far (cached blocks included)
void cuda_synchronize();         // waits for all queued GPU work
void cuda_set_device(int i);     // this thread's GPU (0 .. count-1; data-parallel ranks pick LOCAL_RANK)
uint64_t cuda_peak_bytes();      // the most device memory held by tensors at once (since start or the last reset)
uint64_t cuda_reserved_bytes();  // device memory obtained from the driver (tensors + freed blocks kept for reuse)
void cuda_reset_peak();          // the peak restarts from what tensors hold now
// Fails naming `where`: "this build of ssm has no CUDA backend (rebuild with nvcc installed)".
[[noreturn]] void fail_no_cuda(const char* where);

// Half-precision scalars (storage formats; math is done in fp32).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {  // round to nearest even, NaN kept quiet
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// Thread pool. The number of threads comes from set_num_threads(), else SSM_THREADS, else the
// hardware concurrency.
int num_threads();
void set_num_threads(int n);
// Calls fn(begin, end) on disjoint ranges covering [0, n) from up to num_threads() threads; ranges
// are at least `grain` long. Runs inline when n <= grain or one thread. Exceptions propagate.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

// The largest resident set size this process has had so far, in bytes (getrusage ru_maxrss).
int64_t peak_rss_bytes();

}  // namespace ssm
