// Internal: the Mamba-3 SISO scan on the GPU (mamba3.cu), called by src/ops/mamba3_cuda.cpp on device
// pointers. The math is that of include/ssm/ops_mamba3.h. q, k [B, L, G, N], v, z [B, L, H, P] and y are
// of the activation dtype `act` (f32, bf16, f16); the per-step scalars adt, dt, trap [B, L, H] and
// angles [B, L, S], the biases [H, N], D [H] and every state are f32; math is fp32.
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::cuda {

struct Mamba3FwdArgs {
  DType act = DType::f32;
  const void *q = nullptr, *k = nullptr, *v = nullptr, *z = nullptr;  // z may be null
  const float *adt = nullptr, *dt = nullptr, *trap = nullptr, *angles = nullptr;
  const float *q_bias = nullptr, *k_bias = nullptr, *D = nullptr;                // D may be null
  const float *angle0 = nullptr, *ssm0 = nullptr, *k0 = nullptr, *v0 = nullptr;  // initial states or null (zeros)
  void* y = nullptr;
  float *angle_out = nullptr, *ssm_out = nullptr, *k_out = nullptr, *v_out = nullptr;
  int64_t B = 0, L = 0, H = 0, P = 0, N = 0, G = 1, S = 1;
};
// One warp per (b, h, p), lanes over N (N <= 256); the state row stays in registers.
void mamba3_siso_fwd(const Mamba3FwdArgs& a, void* stream = nullptr);

}  // namespace ssm::cuda
