// Built only without CUDA or without NCCL's header: data-parallel training needs both.
#if !defined(SSM_HAVE_CUDA) || !defined(SSM_HAVE_NCCL)
#include "dist/nccl.h"

#include "ssm/base.h"

namespace ssm::dist {
namespace {
[[noreturn]] void no_cuda() {
  fail("nccl", "this build of ssm has no CUDA backend or no NCCL header (rebuild with nvcc and nccl.h installed)");
}
}  // namespace
struct Nccl::Impl {};
std::string Nccl::make_id() { no_cuda(); }
Nccl::Nccl(const std::string&, int, int) { no_cuda(); }
Nccl::~Nccl() = default;
void Nccl::all_reduce_sum(float*, int64_t) { no_cuda(); }
void Nccl::all_reduce_sum(double*, int64_t) { no_cuda(); }
void Nccl::all_reduce_sum(const std::vector<std::pair<float*, int64_t>>&) { no_cuda(); }
void Nccl::broadcast(float*, int64_t, int) { no_cuda(); }
}  // namespace ssm::dist
#endif
