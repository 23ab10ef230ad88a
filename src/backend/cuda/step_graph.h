// Internal: the frame both fused GPU decode steps (mamba1_step.cpp, mamba2_step.cpp) run in: a stream
// of their own, ordered after earlier work on the default stream and before later work by events; the
// decode state adopted into per-layer buffers of fixed address (a state that forward() replaced is
// copied in); the token ids copied in; and the step's kernel sequence run once eagerly (cuBLASLt plans
// its GEMMs there), then captured as a CUDA graph and replayed on later calls.
// SSM_CUDA_GRAPHS=0 in the environment launches the kernels one by one instead (debugging).
#pragma once
#include <cuda_runtime.h>

#include <functional>
#include <span>
#include <vector>

#include "ssm/model.h"

namespace ssm::cuda {

void check_step(cudaError_t e, const char* what);  // fails "[step] what: <CUDA error>"

struct StepGraph {
  explicit StepGraph(int64_t batch);  // the stream, the events and the ids buffer
  virtual ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;
  // One step: adopts state.layers[i] = {conv, ssm} into conv[i], ssm[i], copies the ids in and runs
  // record(stream) (eagerly, or as the captured graph). Returns `logits`.
  const Tensor& run(InferenceState& state, std::span<const int64_t> token_ids,
                    const std::function<void(cudaStream_t)>& record);

  int64_t B = 0;
  cudaStream_t stream = nullptr;
  cudaEvent_t before = nullptr, after = nullptr;
  cudaGraphExec_t exec = nullptr;
  Tensor ids, logits;             // [B] i64; [B, V] f32, written by the recorded kernels
  std::vector<Tensor> conv, ssm;  // per layer: the decode state at fixed addresses
};

}  // namespace ssm::cuda
