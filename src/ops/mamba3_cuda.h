// Internal: the Mamba-3 SISO scan on GPU tensors (src/ops/mamba3_cuda.cpp, kernel in
// src/backend/cuda/mamba3.cu), called by mamba3_siso_scan when v is on the GPU; arguments already checked
// (q, k, z of v's activation dtype; the other inputs of it or f32). Forward only: with autograd recording
// it fails naming the op. y has v's dtype; the final states are f32.
#pragma once
#include "ssm/ops_mamba3.h"

namespace ssm::detail {

Mamba3SisoOut mamba3_siso_cuda(const Mamba3SisoArgs& a);

}  // namespace ssm::detail
