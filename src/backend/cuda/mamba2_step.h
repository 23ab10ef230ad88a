// Internal: Model::step of a Mamba-2 model on the GPU (built with CUDA only).
#pragma once
#include <span>
#include <vector>

#include "ssm/model.h"

namespace ssm::cuda {

struct Mamba2StepLayer {
  Tensor norm_w, in_proj, in_proj_b, conv_w, conv_b, dt_bias, A_log, D, gate_norm_w, out_proj, out_proj_b;
};
struct Mamba2StepWeights {
  Tensor embedding, lm_head, norm_f;
  std::vector<Mamba2StepLayer> layers;
};

// One token per sequence through the whole model on the GPU: embedding; per layer RMSNorm, in_proj,
// the conv update + SiLU over x, B, C, the SSD state update (softplus, clamp, D; ssd.h's ssd_step),
// the gated RMSNorm, out_proj with the residual add fused (GEMV kernels for B <= kGemvMaxBatch; above,
// cuBLASLt GEMMs); final norm and head. Needs cfg.gated_norm. Buffers, the state (adopted into
// buffers of fixed address; a state that forward() replaced is copied in) and a CUDA graph of the
// whole step live in the state's scratch: the first call on a state (or batch size) allocates, runs
// the step and captures it; later calls copy the ids in and replay the graph (no allocation).
// SSM_CUDA_GRAPHS=0 runs the kernels one by one. Returns the logits f32 [B, V] on the GPU, valid
// until the next step on the state.
const Tensor& mamba2_step(const ModelConfig& cfg, const Mamba2StepWeights& w, std::span<const int64_t> ids,
                          InferenceState& state);

}  // namespace ssm::cuda
