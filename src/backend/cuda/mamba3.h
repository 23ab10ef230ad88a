// Internal: the launch function of the Mamba-3 SISO forward kernel (mamba3_fwd.cu), called by the
// mamba3_siso_scan op (src/ops/mamba3_cuda.cpp) on device pointers. Layouts as the op
// (include/ssm/ops_mamba3.h): activations q, k [B, L, G, N] and v, z, y [B, L, H, P] of dtype `act`
// (f32, bf16 or f16); the per-token scalars adt, dt, trap [B, L, H] and angles [B, L, S], the
// parameters q_bias, k_bias [H, N], D [H] and the states (angle [B, H, S], ssm [B, H, P, N],
// k [B, H, N], v [B, H, P]) f32.
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::cuda {

struct Mamba3FwdArgs {
  DType act;
  const void *q, *k, *v, *z;                              // z may be null
  const float *adt, *dt, *trap, *angles, *q_bias, *k_bias;
  const float* D;                                         // may be null
  const float *angle0, *ssm0, *k0, *v0;                  // initial states, each may be null (zeros)
  void* y;
  float *angle_out, *ssm_out, *k_out, *v_out;
  int64_t B, L, H, P, N, G, S;
};
void mamba3_fwd(const Mamba3FwdArgs& a);

}  // namespace ssm::cuda
