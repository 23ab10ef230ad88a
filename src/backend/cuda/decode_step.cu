// The decode step's per-channel kernels: the selective SSM update (with dt_proj, softplus, D skip and
// the z gate fused), the embedding gather, and for batches above the GEMV path the residual add +
// RMSNorm, the conv window update and the bias add that surround cuBLASLt's GEMMs.
#include "backend/cuda/common.cuh"
#include "backend/cuda/decode.h"
#include "backend/cuda/decode_launch.cuh"

namespace ssm::cuda::decode {
namespace {

constexpr int kThreads = 256;

__device__ inline float softplus(float x) { return x > 20.f ? x : log1pf(__expf(x)); }  // PyTorch's threshold
__device__ inline float silu(float x) { return x / (1.f + __expf(-x)); }

// Sum over a group of G lanes (G a power of two <= 32, groups aligned within the warp).
template <int G>
__device__ inline float group_sum(float v) {
#pragma unroll
  for (int o = G / 2; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// grid (channel blocks, batch chunks of kRowsPerBlock: 1 at batch 1, else kMaxRows); G lanes per
// channel, each lane owns states n = g, g + G, ...; a block walks its sequences so that dt_proj's rows
// are read from L2 once.
constexpr int kMaxRows = 8;
template <typename T, int G, int kRowsPerBlock>
__global__ void __launch_bounds__(kThreads) scan_step_kernel(ScanStepArgs a) {
  extern __shared__ float dbl[];  // [rows, R + 2N]: dt (low rank), B, C of this block's sequences
  __shared__ float scale[3 * kRowsPerBlock];
  pdl_trigger();
  const int g = threadIdx.x % G;
  const int64_t d = int64_t(blockIdx.x) * (kThreads / G) + threadIdx.x / G;
  const bool valid = d < a.Di;  // out-of-range lanes still take part in the shuffles
  // Weights before waiting for the previous kernel: dt_proj[d, g + k G] for k < kPre, A[d, g].
  constexpr int kPre = 8;
  float wdt[kPre];
#pragma unroll
  for (int k = 0; k < kPre; ++k) wdt[k] = valid && g + k * G < a.R ? a.dt_proj[d * a.R + g + k * G] : 0.f;
  const float A0 = valid && g < a.N ? -__expf(a.A_log[d * a.N + g]) : 0.f;
  const int64_t E = a.R + 2 * a.N, b0 = int64_t(blockIdx.y) * kRowsPerBlock;
  const int rows = int(a.B - b0 < kRowsPerBlock ? a.B - b0 : kRowsPerBlock);
  // With N <= G each lane owns one state per sequence: the state (written only by this kernel, on
  // the previous step) is fetched before waiting too.
  const bool one = a.N <= G, mine = valid && g < a.N;
  float hv[kRowsPerBlock], uv[kRowsPerBlock], zv[kRowsPerBlock];
  if (one)
#pragma unroll
    for (int k = 0; k < kRowsPerBlock; ++k) hv[k] = mine && k < rows ? a.h[((b0 + k) * a.Di + d) * a.N + g] : 0.f;
  pdl_wait();
  if (one)
#pragma unroll
    for (int k = 0; k < kRowsPerBlock; ++k) {
      uv[k] = valid && k < rows ? ld(static_cast<const T*>(a.xs)[(b0 + k) * a.Di + d]) : 0.f;
      zv[k] = valid && k < rows ? ld(static_cast<const T*>(a.z)[(b0 + k) * a.ldz + d]) : 0.f;
    }
  for (int64_t i = threadIdx.x; i < rows * E; i += kThreads) dbl[i] = a.xdbl[b0 * E + i];
  __syncthreads();
  if (a.falcon) {  // weightless RMS norms of dt, B and C: one warp per (row, segment)
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int seg = warp; seg < 3 * rows; seg += kThreads / 32) {
      const int k = seg % 3;
      const int64_t lo = (seg / 3) * E + (k == 0 ? 0 : k == 1 ? a.R : a.R + a.N), n = k == 0 ? a.R : a.N;
      float ss = 0.f;
      for (int64_t i = lane; i < n; i += 32) ss += dbl[lo + i] * dbl[lo + i];
      ss = group_sum<32>(ss);
      if (lane == 0) scale[seg] = rsqrtf(ss / float(n) + a.mixer_eps);
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < rows * E; i += kThreads) {
      const int64_t e = i % E;
      dbl[i] *= scale[(i / E) * 3 + (e < a.R ? 0 : e < a.R + a.N ? 1 : 2)];
    }
    __syncthreads();
  }
  if (one) {  // the sequences as independent chains, step by step (instruction-level parallelism)
    constexpr int K = kRowsPerBlock;
    float dt[K], acc[K];
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float* row = dbl + (k < rows ? k : 0) * E;
      dt[k] = 0.f;
#pragma unroll
      for (int q = 0; q < kPre; ++q)
        if (g + q * G < a.R) dt[k] += wdt[q] * row[g + q * G];
      if (valid)
        for (int64_t j = g + kPre * G; j < a.R; j += G) dt[k] += a.dt_proj[d * a.R + j] * row[j];
    }
#pragma unroll
    for (int o = G / 2; o > 0; o /= 2)
#pragma unroll
      for (int k = 0; k < K; ++k) dt[k] += __shfl_xor_sync(0xffffffffu, dt[k], o);
    const float bias = valid ? a.dt_bias[d] : 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const float* row = dbl + (k < rows ? k : 0) * E;
      const float delta = softplus(dt[k] + bias);
      hv[k] = __expf(delta * A0) * hv[k] + delta * (mine ? row[a.R + g] : 0.f) * uv[k];
      acc[k] = mine ? row[a.R + a.N + g] * hv[k] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (mine && k < rows) a.h[((b0 + k) * a.Di + d) * a.N + g] = hv[k];
#pragma unroll
    for (int o = G / 2; o > 0; o /= 2)
#pragma unroll
      for (int k = 0; k < K; ++k) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], o);
    if (valid && g == 0) {
      const float Dd = a.D ? a.D[d] : 0.f;
#pragma unroll
      for (int k = 0; k < K; ++k)
        if (k < rows) static_cast<T*>(a.y)[(b0 + k) * a.Di + d] = st<T>((acc[k] + Dd * uv[k]) * silu(zv[k]));
    }
    return;
  }
  for (int k = 0; k < rows; ++k) {  // N > G: lanes loop over their states
    const int64_t b = b0 + k;
    const float* row = dbl + k * E;
    float dt = 0.f;
#pragma unroll
    for (int q = 0; q < kPre; ++q)
      if (g + q * G < a.R) dt += wdt[q] * row[g + q * G];
    if (valid)
      for (int64_t j = g + kPre * G; j < a.R; j += G) dt += a.dt_proj[d * a.R + j] * row[j];
    dt = softplus(group_sum<G>(dt) + (valid ? a.dt_bias[d] : 0.f));
    const float u = valid ? ld(static_cast<const T*>(a.xs)[b * a.Di + d]) : 0.f;
    const float* Bv = row + a.R;
    const float* Cv = row + a.R + a.N;
    float acc = 0.f;
    if (valid) {
      float* h = a.h + (b * a.Di + d) * a.N;
      for (int64_t n = g; n < a.N; n += G) {
        const float A = n == g ? A0 : -__expf(a.A_log[d * a.N + n]);
        const float hn = __expf(dt * A) * h[n] + dt * Bv[n] * u;
        h[n] = hn;
        acc += Cv[n] * hn;
      }
    }
    acc = group_sum<G>(acc);
    if (valid && g == 0) {
      const float z = ld(static_cast<const T*>(a.z)[b * a.ldz + d]);
      static_cast<T*>(a.y)[b * a.Di + d] = st<T>((acc + (a.D ? a.D[d] * u : 0.f)) * silu(z));
    }
  }
}

