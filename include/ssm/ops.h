// ssm.cpp — every op, declared once. Each op validates its arguments (errors name the op and the
// problem), runs the CPU fast kernel for f32 (or the reference loop for f64, or for f32 when
// reference mode is on), and records its backward when autograd needs it.
// Layouts are row-major, token-major: activations are [B, L, ...] as produced by linear().
#pragma once
#include <optional>
#include <vector>

#include "ssm/tensor.h"

namespace ssm {

// When on, f32 CPU ops use their reference loops (the test oracle) instead of the fast kernels.
bool reference_kernels();
void set_reference_kernels(bool on);
class ReferenceKernelsGuard {
 public:
  explicit ReferenceKernelsGuard(bool on) : prev_(reference_kernels()) { set_reference_kernels(on); }
  ~ReferenceKernelsGuard() { set_reference_kernels(prev_); }

 private:
  bool prev_;
};

// ---- elementwise (src/ops/elementwise.cpp). Float dtypes; binary ops broadcast like NumPy. ------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor silu(const Tensor& x);
Tensor gelu(const Tensor& x);                               // exact (erf) form
Tensor softplus(const Tensor& x, double threshold = 20.0);  // x where x > threshold
Tensor clamp(const Tensor& x, double lo, double hi);        // gradient 0 outside [lo, hi]

// ---- reductions (src/ops/reduce.cpp) -----------------------------------------------------------
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);  // {} = all
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor amax(const Tensor& x, int64_t dim, bool keepdim = false);    // gradient to the (first) max
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // i64, not differentiable

// ---- softmax and losses (src/ops/softmax.cpp) --------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
// logits [N, V] (or [..., V], flattened), targets i64 [N] (or [...]); mean over targets != ignore.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100);

// ---- shape ops (src/ops/shape.cpp) --------------------------------------------------------------
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int64_t dim);  // views
Tensor gather(const Tensor& x, int64_t dim, const Tensor& index);                            // torch.gather; index i64
// out = x with out[... index[i] ...] += src[i] along dim (torch.scatter_add, not in place).
Tensor scatter_add(const Tensor& x, int64_t dim, const Tensor& index, const Tensor& src);
// Tensor::to(dtype) is the cast op (differentiable between float dtypes).

// ---- linear algebra (src/ops/linear.cpp; BLAS) ---------------------------------------------------
// a [..., M, K] @ b [..., K, N] (batch dims equal, or b 2-D). trans_* transpose the last two dims.
Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a = false, bool trans_b = false);
// x [..., in] · w [out, in]ᵀ (+ bias [out]) → [..., out]. w may be f32, f16 or bf16 (widened).
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& bias = Tensor());
// weight [V, D], ids i64 or i32 [...] → [..., D]. Errors name the out-of-range id.
Tensor embedding(const Tensor& weight, const Tensor& ids);

// ---- normalisation (src/ops/norm.cpp) -------------------------------------------------------------
Tensor rms_norm(const Tensor& x, const Tensor& w, double eps);  // over the last dim
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, double eps);
// Fused residual add + norm: residual_out = x + residual (residual may be undefined: = x), kept
// in f32; out = norm(residual_out). Both outputs are differentiable.
struct NormAdd {
  Tensor out, residual;
};
NormAdd rms_norm_add(const Tensor& x, const Tensor& residual, const Tensor& w, double eps);
NormAdd layer_norm_add(const Tensor& x, const Tensor& residual, const Tensor& w, const Tensor& b, double eps);
// Mamba-2 gated RMSNorm: g = x * silu(z) (z may be undefined: g = x); the last dim is split into
// groups of `group_size` channels, each normalised by its own RMS, then scaled by w [C].
// norm_before_gate=true instead computes rmsnorm(x) * w * silu(z).
Tensor gated_rms_norm(const Tensor& x, const Tensor& z, const Tensor& w, int64_t group_size, double eps,
                      bool norm_before_gate = false);

// ---- depthwise causal conv1d (src/ops/conv.cpp) -----------------------------------------------------
// x [B, L, D], w [D, W] (2 <= W <= 8), bias [D] or undefined, initial_state [B, W-1, D] (the W-1
// inputs before x[0]) or undefined (zeros). y[b,t,d] = bias[d] + sum_k w[d,k] x[b,t-(W-1)+k,d];
// optional SiLU. final_state [B, W-1, D] = the last W-1 inputs (history included when L < W-1).
struct Conv1dOut {
  Tensor y, final_state;
};
Conv1dOut causal_conv1d(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& initial_state,
                        bool silu_activation);

// ---- selective scan, Mamba-1 (src/ops/selective_scan.cpp) -------------------------------------------
// u, delta [B, L, D]; A [D, N]; B, C [B, L, G, N] with D % G == 0 (channel d uses group d/(D/G));
// D_skip [D] or undefined; z [B, L, D] or undefined; delta_bias [D] or undefined;
// initial_state [B, D, N] or undefined (zeros).
//   Δ = delta (+ delta_bias); if delta_softplus Δ = softplus(Δ)
//   h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t u_t;  y_t = C_t·h_t + D u_t;  if z: y_t *= silu(z_t)
// Returns y [B, L, D] and final_state [B, D, N] (f32). Gradients flow to every input including
// initial_state, and through final_state.
struct ScanOut {
  Tensor y, final_state;
};
struct SelectiveScanArgs {
  Tensor u, delta, A, B, C, D, z, delta_bias, initial_state;
  bool delta_softplus = false;
};
ScanOut selective_scan(const SelectiveScanArgs& a);

// ---- SSD chunked scan, Mamba-2 (src/ops/ssd.cpp) ----------------------------------------------------
// x [B, L, H, P]; A [B, L, H] per-step log decay (Δ·A already folded in, <= 0);
// B, C [B, L, G, N] with H % G == 0 (head h uses group h/(H/G)); initial_state [B, H, P, N] or
// undefined. h_t = exp(A_t) h_{t-1} + x_t ⊗ B_t;  y_t = h_t C_t. Computed chunk-wise with
// `chunk_size` (equal to the sequential recurrence up to rounding).
// Returns y [B, L, H, P] and final_state [B, H, P, N]; differentiable in all inputs.
struct SSDArgs {
  Tensor x, A, B, C, initial_state;
  int64_t chunk_size = 64;
};
ScanOut ssd_scan(const SSDArgs& a);

}  // namespace ssm
