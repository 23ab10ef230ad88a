// ssm.cpp — the Mamba-3 SISO recurrence (mamba_ssm `mamba3_siso_combined`; docs/reference/mamba.md §4).
// Token-major layouts like the other scans: activations are [B, L, ...].
#pragma once
#include "ssm/tensor.h"

namespace ssm {

// Inputs (one float dtype, f32 or f64; CPU):
//   q, k        [B, L, G, N]  C and B after their RMSNorm, before the per-head bias (H % G == 0; head h
//                             uses group h / (H/G))
//   v           [B, L, H, P]  x
//   adt         [B, L, H]     A_t·Δ_t, the per-step log decay (<= 0)
//   dt          [B, L, H]     Δ_t
//   trap        [B, L, H]     raw trapezoid logits (λ = sigmoid(trap) is taken inside)
//   q_bias, k_bias [H, N]     added to q, k per head
//   angles      [B, L, S]     raw rotary projections, shared by every head (S <= N/2; ω = π·tanh(angles))
//   D           [H] or undefined;  z [B, L, H, P] or undefined (gate y·silu(z))
//   initial state, each undefined = zeros:
//     angle_state [B, H, S], ssm_state [B, H, P, N], k_state [B, H, N] (rotated + biased k of the
//     previous token), v_state [B, H, P] (its v)
// Per (b, h), with θ the cumulative angle, Rot(θ) rotating the interleaved pairs (2i, 2i+1), i < S:
//   θ_t = (θ_{t-1} + ω_t Δ_t) mod 2π;  k̃_t = Rot(θ_t)(k_t + k_bias);  q̃_t = Rot(θ_t)(q_t + q_bias)
//   α = e^{adt_t}, β = (1-λ_t) Δ_t α, γ = λ_t Δ_t
//   S_t = α S_{t-1} + β v_{t-1} ⊗ k̃_{t-1} + γ v_t ⊗ k̃_t          (S [P, N])
//   y_t = S_t q̃_t + D v_t;  y_t *= silu(z_t)
// Outputs: y [B, L, H, P] and the final state (angle_state θ_L, ssm_state S_L, k_state k̃_{L-1},
// v_state v_{L-1}), which continues the recurrence exactly when passed back as the initial state.
// Differentiable in every input, the initial state included (the mod 2π of θ has derivative 1).
struct Mamba3SisoArgs {
  Tensor q, k, v, adt, dt, trap, q_bias, k_bias, angles, D, z;
  Tensor angle_state, ssm_state, k_state, v_state;
};
struct Mamba3SisoOut {
  Tensor y, angle_state, ssm_state, k_state, v_state;
};
Mamba3SisoOut mamba3_siso_scan(const Mamba3SisoArgs& a);

}  // namespace ssm
