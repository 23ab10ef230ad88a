// Internal: the optimizer's GPU half (src/train/optim_cuda.cpp) for parameters and gradients that
// live on the GPU: f32, contiguous, one device. Stubs that fail in a build without CUDA.
#pragma once
#include <vector>

#include "ssm/tensor.h"

namespace ssm::train::gpu {

// Σ over the tensors of Σ x², accumulated in f64 on the device; one download.
double sum_squares(const std::vector<Tensor>& xs);
void scale_(const Tensor& x, float s);  // x *= s in place
// One AdamW step of p (in place) with gradient g and state m, v (in place); the CPU AdamW's formulas.
void adamw_(const Tensor& p, const Tensor& g, const Tensor& m, const Tensor& v, float lr_bc1, float b1, float b2,
            float eps, float wd, float inv_sqrt_bc2);

}  // namespace ssm::train::gpu
