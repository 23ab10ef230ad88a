// Internal: the ops on GPU tensors (src/ops/cuda_ops.cpp), called by each op when its main input is
// on the GPU. Forward only: with autograd recording they fail naming the op. Activations may be
// f32, bf16 or f16; parameters (norm weights, conv weights and biases, linear biases) are f32.
#pragma once
#include "ssm/ops.h"

namespace ssm::detail {

enum class CudaUnary { neg, exp, silu, softplus };
enum class CudaBinary { add, sub, mul, div };

Tensor unary_cuda(const char* op, CudaUnary f, const Tensor& x, double param = 0);
// a and b of the same dtype, NumPy broadcasting.
Tensor binary_cuda(const char* op, CudaBinary f, const Tensor& a, const Tensor& b);
// x [..., I] (f32/bf16/f16) · w [O, I]ᵀ (+ bias [O], f32) → [..., O] of x's dtype. When x and w
// differ, the f32 one is rounded to the other's half dtype (as a half-precision model in PyTorch).
Tensor linear_cuda(const Tensor& x, const Tensor& w, const Tensor& bias);
// ids (i64/i32, CPU or GPU) gathered from weight [V, D] → f32 [..., D] on the GPU.
Tensor embedding_cuda(const Tensor& weight, const Tensor& ids);
// rms_norm (residual undefined, add false) or the fused add: residual (f32) = x + residual, out of x's dtype.
NormAdd rms_norm_cuda(const char* op, const Tensor& x, const Tensor& residual, const Tensor& w, double eps, bool add);
// x [B, L, D] activations; w [D, W], bias [D] f32; initial_state [B, W-1, D] of x's dtype.
Conv1dOut causal_conv1d_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& initial_state,
                             bool silu);
Tensor concat_cuda(const std::vector<Tensor>& xs, int64_t dim);

// TF32 for f32 GEMMs on the GPU: off unless the environment sets SSM_CUDA_TF32=1.
bool cuda_tf32();

}  // namespace ssm::detail