template <typename T>
__global__ void embed_kernel(const T* w, const int64_t* ids, float* resid, int64_t B, int64_t C) {
  pdl_trigger();
  pdl_wait();
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * C; i += int64_t(gridDim.x) * blockDim.x)
    resid[i] = ld(w[ids[i / C] * C + i % C]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    add_norm_kernel(float* resid, const T* add, const float* w, T* out, int64_t C, float eps) {
  __shared__ float partial[kThreads / 32];
  pdl_trigger();
  pdl_wait();
  float* r = resid + blockIdx.x * C;
  float ss = 0.f;
  for (int64_t c = threadIdx.x; c < C; c += kThreads) {
    float v = r[c];
    if (add) r[c] = v = v + ld(add[blockIdx.x * C + c]);
    ss += v * v;
  }
  ss = group_sum<32>(ss);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = ss;
  __syncthreads();
  float s = 0.f;
  for (int k = 0; k < kThreads / 32; ++k) s += partial[k];
  const float inv = rsqrtf(s / float(C) + eps);
  for (int64_t c = threadIdx.x; c < C; c += kThreads) out[blockIdx.x * C + c] = st<T>(r[c] * inv * w[c]);
}

template <typename T>
__global__ void conv_step_kernel(const T* xz, int64_t ldx, T* state, const float* w, const float* bias, T* xs,
                                 int64_t B, int64_t C, int64_t W) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * C; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = i / C, c = i % C;
    T* win = state + b * (W - 1) * C + c;
    const float* wc = w + c * W;
    const float x = ld(xz[b * ldx + c]);
    float acc = bias ? bias[c] : 0.f;
    for (int64_t k = 0; k + 1 < W; ++k) acc += wc[k] * ld(win[k * C]);
    acc += wc[W - 1] * x;
    for (int64_t k = 0; k + 2 < W; ++k) win[k * C] = win[(k + 1) * C];
    if (W > 1) win[(W - 2) * C] = xz[b * ldx + c];
    xs[i] = st<T>(silu(acc));
  }
}

