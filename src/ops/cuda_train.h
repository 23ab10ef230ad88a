// Internal: what GPU training adds to the ops on GPU tensors (src/ops/cuda_train.cpp): the ops that
// only training needs (scalar maps, sums, softmax, cross-entropy; each records its backward), and the
// backward passes of the forward ops of cuda_ops.cpp, which their autograd records call. Gradients
// come back in the dtype of their input (activations f32/bf16/f16; parameters f32).
#pragma once
#include <vector>

#include "ops/cuda_ops.h"

namespace ssm::detail {

// ---- ops (called by src/ops/*.cpp when the input is on the GPU) ----
// y = x·a + b (add_scalar: a = 1; mul_scalar: b = 0).
Tensor affine_cuda(const char* op, const Tensor& x, double a, double b);
// sum (mean: scaled by 1 / count) over the dims flagged in `red`; any strides.
Tensor sum_cuda(const char* op, const Tensor& x, const std::vector<bool>& red, bool keepdim, bool mean);
// softmax / log_softmax over the last dimension.
Tensor softmax_cuda(const char* op, const Tensor& x, int64_t dim, bool log);
// logits [..., V] (f32/bf16/f16) and targets i64 [...] (CPU or GPU) → f32 scalar on the GPU.
Tensor cross_entropy_cuda(const Tensor& logits, const Tensor& targets, int64_t ignore_index);

// ---- backward of the forward ops (called from the records in src/ops/cuda_ops.cpp) ----
// x: the forward input (silu, softplus), y: its output (exp); the other may be undefined.
Tensor unary_backward_cuda(CudaUnary f, const Tensor& x, const Tensor& y, const Tensor& g, double param);
// {grad a, grad b} summed down to the input shapes (undefined where not needed).
// a, b: the inputs (mul, div; else undefined), out: the output (div); a_shape, b_shape: the inputs' shapes.
std::vector<Tensor> binary_backward_cuda(CudaBinary f, const Tensor& a, const Tensor& b, const Tensor& out,
                                         const Tensor& g, const Shape& a_shape, const Shape& b_shape, bool need_a,
                                         bool need_b);
struct LinearSaved {
  Tensor x, w;  // [R, I] (undefined unless dw is needed), [O, I] (undefined unless dx is); contiguous, of cdt
  Shape x_shape;
  DType cdt, x_dtype, w_dtype;  // the GEMM dtype, the dtypes of the op's x and w
  bool gx, gw, gb;
};
// {dx, dw, dbias} for y [R, O] = x [R, I] · w [O, I]ᵀ + bias.
std::vector<Tensor> linear_backward_cuda(const LinearSaved& s, const Tensor& g, int64_t R, int64_t I, int64_t O);
// dweight f32 [V, D] from g [..., D] and ids (i64 on the GPU, [n]).
Tensor embedding_backward_cuda(const Tensor& g, const Tensor& ids, int64_t V);
// x (plain rms_norm) or r (the f32 residual output of the fused add): the normalised input; x_dtype:
// the dtype of the op's x. Returns {dx, dresidual, dw} (dresidual only when has_res).
std::vector<Tensor> rms_norm_backward_cuda(const Tensor& x, const Tensor& r, const Tensor& w, double eps, DType x_dtype,
                                           bool has_res, bool need_w, const Tensor& dout, const Tensor& dres_out);
// Returns {dx, dw, dbias, dinitial_state}. dy2 (may be undefined): a second part of y's gradient,
// added to dy inside the kernel.
std::vector<Tensor> conv1d_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& h0,
                                         bool silu, const Tensor& dy, const Tensor& dhT, const Tensor& dy2 = Tensor());

}  // namespace ssm::detail
