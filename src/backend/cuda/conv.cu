// The depthwise causal conv1d (kernels.h conv1d) and its backward (train_kernels.h conv1d_backward).
// Layout [B, L, D], channels contiguous. Each thread owns V adjacent channels (one 16-byte load per
// time step when D and the pointers allow, else V = 1) and a chunk of time steps, and slides the
// conv's window of inputs over its chunk in registers: every input is read once per chunk (plus the
// W-1 halo), never W times. The backward fuses the pre-activation's gradient (recomputed from x),
// the input gradient and the parameter gradients in one pass; dw and dbias go to per-thread partials
// [chunks of B·L, D·(W+1)] that sum_partials adds in a fixed order (deterministic, no atomics).
#include <cstdint>

#include "backend/cuda/common.cuh"
#include "backend/cuda/kernels.h"
#include "backend/cuda/train_kernels.h"

namespace ssm::cuda {
namespace {

constexpr int kMaxW = 8;
constexpr int kThreads = 64;
constexpr int64_t kFwdT = 32;  // time steps per thread, forward
constexpr int64_t kBwdT = 32;  // backward

template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ inline void load_v(const T* p, float (&o)[V]) {
  const Pack<T, V> r = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) o[i] = ld(r.v[i]);
}
template <typename T, int V>
__device__ inline void add_v(const T* p, float (&o)[V]) {
  const Pack<T, V> r = *reinterpret_cast<const Pack<T, V>*>(p);
#pragma unroll
  for (int i = 0; i < V; ++i) o[i] += ld(r.v[i]);
}
template <typename T, int V>
__device__ inline void store_v(T* p, const float (&o)[V]) {
  Pack<T, V> r;
#pragma unroll
  for (int i = 0; i < V; ++i) r.v[i] = st<T>(o[i]);
  *reinterpret_cast<Pack<T, V>*>(p) = r;
}

// The conv's input at position p of sequence b (p < 0: the initial state's row p + W - 1, or 0).
template <typename T, int V>
__device__ inline void load_in(const T* x, const T* h0, int64_t b, int64_t p, int64_t L, int64_t D, int W, int64_t d0,
                               float (&o)[V]) {
  if (p >= 0) {
    load_v<T, V>(x + (b * L + p) * D + d0, o);
  } else if (h0) {
    load_v<T, V>(h0 + (b * (W - 1) + p + W - 1) * D + d0, o);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i) o[i] = 0.f;
  }
}

// Per-thread setup shared by both kernels: the channels, the sequence and the chunk, the weights.
// WT: the kernel width when known at compile time (4, Mamba's), else 0 and the runtime w_rt ≤ 8.
template <int V, int WA>
struct ConvThread {
  int64_t d0, b, t0, t1;
  float wk[WA][V], bs[V];
  __device__ bool setup(const float* w, const float* bias, int64_t L, int64_t D, int W, int64_t T, int64_t chunks) {
    d0 = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) * V;
    if (d0 >= D) return false;
    b = blockIdx.y / chunks;
    t0 = (blockIdx.y % chunks) * T;
    t1 = min(L, t0 + T);
#pragma unroll
    for (int i = 0; i < V; ++i) {
      bs[i] = bias ? bias[d0 + i] : 0.f;
#pragma unroll
      for (int k = 0; k < WA; ++k) wk[k][i] = k < W ? w[(d0 + i) * W + k] : 0.f;
    }
    return true;
  }
};

