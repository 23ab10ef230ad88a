// Internal: the kernels of the fused one-token GPU decode step (decode_gemv.cu, decode_step.cu), called
// by the Mamba-1 step (mamba1_step.cpp) on device pointers and a stream (cudaStream_t as void*, so that
// this header needs no CUDA include). Activations are of the weights' dtype `act` (f32, bf16, f16);
// the residual stream, x_proj's output (dt, B, C), the SSM state and the logits are f32; math is fp32.
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::cuda::decode {

// Batches up to this size run the matrix products as GEMV kernels (each weight row read once for every
// sequence, the conv update and residual add fused); larger batches use cuBLASLt (cuda::gemm) with the
// conv and bias kernels below.
constexpr int64_t kGemvMaxBatch = 8;

enum class Epilogue {
  store,     // y[b, r] = v (f32 when y_f32, else act)
  conv,      // y[b, r] = v (act); rows r < conv_C also advance the depthwise conv window of channel r
             // (state [B, W-1, C] of act, oldest first) and write xs[b, r] = SiLU(conv) (act)
  residual,  // resid_out[b, r] += v rounded to act (the mixer output joins the residual stream)
};

// v[b, r] = x[b, :] · w[r, :] + bias[r] for b < B, r < O; w [O, I] of act (read once per kGemvMaxBatch
// sequences), x [B, I] of act (row stride ldx).
struct GemvArgs {
  DType act = DType::f32;
  const void* w = nullptr;
  int64_t O = 0, I = 0, B = 0;
  const float* bias = nullptr;
  const void* x = nullptr;
  int64_t ldx = 0;
  Epilogue epi = Epilogue::store;
  void* y = nullptr;
  int64_t ldy = 0;
  bool y_f32 = false;
  void* conv_state = nullptr;
  const float* conv_w = nullptr;  // [C, W]
  const float* conv_b = nullptr;  // [C] or null
  int64_t conv_C = 0, W = 0;
  void* xs = nullptr;          // [B, C]
  float* resid_out = nullptr;  // [B, O]
};
void gemv(const GemvArgs& a, void* stream);

// One token of the Mamba-1 selective SSM per (sequence, channel): dt = softplus(dt_proj[d] · dtr +
// dt_bias[d]); h[d, n] = exp(dt A[d, n]) h[d, n] + dt B[n] u[d] with A = -exp(A_log);
// y[d] = (C · h[d] + D[d] u[d]) SiLU(z[d]). xdbl [B, E = R + 2N] holds dtr, B, C (Falcon-Mamba:
// each RMS-normalised without weight first, eps mixer_eps). u = xs [B, Di], z [B, ldz] (act), h f32.
struct ScanStepArgs {
  DType act = DType::f32;
  int64_t B = 0, Di = 0, N = 0, R = 0;
  const void* xs = nullptr;
  const void* z = nullptr;
  int64_t ldz = 0;
  const float* xdbl = nullptr;
  const float *dt_proj = nullptr, *dt_bias = nullptr, *A_log = nullptr, *D = nullptr;
  float* h = nullptr;
  void* y = nullptr;
  bool falcon = false;
  float mixer_eps = 0;
};
void scan_step(const ScanStepArgs& a, void* stream);

// resid[b, :] = weight[ids[b], :] as f32 (weight [V, C] of wdt; ids i64 on the device, in range).
void embed(DType wdt, const void* weight, const int64_t* ids, float* resid, int64_t B, int64_t C, void* stream);
// Per row: resid (f32) += add (act, may be null); out = round_act(resid / rms(resid) * w).
// Both paths norm with it (the GEMV path with add null: out_proj already added into resid).
void add_rms_norm(DType act, float* resid, const void* add, const float* w, void* out, int64_t B, int64_t C, float eps,
                  void* stream);
// The conv update of the batched path: x = xz[b, :C] (row stride ldx) joins the window state
// [B, W-1, C]; xs[b, c] = SiLU(bias + Σ_k w[c, k] window[k]) (all act).
void conv_step(DType act, const void* xz, int64_t ldx, void* state, const float* w, const float* bias, void* xs,
               int64_t B, int64_t C, int64_t W, void* stream);
// y[b, c] += bias[c] for y [B, C] (act, row stride ldy).
void add_bias(DType act, void* y, int64_t ldy, const float* bias, int64_t B, int64_t C, void* stream);

}  // namespace ssm::cuda::decode
