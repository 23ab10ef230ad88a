// The decode step's matrix-vector products: each weight row is streamed from HBM once with 16-byte
// loads (four in flight per lane) and applied to every sequence of the batch (B <= kGemvMaxBatch),
// fp32 accumulation, with the step's epilogues (conv update, residual add) fused. `split` warps share
// a row (short matrices get more warps per row so that enough loads are in flight); blocks loop over
// the rows. Launched as programmatic dependents: the first weights load before waiting on the kernel
// that makes the input.
#include "backend/cuda/common.cuh"
#include "backend/cuda/decode.h"
#include "backend/cuda/decode_launch.cuh"

namespace ssm::cuda::decode {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32, kMaxB = int(kGemvMaxBatch);

template <typename T>
__device__ inline float round_to(float v) {
  return ld(st<T>(v));
}

template <typename T>
__device__ void epilogue(const GemvArgs& a, int64_t r, int b, float v) {
  if (a.bias) v += a.bias[r];
  if (a.epi == Epilogue::residual) {
    a.resid_out[b * a.O + r] += round_to<T>(v);
    return;
  }
  if (a.y_f32)
    static_cast<float*>(a.y)[b * a.ldy + r] = v;
  else
    static_cast<T*>(a.y)[b * a.ldy + r] = st<T>(v);
  if (a.epi == Epilogue::conv && r < a.conv_C) {
    const int64_t C = a.conv_C, W = a.W;
    T* win = static_cast<T*>(a.conv_state) + b * (W - 1) * C + r;  // stride C, oldest first
    const float* w = a.conv_w + r * W;
    const float x = round_to<T>(v);
    float acc = a.conv_b ? a.conv_b[r] : 0.f;
    for (int64_t k = 0; k + 1 < W; ++k) acc += w[k] * ld(win[k * C]);
    acc += w[W - 1] * x;
    for (int64_t k = 0; k + 2 < W; ++k) win[k * C] = win[(k + 1) * C];
    if (W > 1) win[(W - 2) * C] = st<T>(x);
    static_cast<T*>(a.xs)[b * C + r] = st<T>(acc / (1.f + __expf(-acc)));
  }
}

// One warp group (`split` warps) per row r, lanes over 16-byte chunks; sequences in chunks of kMaxB
// (the weight row is re-read, from L2, for each further chunk).
template <typename T>
__global__ void __launch_bounds__(kThreads) gemv_kernel(GemvArgs a, int split, bool vec) {
  constexpr int VEC = 16 / int(sizeof(T)), kDepth = 4;  // 16-byte weight loads in flight per lane
  __shared__ float red[kWarps][kMaxB];
  pdl_trigger();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int rows_per_block = kWarps / split, kw = warp % split, stride = split * 32;
  const T* w = static_cast<const T*>(a.w);
  const int64_t chunks = a.I / VEC;
  // The first weights of this lane, fetched before waiting for the previous kernel.
  uint4 raw[kDepth];
  bool have = false;
  {
    const int64_t r = int64_t(blockIdx.x) * rows_per_block + warp / split, c0 = kw * 32 + lane;
    if (vec && r < a.O) {
#pragma unroll
      for (int u = 0; u < kDepth; ++u)
        if (c0 + u * stride < chunks)
          raw[u] = __ldg(reinterpret_cast<const uint4*>(w + r * a.I + (c0 + u * stride) * VEC));
      have = true;
    }
  }
  pdl_wait();
  const T* x = static_cast<const T*>(a.x);
  for (int b0 = 0; b0 < int(a.B); b0 += kMaxB) {
    const int B = int(a.B) - b0 < kMaxB ? int(a.B) - b0 : kMaxB;
    for (int64_t row0 = int64_t(blockIdx.x) * rows_per_block; row0 < a.O; row0 += int64_t(gridDim.x) * rows_per_block) {
      const int64_t r = row0 + warp / split;
      float acc[kMaxB] = {};
      if (r < a.O) {
        const T* wr = w + r * a.I;
        if (vec) {
          for (int64_t c0 = kw * 32 + lane; c0 < chunks; c0 += kDepth * stride) {
            if (!have) {
#pragma unroll
              for (int u = 0; u < kDepth; ++u)
                if (c0 + u * stride < chunks)
                  raw[u] = __ldg(reinterpret_cast<const uint4*>(wr + (c0 + u * stride) * VEC));
            }
            have = false;
#pragma unroll
            for (int u = 0; u < kDepth; ++u) {
              const int64_t c = c0 + u * stride;
              if (c >= chunks) break;
              const T* wv = reinterpret_cast<const T*>(&raw[u]);
#pragma unroll
              for (int b = 0; b < kMaxB; ++b) {
                if (b >= B) break;
                float xf[VEC];
                const uint4 xr = *reinterpret_cast<const uint4*>(x + (b0 + b) * a.ldx + c * VEC);
                const T* xv = reinterpret_cast<const T*>(&xr);
#pragma unroll
                for (int j = 0; j < VEC; ++j) xf[j] = ld(xv[j]);
#pragma unroll
                for (int j = 0; j < VEC; ++j) acc[b] += ld(wv[j]) * xf[j];
              }
            }
          }
        } else {
          for (int64_t i = kw * 32 + lane; i < a.I; i += stride) {
            const float wv = ld(wr[i]);
            for (int b = 0; b < B; ++b) acc[b] += wv * ld(x[(b0 + b) * a.ldx + i]);
          }
        }
      }
#pragma unroll
      for (int b = 0; b < kMaxB; ++b)
        for (int o = 16; o > 0; o /= 2) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
      if (split > 1) {
#pragma unroll
        for (int b = 0; b < kMaxB; ++b)
          if (lane == b) red[warp][b] = acc[b];
        __syncthreads();
        if (kw == 0 && lane < B && r < a.O) {
          float t = 0.f;
          for (int k = 0; k < split; ++k) t += red[warp + k][lane];
          epilogue<T>(a, r, b0 + lane, t);
        }
        __syncthreads();
      } else if (lane < B && r < a.O) {
        float v = 0.f;
#pragma unroll
        for (int b = 0; b < kMaxB; ++b)
          if (lane == b) v = acc[b];
        epilogue<T>(a, r, b0 + lane, v);
      }
    }
  }
}

int sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    cudaGetDevice(&dev);
    cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev);
    return v > 0 ? v : 1;
  }();
  return n;
}

}  // namespace

void gemv(const GemvArgs& a, void* stream) {
  SSM_CHECK(a.B >= 1, "step", "GEMV batch out of range");
  int split = 1;
  while (split < kWarps && a.O * split < 4096) split *= 2;
  const int64_t rows_per_block = kWarps / split, cap = int64_t(sm_count()) * 8;
  int64_t blocks = (a.O + rows_per_block - 1) / rows_per_block;
  blocks = blocks < cap ? blocks : cap;
  dispatch_act("step", a.act, [&](auto t) {
    using T = decltype(t);
    constexpr int VEC = 16 / int(sizeof(T));
    auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    const bool vec = a.I % VEC == 0 && a.ldx % VEC == 0 && aligned(a.w) && aligned(a.x);
    launch(gemv_kernel<T>, dim3(unsigned(blocks)), dim3(kThreads), 0, stream, a, split, vec);
  });
}

}  // namespace ssm::cuda::decode