template <typename T, int V, int WT>
__global__ void __launch_bounds__(kThreads)
    conv_fwd_kernel(const T* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                    const T* __restrict__ h0, T* __restrict__ y, int64_t L, int64_t D, int w_rt, bool silu,
                    int64_t chunks) {
  constexpr int WA = WT ? WT : kMaxW;
  const int W = WT ? WT : w_rt;
  ConvThread<V, WA> th;
  if (!th.setup(w, bias, L, D, W, kFwdT, chunks)) return;
  float win[WA][V];  // win[k] = the input at t - (W-1) + k
#pragma unroll
  for (int k = 0; k < WA - 1; ++k)
    if (k < W - 1) load_in<T, V>(x, h0, th.b, th.t0 - (W - 1) + k, L, D, W, th.d0, win[k]);
#pragma unroll 4
  for (int64_t t = th.t0; t < th.t1; ++t) {
    const int64_t i = (th.b * L + t) * D + th.d0;
#pragma unroll
    for (int k = 0; k < WA; ++k)
      if (k == W - 1) load_v<T, V>(x + i, win[k]);
    float acc[V];
#pragma unroll
    for (int c = 0; c < V; ++c) {
      acc[c] = th.bs[c];
#pragma unroll
      for (int k = 0; k < WA; ++k)
        if (k < W) acc[c] = fmaf(th.wk[k][c], win[k][c], acc[c]);
      if (silu) acc[c] = acc[c] / (1.f + expf(-acc[c]));
    }
    store_v<T, V>(y + i, acc);
#pragma unroll
    for (int k = 0; k < WA - 1; ++k)
#pragma unroll
      for (int c = 0; c < V; ++c) win[k][c] = win[k + 1][c];
  }
}

// Steps t = t0 .. t1 + W - 2 of the chunk: for t < L the pre-activation's gradient dpre(t) = (dy + dy2)
// · act'(pre) (0 past L), into a window of the last W; for t < t1 the parameter gradients; once the
// window holds dpre(p .. p + W-1), the input gradient at p = t - (W-1) (p ≥ t0, or from -(W-1) for the
// first chunk: those rows are the initial state's), plus the final state's gradient where p is among
// the last W-1 inputs. The chunk's own steps run branch-free (unrolled, so loads run ahead); the
// W-1 halo steps after it only feed the window.
template <typename T, int V, int WA>
struct ConvBwdState {
  float win[WA][V], dp[WA][V], gw[WA][V], gb[V];
};

// Step t of the backward: `own` (t < t1: accumulate dw, dbias), `in_seq` (t < L), `emit` (write dx).
template <typename T, int V, int WA>
__device__ __forceinline__ void conv_bwd_step(ConvBwdState<T, V, WA>& s, const ConvThread<V, WA>& th, int W,
                                              const T* __restrict__ x, const T* __restrict__ dy,
                                              const T* __restrict__ dy2, const T* __restrict__ dhT, T* __restrict__ dx,
                                              T* __restrict__ dh0, int64_t t, int64_t L, int64_t D, bool silu, bool own,
                                              bool in_seq, bool emit) {
#pragma unroll
  for (int k = 0; k < WA - 1; ++k)
#pragma unroll
    for (int c = 0; c < V; ++c) s.dp[k][c] = s.dp[k + 1][c];
  float g[V];
  if (in_seq) {
    const int64_t i = (th.b * L + t) * D + th.d0;
#pragma unroll
    for (int k = 0; k < WA; ++k)
      if (k == W - 1) load_v<T, V>(x + i, s.win[k]);
    load_v<T, V>(dy + i, g);
    if (dy2) add_v<T, V>(dy2 + i, g);
#pragma unroll
    for (int c = 0; c < V; ++c) {
      if (silu) {
        float pre = th.bs[c];
#pragma unroll
        for (int k = 0; k < WA; ++k)
          if (k < W) pre = fmaf(th.wk[k][c], s.win[k][c], pre);
        const float sg = 1.f / (1.f + expf(-pre));
        g[c] *= sg * (1.f + pre * (1.f - sg));
      }
      if (own) {
        s.gb[c] += g[c];
#pragma unroll
        for (int k = 0; k < WA; ++k)
          if (k < W) s.gw[k][c] = fmaf(g[c], s.win[k][c], s.gw[k][c]);
      }
    }
#pragma unroll
    for (int k = 0; k < WA - 1; ++k)
#pragma unroll
      for (int c = 0; c < V; ++c) s.win[k][c] = s.win[k + 1][c];
  } else {
#pragma unroll
    for (int c = 0; c < V; ++c) g[c] = 0.f;
  }
#pragma unroll
  for (int k = 0; k < WA; ++k)
    if (k == W - 1)
#pragma unroll
      for (int c = 0; c < V; ++c) s.dp[k][c] = g[c];
  if (!emit) return;
  const int64_t p = t - (W - 1);
  float acc[V];
#pragma unroll
  for (int c = 0; c < V; ++c) {
    acc[c] = 0.f;
#pragma unroll
    for (int k = 0; k < WA; ++k)
      if (k < W) acc[c] = fmaf(th.wk[k][c], s.dp[W - 1 - k][c], acc[c]);
  }
  const int64_t j = p - (L - (W - 1));  // row of the final state holding this input
  if (dhT && j >= 0) add_v<T, V>(dhT + (th.b * (W - 1) + j) * D + th.d0, acc);
  if (p >= 0)
    store_v<T, V>(dx + (th.b * L + p) * D + th.d0, acc);
  else if (dh0)
    store_v<T, V>(dh0 + (th.b * (W - 1) + p + W - 1) * D + th.d0, acc);
}

