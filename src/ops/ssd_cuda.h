// Internal: the Mamba-2 ops on GPU tensors (src/ops/ssd_cuda.cpp, kernels in src/backend/cuda/ssd.cu and
// mamba2_ops.cu), called by ssd_scan, gated_rms_norm and clamp when their input is on the GPU. Forward
// only: with autograd recording they fail naming the op.
#pragma once
#include "ssm/ops.h"

namespace ssm::detail {

// Arguments checked by ssd_scan (x, B, C of one activation dtype; A and initial_state of it or f32).
// y has x's dtype; final_state is f32. SSM_SSD_KERNEL=recurrent|chunked in the environment forces a
// kernel (tests); otherwise the chunked tensor-core kernel runs where it applies (bf16/f16).
ScanOut ssd_scan_cuda(const SSDArgs& a);
// x, z (or undefined) [..., C] activations of one dtype; w [C] f32. Output of x's dtype.
Tensor gated_rms_norm_cuda(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, double eps,
                           bool norm_before_gate);
Tensor clamp_cuda(const Tensor& x, double lo, double hi);

}  // namespace ssm::detail
