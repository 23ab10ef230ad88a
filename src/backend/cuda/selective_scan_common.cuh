// Device helpers shared by the selective-scan kernels. A thread block owns one sequence b and a slab
// of kCh = 16 channels and walks the sequence in tiles of kTile = 16 steps. Its 256 threads take two
// roles, switching at block barriers:
//  - element role (step r = tid / 16, channel q = tid % 16): per-(step, channel) work — the global
//    loads and stores of u, delta, z, y (16 consecutive channels per half-warp), softplus, gating, and
//    the sums over the state of the per-state partials;
//  - state role (channel c = tid / 16, state n = tid % 16): one fp32 state element h[c, n] in a
//    register, advanced step by step over the tile from the shared-memory tiles of Δ, Δu, B, C.
// The per-step states never leave registers; per-state partials meet in shared memory.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <string>

#include "backend/cuda/common.cuh"
#include "backend/cuda/selective_scan.h"

namespace ssm::cuda::scan {

constexpr int kCh = 16;                   // channels per block
constexpr int kTile = 16;                 // steps per tile (= state threads per channel)
constexpr int kThreads = kCh * kTile;     // 256
constexpr int kRow = 20;                  // padded row of a [16][16] slice: LDS.128 over 8 rows is conflict-free
constexpr int kSlab = kTile * kRow + 20;  // one channel's [step][state] partials
constexpr int kBCSlot = kTile * kRow;     // one [state][step] tile of B or C
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kScanMaxN == kTile, "one state thread per tile step");

__device__ inline float ex2(float x) {  // 2^x, MUFU (relative error ~2^-22)
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ inline float sigmoid(float x) { return 1.f / (1.f + __expf(-x)); }
// PyTorch's softplus threshold (x above 20 passes through), and its derivative.
__device__ inline float softplus(float x) { return x > 20.f ? x : log1pf(__expf(x)); }
__device__ inline float softplus_grad(float x) { return x > 20.f ? 1.f : sigmoid(x); }

inline void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) fail("selective_scan", std::string(what) + ": " + cudaGetErrorString(e));
}

// The block's place: sequence b, channels [d0, d0 + kCh), and whether they all share one group of
// B and C (then one staged B/C tile serves all; else each channel has its own slot).
struct Block {
  int64_t b, d0, per_group;
  bool uniform;
  __device__ explicit Block(const ScanFwdArgs& a) {
    b = blockIdx.y;
    d0 = int64_t(blockIdx.x) * kCh;
    per_group = a.dim / a.G;
    uniform = d0 / per_group == min(d0 + kCh - 1, a.dim - 1) / per_group;
  }
};

// One thread's global loads for a tile, issued a tile ahead of use (their latency overlaps the
// current tile's work): element (step r, channel q) of u, delta, z, dy, and, when the block's
// channels share one group, element (step r, state q) of B and C.
template <typename T>
struct Raw {
  T u{}, delta{}, z{}, dy{}, b{}, c{};
};
template <typename T>
__device__ inline void fetch(const ScanFwdArgs& a, const Block& blk, int64_t t0, const void* dy, Raw<T>& w) {
  const int r = threadIdx.x / kCh, q = threadIdx.x % kCh;
  const int64_t t = t0 + r, d = blk.d0 + q;
  w = Raw<T>{};
  if (t < a.L && d < a.dim) {
    const int64_t i = (blk.b * a.L + t) * a.dim + d;
    w.u = static_cast<const T*>(a.u)[i];
    w.delta = static_cast<const T*>(a.delta)[i];
    if (a.z) w.z = static_cast<const T*>(a.z)[i];
    if (dy) w.dy = static_cast<const T*>(dy)[i];
  }
  if (blk.uniform && t < a.L && q < a.N) {
    const int64_t k = (blk.b * a.L + t) * a.G * a.N + (blk.d0 / blk.per_group) * a.N + q;
    w.b = static_cast<const T*>(a.B)[k];
    w.c = static_cast<const T*>(a.C)[k];
  }
}