template <typename T, int V, int WT>
__global__ void __launch_bounds__(kThreads)
    conv_bwd_kernel(const T* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias,
                    const T* __restrict__ h0, const T* __restrict__ dy, const T* __restrict__ dy2,
                    const T* __restrict__ dhT, T* __restrict__ dx, T* __restrict__ dh0, float* __restrict__ part,
                    int64_t L, int64_t D, int w_rt, bool silu, int64_t chunks) {
  constexpr int WA = WT ? WT : kMaxW;
  const int W = WT ? WT : w_rt;
  ConvThread<V, WA> th;
  if (!th.setup(w, bias, L, D, W, kBwdT, chunks)) return;
  ConvBwdState<T, V, WA> s;
#pragma unroll
  for (int k = 0; k < WA; ++k)
#pragma unroll
    for (int c = 0; c < V; ++c) s.dp[k][c] = s.gw[k][c] = 0.f;
#pragma unroll
  for (int c = 0; c < V; ++c) s.gb[c] = 0.f;
#pragma unroll
  for (int k = 0; k < WA - 1; ++k)
    if (k < W - 1) load_in<T, V>(x, h0, th.b, th.t0 - (W - 1) + k, L, D, W, th.d0, s.win[k]);
  // The first W-1 steps of a later chunk only fill the window (their dx rows belong to the chunk before).
  const int64_t warm = th.t0 == 0 ? th.t0 : min(th.t1, th.t0 + W - 1);
  for (int64_t t = th.t0; t < warm; ++t)
    conv_bwd_step(s, th, W, x, dy, dy2, dhT, dx, dh0, t, L, D, silu, true, true, false);
#pragma unroll 4
  for (int64_t t = warm; t < th.t1; ++t)
    conv_bwd_step(s, th, W, x, dy, dy2, dhT, dx, dh0, t, L, D, silu, true, true, true);
  for (int64_t t = th.t1; t < th.t1 + W - 1; ++t)
    conv_bwd_step(s, th, W, x, dy, dy2, dhT, dx, dh0, t, L, D, silu, false, t < L, t >= th.t0 + W - 1 || th.t0 == 0);
  float* row = part + int64_t(blockIdx.y) * D * (W + 1);
#pragma unroll
  for (int c = 0; c < V; ++c) {
#pragma unroll
    for (int k = 0; k < WA; ++k)
      if (k < W) row[(th.d0 + c) * W + k] = s.gw[k][c];
    row[D * W + th.d0 + c] = s.gb[c];
  }
}

// hT[b, j, d] = the input at position L - (W-1) + j (the initial state's row when that is < 0).
template <typename T>
__global__ void conv_state_kernel(const T* x, const T* h0, T* hT, int64_t B, int64_t L, int64_t D, int W) {
  const int64_t total = B * (W - 1) * D;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, j = (i / D) % (W - 1), b = i / (D * (W - 1));
    const int64_t p = L - (W - 1) + j;
    T v = st<T>(0.f);
    if (p >= 0)
      v = x[(b * L + p) * D + d];
    else if (h0)
      v = h0[(b * (W - 1) + p + W - 1) * D + d];
    hT[i] = v;
  }
}

bool aligned16(std::initializer_list<const void*> ps) {
  for (const void* p : ps)
    if (reinterpret_cast<uintptr_t>(p) % 16) return false;
  return true;
}

