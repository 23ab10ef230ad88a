// Internal: the fused one-token decode step (Model::step). Buffers live in a DecodeScratch owned
// by the InferenceState, sized on the first step; later steps allocate nothing. The kernels here are
// the single-token forms of the ops the parallel forward uses (conv update, SSM state update); the
// norms come from ops/rows.h and the matrix products from ops/matvec.h.
#pragma once
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "ops/matvec.h"
#include "ssm/model.h"

namespace ssm {

struct DecodeScratch {
  int64_t batch = 0;
  std::vector<float> x, resid, normed, tmp;  // [B, d_model] each, tmp [max width]
  std::vector<std::vector<float>> bufs;      // per-architecture intermediates, by index
  std::vector<std::vector<float>> cached;    // per layer: A = -exp(A_log), made on the layer's first step
  Tensor logits;                             // [B, V]
  std::shared_ptr<void> cuda;                // a GPU model's step: buffers and graph (backend/cuda/mamba1_step.cpp)
  const float* neg_exp(int64_t layer, const Tensor& A_log) {  // A of `layer` (A_log f32, any shape)
    if (cached.size() <= size_t(layer)) cached.resize(size_t(layer) + 1);
    std::vector<float>& a = cached[size_t(layer)];
    if (a.empty())
      for (int64_t i = 0, n = A_log.numel(); i < n; ++i) a.push_back(-std::exp(A_log.data<float>()[i]));
    return a.data();
  }
  float* buf(size_t k, int64_t n) {  // buffer k with at least n floats (grows on the first step only)
    if (bufs.size() <= k) bufs.resize(k + 1);
    if (int64_t(bufs[k].size()) < n) bufs[k].resize(size_t(n));
    return bufs[k].data();
  }
};

namespace decode {

// y[r, :] = x[r, :] · wᵀ + bias over B rows, on the thread pool.
inline void linear(const float* x, int64_t B, const Tensor& w, const Tensor& bias, float* y) {
  kernels::matvec_parallel(x, B, w.size(1), w.raw_data(), kernels::weight_kind(w.dtype()),
                           bias.defined() ? bias.data<float>() : nullptr, y, w.size(0), w.size(0));
}

// The state tensor `t` as a zero-initialised (first use) contiguous f32 buffer of `shape` (checked
// without building a Shape: no allocation once the state exists).
float* state_buffer(Tensor& t, std::initializer_list<int64_t> shape);

// Causal depthwise conv of one new token per sequence: x [B, C] (row stride ldx) joins the window
// state [B, W-1, C] (token-major, oldest first); y [B, C] = bias + Σ_k w[c, k] window[k][c]
// (optionally SiLU); the state shifts by one token. w [C, W].
void conv_step(const float* x, int64_t ldx, float* state, const float* w, const float* bias, float* y, int64_t B,
               int64_t C, int64_t W, bool silu);

// Mamba-1 SSM update of channels [d0, d1) for one sequence: dt = softplus(dt_proj[d] · dtr + bias[d]),
// h[d, n] = exp(dt A[d, n]) h[d, n] + dt B[n] u[d], y[d] = (C · h[d] + D[d] u[d]) silu(z[d]).
// delta [Di] is scratch for dt.
struct Mamba1Step {
  const float *dtr, *dt_proj, *dt_bias, *A, *Bv, *Cv, *Dv, *u, *z;
  float *h, *y, *delta;
  int64_t R, N;
};
void mamba1_scan_step(const Mamba1Step& s, int64_t d0, int64_t d1);

// Mamba-2 SSD update of heads [h0, h1) for one sequence: dt[h] given (already softplus + clamp),
// state[h, p, n] = exp(dt A[h]) state + dt x[h, p] B[g, n], y[h, p] = C[g] · state[h, p] + D x[h, p].
struct Mamba2Step {
  const float *dt, *A, *x, *Bm, *Cm, *Dv;
  float *state, *y;
  int64_t P, N, heads_per_group;
  bool d_per_channel;
};
void mamba2_scan_step(const Mamba2Step& s, int64_t h0, int64_t h1);

}  // namespace decode
}  // namespace ssm
