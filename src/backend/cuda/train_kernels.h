// Internal: launch functions of the CUDA kernels that training needs beyond the forward ones
// (kernels.h): the backward of each op, the loss, reductions, and the optimizer. Called by
// src/ops/cuda_train.cpp and src/train on device pointers. Activations are f32, bf16 or f16 (`dt`);
// parameters, their gradients and optimizer state are f32; math is fp32 (sums of squares f64).
// Everything runs on the default stream. Every reduction is deterministic: no float atomics; sums
// across blocks go through per-block partials in a fixed layout, added in a fixed order, so the same
// inputs give bit-identical results on every run.
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::cuda {

// Row-major C [M, N] = op(A) [M, K] · op(B) [K, N] through cuBLASLt (fp32 accumulation); A and B of
// `in`, C of `out` (f32 output from bf16/f16 inputs allowed). trans_a: A is stored [K, M]; trans_b:
// B is stored [N, K]. f32 inputs compute in exact fp32 unless tf32. `stream` (a cudaStream_t) null:
// the default. (src/backend/cuda/gemm.cu; linear's gemm() of kernels.h is this with trans_b.)
void matmul(DType in, DType out, const void* A, bool trans_a, const void* B, bool trans_b, void* C, int64_t M,
            int64_t N, int64_t K, bool tf32, void* stream = nullptr);

enum class UnaryGrad { silu, softplus };
// dx = g * f'(x) over n contiguous elements of dt; `param` is softplus's threshold.
void unary_grad(UnaryGrad op, DType dt, const void* x, const void* g, void* dx, int64_t n, float param);
// y = x * a + b over n contiguous elements.
void affine(DType dt, const void* x, void* y, int64_t n, float a, float b);

// out[o] = scale * Σ_j in[koff(o) + roff(j)] for the kept index o (row-major over kshape) and the
// reduced index j (row-major over rshape); out contiguous [nout] of dt (in's dtype), fp32 sums.
struct ReduceWalk {
  int nk = 0, nr = 0;
  int64_t kshape[8] = {}, kstride[8] = {}, rshape[8] = {}, rstride[8] = {};
  int64_t nout = 1, nred = 1;
};
void reduce_sum(DType dt, const ReduceWalk& w, const void* in, void* out, float scale);

// out[i] = (accumulate ? out[i] : 0) + Σ_p part[p * stride + i] for i < n, p < P: a fixed-order sum
// (p ascending within each of 8 interleaved subsets, then the subsets in order).
void sum_partials(const float* part, int64_t P, int64_t stride, int64_t n, float* out, bool accumulate);

// out[c] = Σ_r g[r, c] (f32 out, written; g of dt [rows, cols]).
void col_sum(DType dt, const void* g, float* out, int64_t rows, int64_t cols);
// dw[v, :] = Σ_{t: ids[t] = v} g[t, :] in ascending t (g f32 [n, D]; ids in [0, V); dw f32 [V, D],
// zeroed by the caller: rows of ids that do not occur stay zero). A stable radix sort of the ids
// groups the positions; one block sums each id's rows.
void embedding_backward(const float* g, const int64_t* ids, float* dw, int64_t n, int64_t D, int64_t V);

// Backward of rms_norm / rms_norm_add per row of C channels. The forward's normalised input is r
// (f32, the residual output of the fused add) or x (dt, plain rms_norm): exactly one is non-null.
// dout (dt) is the gradient of out; dres_out (f32, may be null) that of the residual output.
// Writes dx (dt) and dres_in (f32) = the gradient of the norm's input (either may be null) and
// dw (f32 [C], may be null; written).
void rms_norm_backward(DType dt, const void* x, const float* r, const float* w, const void* dout, const float* dres_out,
                       void* dx, float* dres_in, float* dw, int64_t rows, int64_t C, float eps);

// Backward of the depthwise causal conv (kernels.h conv1d): dy (dt [B, L, D]) and dhT (dt
// [B, W-1, D], may be null) → dx (dt), dh0 (dt [B, W-1, D], may be null), dw (f32 [D, W]) and dbias
// (f32 [D], may be null), all written. dy2 (dt, may be null): a second gradient of y, added to dy
// (the conv output feeds two consumers in the Mamba-1 mixer).
void conv1d_backward(DType dt, const void* x, const float* w, const float* bias, const void* h0, const void* dy,
                     const void* dy2, const void* dhT, void* dx, void* dh0, float* dw, float* dbias, int64_t B,
                     int64_t L, int64_t D, int64_t W, bool silu);

// Cross-entropy over rows of V logits (dt): lse[i] = logsumexp(row i) and row_loss[i] = lse[i] -
// logits[i, t_i], 0 where t_i == ignore (f32 [N] each). Targets are already range-checked.
void cross_entropy_fwd(DType dt, const void* logits, const int64_t* targets, int64_t ignore, float* lse,
                       float* row_loss, int64_t N, int64_t V);
// dlogits (dt) = (softmax - onehot) * g[0] * inv_count on scored rows, 0 on ignored rows (g: device f32 scalar).
void cross_entropy_bwd(DType dt, const void* logits, const int64_t* targets, int64_t ignore, const float* lse,
                       const float* g, float inv_count, void* dlogits, int64_t N, int64_t V);
// (log-)softmax over rows of n contiguous elements and its backward (from the output y).
void softmax_fwd(DType dt, const void* x, void* y, int64_t rows, int64_t n, bool log);
void softmax_bwd(DType dt, const void* y, const void* g, void* dx, int64_t rows, int64_t n, bool log);

// Optimizer: acc[0] += Σ x² (f64 accumulator on the device; per-block partials, then one block adds
// them in order); x *= s; one AdamW step of one tensor
// (the same formulas as the CPU AdamW in src/train/optim.cpp).
void sum_squares(const float* x, int64_t n, double* acc);
void scale(float* x, int64_t n, float s);
struct AdamWStep {
  float lr_bc1, b1, b2, eps, wd, inv_sqrt_bc2;  // lr / (1 - b1^t), ..., lr * weight_decay, 1 / sqrt(1 - b2^t)
};
void adamw(float* p, const float* g, float* m, float* v, int64_t n, const AdamWStep& s);

}  // namespace ssm::cuda