// Calls f(T{}, integral_constant V, integral_constant WT) for the dtype, vector width and kernel width.
template <typename F>
void dispatch_conv(DType dt, int64_t D, int64_t W, bool vec_ok, F&& f) {
  dispatch_act("causal_conv1d", dt, [&](auto tag) {
    using T = decltype(tag);
    constexpr int V = int(16 / sizeof(T));
    const bool vec = vec_ok && D % V == 0;
    auto with_w = [&](auto v) {
      if (W == 4)
        f(tag, v, std::integral_constant<int, 4>{});
      else
        f(tag, v, std::integral_constant<int, 0>{});
    };
    if (vec)
      with_w(std::integral_constant<int, V>{});
    else
      with_w(std::integral_constant<int, 1>{});
  });
}

dim3 conv_grid(int64_t B, int64_t L, int64_t D, int V, int64_t T, int64_t* chunks) {
  *chunks = (L + T - 1) / T;
  SSM_CHECK(B * *chunks <= 65535, "causal_conv1d", "batch x length too large for one GPU launch");
  return dim3(unsigned((D / V + kThreads - 1) / kThreads), unsigned(B * *chunks));
}

}  // namespace

void conv1d(DType dt, const void* x, const float* w, const float* bias, const void* h0, void* y, void* hT, int64_t B,
            int64_t L, int64_t D, int64_t W, bool silu) {
  SSM_CHECK(W >= 2 && W <= kMaxW, "causal_conv1d", "kernel width must be in [2, 8] on the GPU");
  if (B * D == 0) return;
  dispatch_conv(dt, D, W, aligned16({x, h0, y}), [&](auto tag, auto v, auto wt) {
    using T = decltype(tag);
    const T* xp = static_cast<const T*>(x);
    const T* hp = static_cast<const T*>(h0);
    if (L > 0) {
      int64_t chunks = 0;
      const dim3 grid = conv_grid(B, L, D, decltype(v)::value, kFwdT, &chunks);
      conv_fwd_kernel<T, decltype(v)::value, decltype(wt)::value>
          <<<grid, kThreads>>>(xp, w, bias, hp, static_cast<T*>(y), L, D, int(W), silu, chunks);
    }
    conv_state_kernel<T><<<blocks_for(B * (W - 1) * D), 256>>>(xp, hp, static_cast<T*>(hT), B, L, D, int(W));
  });
  check_launch("causal_conv1d");
}

void conv1d_backward(DType dt, const void* x, const float* w, const float* bias, const void* h0, const void* dy,
                     const void* dy2, const void* dhT, void* dx, void* dh0, float* dw, float* dbias, int64_t B,
                     int64_t L, int64_t D, int64_t W, bool silu) {
  SSM_CHECK(W >= 2 && W <= kMaxW, "causal_conv1d", "kernel width must be in [2, 8] on the GPU");
  if (B * D == 0) return;
  // With L = 0 the chunk loop still runs once (t0 = t1 = 0) to pass dhT through to dh0.
  const int64_t Lc = L > 0 ? L : 1, chunks = (Lc + kBwdT - 1) / kBwdT, P = B * chunks;
  Scratch<float> part(P * D * (W + 1));
  dispatch_conv(dt, D, W, aligned16({x, h0, dy, dy2, dhT, dx, dh0}), [&](auto tag, auto v, auto wt) {
    using T = decltype(tag);
    int64_t ch = 0;
    const dim3 grid = conv_grid(B, Lc, D, decltype(v)::value, kBwdT, &ch);
    conv_bwd_kernel<T, decltype(v)::value, decltype(wt)::value>
        <<<grid, kThreads>>>(static_cast<const T*>(x), w, bias, static_cast<const T*>(h0), static_cast<const T*>(dy),
                             static_cast<const T*>(dy2), static_cast<const T*>(dhT), static_cast<T*>(dx),
                             static_cast<T*>(dh0), part.p, L, D, int(W), silu, ch);
  });
  check_launch("causal_conv1d");
  sum_partials(part.p, P, D * (W + 1), D * W, dw, false);
  if (dbias) sum_partials(part.p + D * W, P, D * (W + 1), D, dbias, false);
}

}  // namespace ssm::cuda
