// Internal: Model::step of a Mamba-1 / Falcon-Mamba model on the GPU (built with CUDA only).
#pragma once
#include <span>
#include <vector>

#include "ssm/model.h"

namespace ssm::cuda {

struct Mamba1StepLayer {
  Tensor norm_w, in_proj, in_proj_b, conv_w, conv_b, x_proj, dt_proj, dt_proj_b, A_log, D, out_proj, out_proj_b;
};
struct Mamba1StepWeights {
  Tensor embedding, lm_head, norm_f;
  std::vector<Mamba1StepLayer> layers;
};

// One token per sequence through the whole model on the GPU: embedding; per layer RMSNorm, in_proj
// with the conv update + SiLU fused, x_proj, the SSM update (dt_proj, softplus, D, z gate), out_proj
// with the residual add fused (GEMV kernels for B <= kGemvMaxBatch; above, cuBLASLt GEMMs and separate
// add + norm and conv kernels); final norm and head. Kernels are launched as programmatic dependents
// (decode_launch.cuh) so each prefetches its weights while the previous one finishes. Buffers, the state
// (adopted into buffers of fixed address: a state that forward() replaced is copied in) and a CUDA
// graph of the whole step live in the state's scratch: the first call on a state (or batch size)
// allocates, runs the step and captures it; later calls copy the ids in and replay the graph.
// SSM_CUDA_GRAPHS=0 in the environment runs the kernels one by one instead (debugging).
// Returns the logits f32 [B, V] on the GPU, valid until the next step on the state.
const Tensor& mamba1_step(const ModelConfig& cfg, const Mamba1StepWeights& w, std::span<const int64_t> ids,
                          InferenceState& state);

}  // namespace ssm::cuda
