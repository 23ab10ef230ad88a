// Internal: the Mamba-2 kernels on the GPU (ssd.cu: the SSD scan; mamba2_ops.cu: gated RMSNorm, clamp,
// the one-token SSD update of the decode step), called by src/ops/ssd_cuda.cpp and
// src/backend/cuda/mamba2_step.cpp on device pointers. Activations are f32, bf16 or f16 (`act`); the
// SSM state, the log decays and all math are fp32. `stream` is a cudaStream_t (null: the default).
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::cuda {

// h_t = exp(A_t) h_{t-1} + x_t ⊗ B_t; y_t = h_t C_t, per (batch, head) with state [P, N].
// x [B, L, H, P] (act); A [B, L, H] f32; B, C [B, L, G, N] (act), head h uses group h / (H/G);
// h0 [B, H, P, N] f32 or null (zeros); y [B, L, H, P] (act); hT [B, H, P, N] f32 (may equal h0).
struct SSDFwdArgs {
  DType act = DType::f32;
  const void* x = nullptr;
  const float* A = nullptr;
  const void *B = nullptr, *C = nullptr;
  const float* h0 = nullptr;
  void* y = nullptr;
  float* hT = nullptr;
  int64_t batch = 0, L = 0, H = 0, P = 0, N = 0, G = 1;
};

enum class SSDKernel {
  automatic,  // chunked when it applies (bf16/f16, N % 8 == 0, N <= 256, P % 8 == 0, L > 16), else recurrent
  recurrent,  // the sequential recurrence, one warp per (batch, head, p); fp32 FMAs; any shape and dtype
  chunked,    // chunks of kSSDChunk tokens on the tensor cores (bf16/f16 operands, fp32 accumulation)
};
constexpr int64_t kSSDChunk = 64;
// Whether the chunked kernel supports these arguments.
bool ssd_chunked_ok(const SSDFwdArgs& a);
// Runs the scan; SSDKernel::chunked on arguments it does not support fails naming the op.
void ssd_fwd(const SSDFwdArgs& a, SSDKernel k = SSDKernel::automatic, void* stream = nullptr);
// The recurrence kernel alone (mamba2_ops.cu); N <= 256.
void ssd_recurrent(const SSDFwdArgs& a, void* stream = nullptr);

// Per row of C channels, in groups of `group` channels: v = x * silu(z) (z null, or norm_before_gate: v = x);
// out = v / sqrt(mean_group(v²) + eps) * w (* silu(z) when norm_before_gate). x, z, out [R, C] of act,
// z with row stride ldz; w [C] f32.
void gated_rms_norm(DType act, const void* x, const void* z, int64_t ldz, const float* w, void* out, int64_t R,
                    int64_t C, int64_t group, float eps, bool norm_before_gate, void* stream = nullptr);

// y = min(max(x, lo), hi) over n contiguous elements of act.
void clamp(DType act, const void* x, void* y, int64_t n, float lo, float hi, void* stream = nullptr);

// The Mamba-2 SSD update for one token per sequence (the decode step), per (b, h):
// dt = clamp(softplus(dtr[b, h] + dt_bias[h]), lo, hi); state[b, h] = exp(dt A[h]) state + dt x ⊗ B;
// y[b, h, p] = C · state[b, h, p] + D x, with A = -exp(A_log), D [H] or [H*P] (d_per_channel), or null.
// xbc [B, ld_xbc] holds x [H*P], B [G*N], C [G*N] (act); dtr [B, ld_dt] (act); state f32 [B, H, P, N];
// y [B, H*P] (act).
struct SSDStepArgs {
  DType act = DType::f32;
  int64_t B = 0, H = 0, P = 0, N = 0, G = 1;
  const void* xbc = nullptr;
  int64_t ld_xbc = 0;
  const void* dtr = nullptr;
  int64_t ld_dt = 0;
  const float *dt_bias = nullptr, *A_log = nullptr, *D = nullptr;
  bool d_per_channel = false;
  float dt_lo = 0, dt_hi = 0;  // no clamp when lo <= 0 and hi is infinite
  float* state = nullptr;
  void* y = nullptr;
};
void ssd_step(const SSDStepArgs& a, void* stream = nullptr);

}  // namespace ssm::cuda