// Element role: one (step, channel) of the tile starting at t0.
struct Elem {
  int64_t i = 0;  // offset in [B, L, D]
  float u = 0, raw = 0, dt = 0, z = 0, dy = 0;
  bool ok = false;
};
template <typename T>
__device__ inline Elem make_elem(const ScanFwdArgs& a, const Block& blk, int64_t t0, float bias, const Raw<T>& w) {
  const int r = threadIdx.x / kCh, q = threadIdx.x % kCh;
  const int64_t t = t0 + r, d = blk.d0 + q;
  Elem e;
  e.ok = t < a.L && d < a.dim;
  if (e.ok) {
    e.i = (blk.b * a.L + t) * a.dim + d;
    e.u = ld(w.u);
    e.raw = ld(w.delta) + bias;
    e.dt = a.softplus ? softplus(e.raw) : e.raw;
    e.z = ld(w.z);
    e.dy = ld(w.dy);
  }
  return e;
}

// Writes the tile's Δ and Δu ([channel][step]) and B, C ([slot][state][step], fp32) to shared memory.
// Steps past L get Δ = 0, Δu = 0 (decay 1, no input: the state passes through unchanged).
template <typename T>
__device__ inline void stage_tile(const ScanFwdArgs& a, const Block& blk, int64_t t0, const Elem& e, const Raw<T>& w,
                                  float* s_dt, float* s_du, float* s_B, float* s_C) {
  const int r = threadIdx.x / kCh, q = threadIdx.x % kCh;
  s_dt[q * kTile + r] = e.dt;
  s_du[q * kTile + r] = e.dt * e.u;
  const int n = q;  // same thread: step r, state n
  if (blk.uniform) {
    s_B[n * kRow + r] = ld(w.b);
    s_C[n * kRow + r] = ld(w.c);
    return;
  }
  const int64_t t = t0 + r;
  const bool ok = t < a.L && n < a.N;
  const int64_t row = (blk.b * a.L + t) * a.G * a.N + n;
  for (int s = 0; s < kCh; ++s) {
    const int64_t g = min(blk.d0 + s, a.dim - 1) / blk.per_group;
    s_B[s * kBCSlot + n * kRow + r] = ok ? ld(static_cast<const T*>(a.B)[row + g * a.N]) : 0.f;
    s_C[s * kBCSlot + n * kRow + r] = ok ? ld(static_cast<const T*>(a.C)[row + g * a.N]) : 0.f;
  }
}

// State role: advances h over the tile's 16 steps, h = 2^(Δ·A·log2e) h + Δu·B, calling
// f(k, h, a, C_k) after step k. dt, du point at the channel's row; Bs, Cs at its state's row.
template <typename F>
__device__ __forceinline__ float scan_tile(float h, float A2, const float* dt, const float* du, const float* Bs,
                                           const float* Cs, F&& f) {
#pragma unroll
  for (int k = 0; k < kTile; k += 4) {
    const float4 dt4 = *reinterpret_cast<const float4*>(dt + k);
    const float4 du4 = *reinterpret_cast<const float4*>(du + k);
    const float4 b4 = *reinterpret_cast<const float4*>(Bs + k);
    const float4 c4 = *reinterpret_cast<const float4*>(Cs + k);
    const float dts[4] = {dt4.x, dt4.y, dt4.z, dt4.w}, dus[4] = {du4.x, du4.y, du4.z, du4.w};
    const float bs[4] = {b4.x, b4.y, b4.z, b4.w}, cs[4] = {c4.x, c4.y, c4.z, c4.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float av = ex2(dts[j] * A2);
      h = fmaf(av, h, dus[j] * bs[j]);
      f(k + j, h, av, cs[j]);
    }
  }
  return h;
}

// Element role: the sum over the 16 states of a [channel][step][state] partial.
__device__ inline float sum_states(const float* s_part) {
  const int r = threadIdx.x / kCh, q = threadIdx.x % kCh;
  const float* p = s_part + q * kSlab + r * kRow;
  float acc = 0;
#pragma unroll
  for (int k = 0; k < kTile; k += 4) {
    const float4 v = *reinterpret_cast<const float4*>(p + k);
    acc += (v.x + v.y) + (v.z + v.w);
  }
  return acc;
}

}  // namespace ssm::cuda::scan
