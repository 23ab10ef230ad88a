// CUDA device memory for Storage: allocation, copies, device queries. Errors name the CUDA call.
// Freed blocks are cached by size and handed out again (cudaMalloc / cudaFree cost tens of
// microseconds and cudaFree synchronises the device); cuda_alloc_calls counts the requests. Work runs
// on the default stream (the decode step's own stream is ordered with it by events both ways), so a
// reused block is never touched by work still in flight from its previous owner.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>

#include "ssm/base.h"

namespace ssm {

namespace {
void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail("cuda", std::string(what) + ": " + cudaGetErrorString(e));
}

struct BlockCache {
  std::mutex m;
  std::multimap<size_t, void*> free;          // size -> cached block
  std::unordered_map<void*, size_t> size_of;  // every block we hold, cached or in use
};
BlockCache& cache() {
  static BlockCache* c = new BlockCache;  // never destroyed: blocks live until the process ends
  return *c;
}
uint64_t g_in_use = 0, g_peak = 0,
         g_reserved = 0;  // bytes held by tensors / obtained from cudaMalloc (under cache().m)
// Returns every cached block to the driver (before retrying an allocation that ran out of memory).
void release_cached(BlockCache& c) {
  for (auto& [bytes, p] : c.free) {
    cudaFree(p);
    c.size_of.erase(p);
    g_reserved -= bytes;
  }
  c.free.clear();
}
}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
  return n;
}

namespace {
std::atomic<uint64_t> g_alloc_calls{0};
}

uint64_t cuda_alloc_calls() { return g_alloc_calls.load(); }

uint64_t cuda_peak_bytes() {
  std::lock_guard<std::mutex> lock(cache().m);
  return g_peak;
}
uint64_t cuda_reserved_bytes() {
  std::lock_guard<std::mutex> lock(cache().m);
  return g_reserved;
}
void cuda_reset_peak() {
  std::lock_guard<std::mutex> lock(cache().m);
  g_peak = g_in_use;
}

void cuda_memset0(void* p, size_t bytes) {
  if (bytes) check(cudaMemsetAsync(p, 0, bytes), "cudaMemsetAsync");
}

void cuda_synchronize() { check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

void cuda_set_device(int i) {
  const int n = cuda_device_count();
  SSM_CHECK(i >= 0 && i < n, "cuda",
            "GPU " + std::to_string(i) + " requested but " + std::to_string(n) + " are visible");
  check(cudaSetDevice(i), "cudaSetDevice");
}

void* cuda_alloc(size_t bytes) {
  g_alloc_calls.fetch_add(1);
  SSM_CHECK(cuda_device_count() > 0, "cuda", "no CUDA device is visible (run on a machine with an NVIDIA GPU)");
  bytes = (bytes + 511) / 512 * 512;  // 0 -> 0: a 512-byte block below
  if (bytes == 0) bytes = 512;
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.m);
  auto hit = c.free.find(bytes);
  if (hit != c.free.end()) {
    void* p = hit->second;
    c.free.erase(hit);
    g_in_use += bytes;
    g_peak = g_in_use > g_peak ? g_in_use : g_peak;
    return p;
  }
  void* p = nullptr;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    release_cached(c);
    e = cudaMalloc(&p, bytes);
  }
  if (e == cudaErrorMemoryAllocation) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    fail("cuda", "out of device memory allocating " + std::to_string(bytes) + " bytes (" +
                     std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) + " MiB)");
  }
  check(e, "cudaMalloc");
  c.size_of[p] = bytes;
  g_reserved += bytes;
  g_in_use += bytes;
  g_peak = g_in_use > g_peak ? g_in_use : g_peak;
  return p;
}

void cuda_free(void* p) {
  if (!p) return;
  BlockCache& c = cache();
  std::lock_guard<std::mutex> lock(c.m);
  auto it = c.size_of.find(p);
  if (it == c.size_of.end()) return;
  c.free.emplace(it->second, p);
  g_in_use -= it->second;
}

void cuda_memcpy(void* dst, const void* src, size_t bytes, bool dst_on_device, bool src_on_device) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
}

}  // namespace ssm
