// NCCL through dlopen (src/dist/nccl.h). Only the entry points below are resolved; their types come
// from the installed nccl.h, which also fixes the ABI we call. (Without nccl.h at build time,
// src/dist/nccl_none.cpp stands in.)
#ifdef SSM_HAVE_NCCL
#include "dist/nccl.h"

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <nccl.h>

#include <cstdlib>
#include <cstring>

#include "ssm/base.h"

namespace ssm::dist {
namespace {

constexpr const char* kOp = "nccl";

struct Api {
  void* lib = nullptr;
  decltype(&ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&ncclCommInitRank) comm_init_rank = nullptr;
  decltype(&ncclCommDestroy) comm_destroy = nullptr;
  decltype(&ncclAllReduce) all_reduce = nullptr;
  decltype(&ncclBroadcast) broadcast = nullptr;
  decltype(&ncclGetErrorString) error_string = nullptr;
  decltype(&ncclGroupStart) group_start = nullptr;
  decltype(&ncclGroupEnd) group_end = nullptr;
};

const Api& api() {
  static const Api a = [] {
    ::setenv("NCCL_NVLS_ENABLE", "0", 1);  // before NCCL reads its environment
    Api r;
    const char* path = std::getenv("SSM_NCCL_LIB");
    r.lib = ::dlopen(path && *path ? path : "libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
    SSM_CHECK(r.lib, kOp,
              std::string("cannot load NCCL (") + ::dlerror() +
                  "); several GPUs need it: install NCCL 2 (libnccl2) or set SSM_NCCL_LIB to libnccl.so.2");
    auto sym = [&](const char* name) {
      void* p = ::dlsym(r.lib, name);
      SSM_CHECK(p, kOp, std::string("the loaded NCCL has no ") + name + " (NCCL 2.x needed)");
      return p;
    };
    r.get_unique_id = reinterpret_cast<decltype(r.get_unique_id)>(sym("ncclGetUniqueId"));
    r.comm_init_rank = reinterpret_cast<decltype(r.comm_init_rank)>(sym("ncclCommInitRank"));
    r.comm_destroy = reinterpret_cast<decltype(r.comm_destroy)>(sym("ncclCommDestroy"));
    r.all_reduce = reinterpret_cast<decltype(r.all_reduce)>(sym("ncclAllReduce"));
    r.broadcast = reinterpret_cast<decltype(r.broadcast)>(sym("ncclBroadcast"));
    r.error_string = reinterpret_cast<decltype(r.error_string)>(sym("ncclGetErrorString"));
    r.group_start = reinterpret_cast<decltype(r.group_start)>(sym("ncclGroupStart"));
    r.group_end = reinterpret_cast<decltype(r.group_end)>(sym("ncclGroupEnd"));
    return r;
  }();
  return a;
}

void check(ncclResult_t e, const char* what) {
  if (e != ncclSuccess) fail(kOp, std::string(what) + ": " + api().error_string(e));
}

}  // namespace

struct Nccl::Impl {
  ncclComm_t comm = nullptr;
};

std::string Nccl::make_id() {
  ncclUniqueId id;
  check(api().get_unique_id(&id), "ncclGetUniqueId");
  return std::string(id.internal, sizeof(id.internal));
}

Nccl::Nccl(const std::string& id, int rank, int world) : impl_(std::make_unique<Impl>()), rank_(rank), world_(world) {
  SSM_CHECK(
      id.size() == NCCL_UNIQUE_ID_BYTES, kOp,
      "the NCCL id has " + std::to_string(id.size()) + " bytes, expected " + std::to_string(NCCL_UNIQUE_ID_BYTES));
  SSM_CHECK(world >= 1 && rank >= 0 && rank < world, kOp,
            "rank " + std::to_string(rank) + " of " + std::to_string(world));
  ncclUniqueId u;
  std::memcpy(u.internal, id.data(), sizeof(u.internal));
  check(api().comm_init_rank(&impl_->comm, world, u, rank), "ncclCommInitRank");
}

Nccl::~Nccl() {
  if (impl_ && impl_->comm) api().comm_destroy(impl_->comm);
}

void Nccl::all_reduce_sum(float* data, int64_t n) {
  check(api().all_reduce(data, data, size_t(n), ncclFloat32, ncclSum, impl_->comm, cudaStreamLegacy), "ncclAllReduce");
}

void Nccl::all_reduce_sum(double* data, int64_t n) {
  check(api().all_reduce(data, data, size_t(n), ncclFloat64, ncclSum, impl_->comm, cudaStreamLegacy), "ncclAllReduce");
}

void Nccl::all_reduce_sum(const std::vector<std::pair<float*, int64_t>>& buffers) {
  check(api().group_start(), "ncclGroupStart");
  for (const auto& [p, n] : buffers)
    check(api().all_reduce(p, p, size_t(n), ncclFloat32, ncclSum, impl_->comm, cudaStreamLegacy), "ncclAllReduce");
  check(api().group_end(), "ncclGroupEnd");
}

void Nccl::broadcast(float* data, int64_t n, int root) {
  check(api().broadcast(data, data, size_t(n), ncclFloat32, root, impl_->comm, cudaStreamLegacy), "ncclBroadcast");
}

}  // namespace ssm::dist
#endif
