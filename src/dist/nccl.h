// Internal: the NCCL collectives data-parallel training uses, on device buffers of the current GPU.
// NCCL is loaded at run time (libnccl.so.2, or the file $SSM_NCCL_LIB names), so neither the build
// nor single-GPU use depends on it; its absence is a clear error when several GPUs are asked for.
// NVLink multicast (NVLS) is kept off (NCCL_NVLS_ENABLE=0) as the shared machines require.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ssm::dist {

class Nccl {
 public:
  // The 128-byte unique id rank 0 makes and every rank passes to the constructor.
  static std::string make_id();
  // Joins the communicator of `world` ranks as `rank` (collective: every rank must call it).
  Nccl(const std::string& id, int rank, int world);
  ~Nccl();
  Nccl(const Nccl&) = delete;
  Nccl& operator=(const Nccl&) = delete;
  // In place on the default stream, ordered with the kernels around it: data = Σ over ranks of data.
  void all_reduce_sum(float* data, int64_t n);
  void all_reduce_sum(double* data, int64_t n);
  // Several buffers as one NCCL group (NCCL fuses them into few transfers: the gradient buckets).
  void all_reduce_sum(const std::vector<std::pair<float*, int64_t>>& buffers);
  // data = rank root's data.
  void broadcast(float* data, int64_t n, int root);
  int rank() const { return rank_; }
  int world() const { return world_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_ = 1;
};

}  // namespace ssm::dist
