// Internal: one-row forms of the norm kernels (implemented in norm.cpp, which runs them for every
// row of its ops), for callers that work on single rows without tensors: the fused decode step.
#pragma once
#include <cstdint>

namespace ssm::kernels {

// y[C] = RMSNorm of x over groups of `group` channels, times w. With a gate z: x ⊙ silu(z) is
// normalised (norm_before_gate false), or the normalised x is multiplied by silu(z) (true).
// tmp: C floats of scratch (used when z && !norm_before_gate).
void rms_norm_row(const float* x, const float* z, const float* w, float* y, int64_t C, int64_t group, double eps,
                  bool norm_before_gate, float* tmp);
// y[C] = LayerNorm of x times w plus b (b may be null). tmp: C floats of scratch.
void layer_norm_row(const float* x, const float* w, const float* b, float* y, int64_t C, double eps, float* tmp);

}  // namespace ssm::kernels
