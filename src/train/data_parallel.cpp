// DataParallel (data_parallel.h) on top of src/dist.
#include "train/data_parallel.h"

#include <set>

#include "ssm/base.h"

namespace ssm::train {
namespace {
constexpr const char* kOp = "train";

float* grad_buffer(const std::string& name, Tensor& p, std::set<const void*>& seen) {
  Tensor g = p.grad();
  SSM_CHECK(g.defined(), kOp, "parameter '" + name + "' received no gradient (all ranks must use every parameter)");
  if (!seen.insert(g.raw_data()).second) {  // autograd handed one buffer to two parameters: reduce it once each
    g = g.clone();
    p.set_grad(g);
    seen.insert(g.raw_data());
  }
  SSM_CHECK(g.device() == Device::cuda && g.dtype() == DType::f32 && g.is_contiguous(), kOp,
            "the gradient of '" + name + "' must be a contiguous f32 GPU tensor for the all-reduce");
  return static_cast<float*>(g.raw_data());
}
}  // namespace

DataParallel::DataParallel(const dist::Env& env) : env_(env) {
  cuda_set_device(env.local_rank);
  const std::string id = dist::broadcast_bytes(env, env.rank == 0 ? dist::Nccl::make_id() : std::string());
  nccl_ = std::make_unique<dist::Nccl>(id, env.rank, env.world);
}

std::unique_ptr<DataParallel> DataParallel::from_environment(int gpus) {
  const dist::Env env = dist::env_from_environment();
  if (!env.distributed) return nullptr;
  SSM_CHECK(gpus <= 0 || gpus == env.world, kOp,
            "--gpus " + std::to_string(gpus) + " but the launcher started " + std::to_string(env.world) + " processes");
  SSM_CHECK(cuda_device_count() > 0, kOp,
            "data-parallel training needs GPUs; none is visible to rank " + std::to_string(env.rank));
  return std::unique_ptr<DataParallel>(new DataParallel(env));
}

Tensor DataParallel::shard(const Tensor& batch) const {
  const dist::Shard s = dist::shard(batch.size(0), env_.rank, env_.world);
  return env_.world == 1 ? batch : batch.slice(0, s.begin, s.end).contiguous();
}

void DataParallel::broadcast(const Params& params) {
  for (const auto& [name, p] : params) {
    SSM_CHECK(p.device() == Device::cuda && p.dtype() == DType::f32 && p.is_contiguous(), kOp,
              "parameter '" + name + "' must be a contiguous f32 GPU tensor to be broadcast");
    nccl_->broadcast(static_cast<float*>(p.raw_data()), p.numel(), 0);
  }
}

void DataParallel::all_reduce_grads(const Params& params) {
  std::vector<std::pair<float*, int64_t>> bufs;
  std::set<const void*> seen;
  for (auto [name, p] : params) bufs.push_back({grad_buffer(name, p, seen), p.numel()});
  nccl_->all_reduce_sum(bufs);
}

std::vector<double> DataParallel::all_reduce_sum(std::vector<double> values) {
  if (env_.world == 1) return values;
  Tensor t = Tensor::from_vector(values, {int64_t(values.size())}).to(Device::cuda);
  nccl_->all_reduce_sum(static_cast<double*>(t.raw_data()), t.numel());
  return t.to(Device::cpu).to_vector_f64();
}

}  // namespace ssm::train