template <typename T>
__global__ void bias_kernel(T* y, int64_t ldy, const float* bias, int64_t B, int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < B * C; i += int64_t(gridDim.x) * blockDim.x)
    y[(i / C) * ldy + i % C] = st<T>(ld(y[(i / C) * ldy + i % C]) + bias[i % C]);
}

}  // namespace

void scan_step(const ScanStepArgs& a, void* stream) {
  const size_t smem = size_t(kMaxRows * (a.R + 2 * a.N)) * sizeof(float);
  SSM_CHECK(smem <= 48 * 1024, "step", "x_proj output too wide for the step kernel");
  dispatch_act("step", a.act, [&](auto t) {
    using T = decltype(t);
    const unsigned rows = a.B == 1 ? 1 : kMaxRows, y = unsigned((a.B + rows - 1) / rows);
    const dim3 grid16(unsigned((a.Di + kThreads / 16 - 1) / (kThreads / 16)), y);
    const dim3 grid32(unsigned((a.Di + kThreads / 32 - 1) / (kThreads / 32)), y);
    if (a.N <= 16 && rows == 1)
      launch(scan_step_kernel<T, 16, 1>, grid16, dim3(kThreads), smem, stream, a);
    else if (a.N <= 16)
      launch(scan_step_kernel<T, 16, kMaxRows>, grid16, dim3(kThreads), smem, stream, a);
    else if (rows == 1)
      launch(scan_step_kernel<T, 32, 1>, grid32, dim3(kThreads), smem, stream, a);
    else
      launch(scan_step_kernel<T, 32, kMaxRows>, grid32, dim3(kThreads), smem, stream, a);
  });
}

void embed(DType wdt, const void* weight, const int64_t* ids, float* resid, int64_t B, int64_t C, void* stream) {
  dispatch_act("step", wdt, [&](auto t) {
    using T = decltype(t);
    launch(embed_kernel<T>, dim3(blocks_for(B * C)), dim3(256), 0, stream, static_cast<const T*>(weight), ids, resid, B,
           C);
  });
}

void add_rms_norm(DType act, float* resid, const void* add, const float* w, void* out, int64_t B, int64_t C, float eps,
                  void* stream) {
  dispatch_act("step", act, [&](auto t) {
    using T = decltype(t);
    launch(add_norm_kernel<T>, dim3(unsigned(B)), dim3(kThreads), 0, stream, resid, static_cast<const T*>(add), w,
           static_cast<T*>(out), C, eps);
  });
}

void conv_step(DType act, const void* xz, int64_t ldx, void* state, const float* w, const float* bias, void* xs,
               int64_t B, int64_t C, int64_t W, void* stream) {
  dispatch_act("step", act, [&](auto t) {
    using T = decltype(t);
    conv_step_kernel<T><<<blocks_for(B * C), 256, 0, static_cast<cudaStream_t>(stream)>>>(
        static_cast<const T*>(xz), ldx, static_cast<T*>(state), w, bias, static_cast<T*>(xs), B, C, W);
  });
  check_launch("step");
}

void add_bias(DType act, void* y, int64_t ldy, const float* bias, int64_t B, int64_t C, void* stream) {
  dispatch_act("step", act, [&](auto t) {
    using T = decltype(t);
    bias_kernel<T>
        <<<blocks_for(B * C), 256, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<T*>(y), ldy, bias, B, C);
  });
  check_launch("step");
}

}  // namespace ssm::cuda::decode
