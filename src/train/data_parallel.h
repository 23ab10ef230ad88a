// Data-parallel training over NCCL, one process per GPU: every rank holds the whole model and the
// AdamW state, takes an equal share of each global batch, and the gradients are summed over the
// ranks (each rank's loss is scaled by 1/world, so the sum is the gradient of the global-batch mean)
// before clipping and the optimizer step, which then agree bit for bit on every rank. Rank 0 alone
// writes the log, the checkpoints and the export; a checkpoint holds no rank count, so a run resumes
// on any number of GPUs that divides the batch.
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dist/dist.h"
#include "dist/nccl.h"
#include "ssm/tensor.h"

namespace ssm::train {

class DataParallel {
 public:
  using Params = std::vector<std::pair<std::string, Tensor>>;
  // Null when no launcher set RANK/WORLD_SIZE (one process, no NCCL). Otherwise selects GPU
  // LOCAL_RANK and joins the NCCL communicator (rank 0's id travels over TCP). `gpus` > 0 (from
  // --gpus) must equal the world size.
  static std::unique_ptr<DataParallel> from_environment(int gpus);
  int rank() const { return env_.rank; }
  int world() const { return env_.world; }
  bool main() const { return env_.rank == 0; }
  // Rows of a global batch (dim 0) this rank trains on; `global` must divide evenly.
  Tensor shard(const Tensor& batch) const;
  // Every rank takes rank 0's parameter values.
  void broadcast(const Params& params);
  // Sums every parameter's gradient over the ranks, as one NCCL group.
  void all_reduce_grads(const Params& params);
  // Σ over ranks of each value (the step's loss and whether any rank wants to stop).
  std::vector<double> all_reduce_sum(std::vector<double> values);

 private:
  explicit DataParallel(const dist::Env& env);
  dist::Env env_;
  std::unique_ptr<dist::Nccl> nccl_;
};

}  // namespace ssm::train
