// Internal: the backward of mamba3_siso_scan (src/ops/mamba3_backward.cpp).
#pragma once
#include <vector>

#include "ssm/tensor.h"

namespace ssm::detail {

// in: the 15 contiguous inputs in Mamba3SisoArgs order (q, k, v, adt, dt, trap, q_bias, k_bias, angles,
// D, z, angle_state, ssm_state, k_state, v_state; optional ones may be undefined); grads: contiguous
// gradients of (y, angle_state, ssm_state, k_state, v_state), undefined = zero. Returns one gradient
// per input (undefined for an undefined input).
std::vector<Tensor> mamba3_siso_backward(const std::vector<Tensor>& in, const std::vector<Tensor>& grads);

}  // namespace ssm::detail
