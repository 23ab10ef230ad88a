// Internal: launch functions of the fused CUDA selective-scan kernels (selective_scan_fwd.cu,
// selective_scan_bwd.cu), called by the selective_scan op (src/ops/selective_scan_cuda.cpp) on
// device pointers. Layout is token-major as in the op: u, delta, z, y [B, L, D]; B, C [B, L, G, N];
// A [D, N]; D, delta_bias [D]; states [B, D, N]. Activations (u, delta, z, B, C, y and their
// gradients) are f32, bf16 or f16 (`act`); A, D, delta_bias, the states and their gradients are f32.
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::cuda {

// Largest state size the kernels take (one thread per state element, 16 per channel).
constexpr int64_t kScanMaxN = 16;
// Checkpoint interval (steps) of the states the forward saves for the backward: a multiple of the
// kernels' 16-step tile, at most 128.
constexpr int64_t kScanCkpt = 64;

struct ScanFwdArgs {
  DType act;
  const void *u, *delta, *z, *B, *C;     // activations; z may be null
  const float *A, *D, *delta_bias, *h0;  // D, delta_bias, h0 may be null
  void* y;                               // [B, L, D] act
  float* hT;                             // [B, D, N]
  float* ckpt;                           // [B, ceil(L / kScanCkpt), D, N] or null (state before each chunk)
  int64_t batch, L, dim, N, G;
  bool softplus;
};
void scan_fwd(const ScanFwdArgs& a);

struct ScanBwdArgs {
  ScanFwdArgs f;                       // the forward's inputs and its ckpt (y, hT unused)
  const void* dy;                      // [B, L, D] act, or null (zero)
  const float* dhT;                    // [B, D, N] or null (zero)
  void *du, *ddelta;                   // [B, L, D] act
  void* dz;                            // [B, L, D] act, or null when there is no z
  void *dB, *dC;                       // [B, L, G, N] act
  float *dA, *dD, *ddelta_bias, *dh0;  // [D, N], [D], [D], [B, D, N]; always written
};
// Deterministic: the same inputs give bit-identical gradients (no atomics; fixed-order reductions).
void scan_bwd(const ScanBwdArgs& a);

}  // namespace ssm::cuda
