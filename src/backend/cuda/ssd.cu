// The Mamba-2 SSD scan on the GPU (see ssd.h): the chunked tensor-core kernel (bf16/f16) and the choice
// between it and the sequential recurrence (mamba2_ops.cu; any shape, fp32 FMAs, the f32 path). The
// chunked kernel runs one block of 4
// warps per (batch, head, slice of PT head channels) and walks the chunks of Q = 64 tokens in order,
// keeping the [PT, N] state in fp32 registers (no state round trip through device memory). Per chunk,
// with Λ_l = Σ_{i<=l} A_i inside the chunk:
//   M = (C Bᵀ) ∘ exp(Λ_l - Λ_s) [s <= l]              (Q x Q, K = N)
//   Y = M X + diag(exp(Λ_l)) C Sᵀ                     (Q x PT, K = Q and N)
//   S = exp(Λ_last) S + Xᵀ diag(exp(Λ_last - Λ_s)) B  (PT x N, K = Q)
// as mma.sync m16n8k16 products: bf16/f16 operands in shared memory (M and the state rounded to the
// input dtype as mamba_ssm does), fp32 accumulators.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>

#include "backend/cuda/common.cuh"
#include "backend/cuda/ssd.h"

namespace ssm::cuda {
namespace {

constexpr const char* kOp = "ssd_scan";

// ---- the chunked tensor-core kernel ----------------------------------------------------------------
constexpr int kQ = int(kSSDChunk);
constexpr int kLdQ = kQ + 8;  // row stride (elements) of the [*, Q] tiles: conflict-free fragment loads
static_assert(kQ == 64, "the chunked kernel's Λ scan (2 per lane) and row split (16 per warp) assume Q = 64");

template <typename T>
__device__ inline void mma16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

template <typename T>
__device__ inline uint32_t ld32(const T* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}
template <typename T>
__device__ inline uint32_t pack2(float lo, float hi) {
  T v[2] = {st<T>(lo), st<T>(hi)};
  uint32_t r;
  memcpy(&r, v, 4);
  return r;
}

// A fragment (16 x 16, row-major [m][k] in shared memory, row stride ld) at (r0, k0).
template <typename T>
__device__ inline void frag_a(uint32_t a[4], const T* A, int ld, int r0, int k0, int gid, int tig) {
  a[0] = ld32(A + (r0 + gid) * ld + k0 + 2 * tig);
  a[1] = ld32(A + (r0 + gid + 8) * ld + k0 + 2 * tig);
  a[2] = ld32(A + (r0 + gid) * ld + k0 + 8 + 2 * tig);
  a[3] = ld32(A + (r0 + gid + 8) * ld + k0 + 8 + 2 * tig);
}
// B fragment (16 x 8, k x n) from shared memory stored [n][k] (row stride ld) at (n0, k0).
template <typename T>
__device__ inline void frag_b(uint32_t b[2], const T* Bt, int ld, int n0, int k0, int gid, int tig) {
  b[0] = ld32(Bt + (n0 + gid) * ld + k0 + 2 * tig);
  b[1] = ld32(Bt + (n0 + gid) * ld + k0 + 8 + 2 * tig);
}

template <int NP, int PT>
struct ChunkSmem {
  static constexpr int kLdN = NP + 8;
  static constexpr int kC = 0;                   // C   [Q][ldN]
  static constexpr int kB = kC + kQ * kLdN;      // B   [Q][ldN]
  static constexpr int kBt = kB + kQ * kLdN;     // Bsᵀ [NP][ldQ], B scaled by exp(Λ_last - Λ_s)
  static constexpr int kXt = kBt + NP * kLdQ;    // Xᵀ  [PT][ldQ]
  static constexpr int kM = kXt + PT * kLdQ;     // M   [Q][ldQ]
  static constexpr int kS = kM + kQ * kLdQ;      // S   [PT][ldN], the state entering the chunk
  static constexpr int kElems = kS + PT * kLdN;  // then Λ [Q] f32
  static constexpr size_t bytes(size_t esize) { return size_t(kElems) * esize + kQ * sizeof(float); }
};

template <typename T, int NP, int PT, bool PF>
__global__ void __launch_bounds__(128) ssd_chunked_kernel(SSDFwdArgs a) {
  using SM = ChunkSmem<NP, PT>;
  constexpr int kLdN = SM::kLdN, MT = PT / 16, NTW = NP / 32;  // state: MT m-tiles x NTW n-tiles per warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sm = reinterpret_cast<T*>(smem_raw);
  T *sC = sm + SM::kC, *sB = sm + SM::kB, *sBt = sm + SM::kBt, *sXt = sm + SM::kXt, *sM = sm + SM::kM,
    *sS = sm + SM::kS;
  float* sLam = reinterpret_cast<float*>(sm + SM::kElems);
  const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31, gid = lane >> 2, tig = lane & 3;
  const int64_t p0 = int64_t(blockIdx.x) * PT, h = blockIdx.y, b = blockIdx.z;
  const int64_t L = a.L, H = a.H, P = a.P, N = a.N, G = a.G, g = h / (H / G);
  const T* x = static_cast<const T*>(a.x);
  const T* Bm = static_cast<const T*>(a.B);
  const T* Cm = static_cast<const T*>(a.C);
  T* y = static_cast<T*>(a.y);
  const int64_t sbase = (b * H + h) * P * N;

  // The state S [PT, NP] in mma accumulator layout: warp w holds n-tiles [w*NTW, (w+1)*NTW).
  float S[MT][NTW][4];
  auto s_at = [&](int mt, int j, int e, int64_t& p, int64_t& n) {
    p = p0 + mt * 16 + gid + (e >= 2 ? 8 : 0);
    n = (w * NTW + j) * 8 + 2 * tig + (e & 1);
  };
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int64_t p, n;
        s_at(mt, j, e, p, n);
        S[mt][j][e] = (a.h0 && p < P && n < N) ? a.h0[sbase + p * N + n] : 0.f;
        sS[(p - p0) * kLdN + n] = st<T>(S[mt][j][e]);
      }

  // This thread's share of a chunk's inputs in registers: C, B (NP/16 16-byte vectors each), X (PT/16
  // vectors) and, in warp 0, two A values. With PF they are fetched one chunk ahead, so that the global
  // loads overlap the chunk's products.
  constexpr int NVC = NP / 16, NVX = PT / 16;
  uint4 rc[NVC], rb[NVC], rx[NVX];
  float ra0 = 0.f, ra1 = 0.f;
  auto fetch = [&](int64_t t0) {
    if (w == 0) {
      const int64_t ta = t0 + 2 * lane;
      ra0 = ta < L ? a.A[(b * L + ta) * H + h] : 0.f;
      ra1 = ta + 1 < L ? a.A[(b * L + ta + 1) * H + h] : 0.f;
    }
#pragma unroll
    for (int k = 0; k < NVC; ++k) {
      const int i = tid + 128 * k, l = i % kQ, n = (i / kQ) * 8;
      const int64_t t = t0 + l;
      rc[k] = rb[k] = make_uint4(0, 0, 0, 0);
      if (t < L && n < N) {
        const int64_t off = ((b * L + t) * G + g) * N + n;
        rc[k] = *reinterpret_cast<const uint4*>(Cm + off);
        rb[k] = *reinterpret_cast<const uint4*>(Bm + off);
      }
    }
#pragma unroll
    for (int k = 0; k < NVX; ++k) {
      const int i = tid + 128 * k, l = i % kQ, pp = (i / kQ) * 8;
      const int64_t t = t0 + l;
      rx[k] = make_uint4(0, 0, 0, 0);
      if (t < L && p0 + pp < P) rx[k] = *reinterpret_cast<const uint4*>(x + ((b * L + t) * H + h) * P + p0 + pp);
    }
  };
  // The lower-triangle tiles of M (row tile r, column tile j <= 2r+1; 20 in all), 5 per warp.
  int tr[5], tj[5];
#pragma unroll
  for (int i = 0; i < 5; ++i) {
    const int k = 5 * w + i;
    tr[i] = k < 8 ? 3 : k < 14 ? 2 : k < 18 ? 1 : 0;
    tj[i] = k < 8 ? k : k < 14 ? k - 8 : k < 18 ? k - 14 : k - 18;
  }

  const int64_t nch = (L + kQ - 1) / kQ;
  if (PF) fetch(0);
  for (int64_t c = 0; c < nch; ++c) {
    const int64_t t0 = c * kQ;
    if (!PF) fetch(t0);
    // 1. Λ: the inclusive cumulative sum of A over the chunk (zeros past L), by warp 0.
    if (w == 0) {
      float incl = ra0 + ra1;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float v = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += v;
      }
      const float excl = incl - (ra0 + ra1);
      sLam[2 * lane] = excl + ra0;
      sLam[2 * lane + 1] = incl;
    }
    __syncthreads();
    const float lam_last = sLam[kQ - 1];
    // 2. C, B, Bsᵀ (B scaled by exp(Λ_last - Λ_s), transposed) and Xᵀ into shared memory.
#pragma unroll
    for (int k = 0; k < NVC; ++k) {
      const int i = tid + 128 * k, l = i % kQ, n = (i / kQ) * 8;
      *reinterpret_cast<uint4*>(sC + l * kLdN + n) = rc[k];
      *reinterpret_cast<uint4*>(sB + l * kLdN + n) = rb[k];
      const float sc = __expf(lam_last - sLam[l]);
      const T* be = reinterpret_cast<const T*>(&rb[k]);
#pragma unroll
      for (int e = 0; e < 8; ++e) sBt[(n + e) * kLdQ + l] = st<T>(ld(be[e]) * sc);
    }
#pragma unroll
    for (int k = 0; k < NVX; ++k) {
      const int i = tid + 128 * k, l = i % kQ, pp = (i / kQ) * 8;
      const T* xe = reinterpret_cast<const T*>(&rx[k]);
#pragma unroll
      for (int e = 0; e < 8; ++e) sXt[(pp + e) * kLdQ + l] = xe[e];
    }
    __syncthreads();
    if (PF && c + 1 < nch) fetch(t0 + kQ);
    // 3. M = (C Bᵀ) ∘ exp(Λ_l - Λ_s) [s <= l] into sM, the triangle's tiles shared evenly by the warps.
    {
      float acc[5][4];
#pragma unroll
      for (int i = 0; i < 5; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[i][e] = 0.f;
#pragma unroll
      for (int k0 = 0; k0 < NP; k0 += 16) {
        uint32_t fa[4];
#pragma unroll
        for (int i = 0; i < 5; ++i) {
          if (i == 0 || tr[i] != tr[i - 1]) frag_a(fa, sC, kLdN, 16 * tr[i], k0, gid, tig);
          uint32_t fb[2];
          frag_b(fb, sB, kLdN, 8 * tj[i], k0, gid, tig);
          mma16816<T>(acc[i], fa, fb);
        }
      }
#pragma unroll
      for (int i = 0; i < 5; ++i) {
        const int l0 = 16 * tr[i] + gid, l1 = l0 + 8, s0 = 8 * tj[i] + 2 * tig;
        const float lam0 = sLam[l0], lam1 = sLam[l1], ls0 = sLam[s0], ls1 = sLam[s0 + 1];
        const float m00 = s0 <= l0 ? acc[i][0] * __expf(lam0 - ls0) : 0.f;
        const float m01 = s0 + 1 <= l0 ? acc[i][1] * __expf(lam0 - ls1) : 0.f;
        const float m10 = s0 <= l1 ? acc[i][2] * __expf(lam1 - ls0) : 0.f;
        const float m11 = s0 + 1 <= l1 ? acc[i][3] * __expf(lam1 - ls1) : 0.f;
        *reinterpret_cast<uint32_t*>(sM + l0 * kLdQ + s0) = pack2<T>(m00, m01);
        *reinterpret_cast<uint32_t*>(sM + l1 * kLdQ + s0) = pack2<T>(m10, m11);
      }
    }
    __syncthreads();
    const int r0 = 16 * w;
    // 4. Y = diag(exp(Λ)) C Sᵀ + M X for the warp's rows; written to y.
    {
      float yo[PT / 8][4], yi[PT / 8][4];
#pragma unroll
      for (int j = 0; j < PT / 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) yo[j][e] = yi[j][e] = 0.f;
#pragma unroll
      for (int k0 = 0; k0 < NP; k0 += 16) {
        uint32_t fa[4];
        frag_a(fa, sC, kLdN, r0, k0, gid, tig);
#pragma unroll
        for (int j = 0; j < PT / 8; ++j) {
          uint32_t fb[2];
          frag_b(fb, sS, kLdN, 8 * j, k0, gid, tig);
          mma16816<T>(yo[j], fa, fb);
        }
      }
#pragma unroll
      for (int kt = 0; kt < 4; ++kt) {
        if (kt > w) continue;
        uint32_t fa[4];
        frag_a(fa, sM, kLdQ, r0, 16 * kt, gid, tig);
#pragma unroll
        for (int j = 0; j < PT / 8; ++j) {
          uint32_t fb[2];
          frag_b(fb, sXt, kLdQ, 8 * j, 16 * kt, gid, tig);
          mma16816<T>(yi[j], fa, fb);
        }
      }
      const int l0 = r0 + gid, l1 = l0 + 8;
      const float e0 = __expf(sLam[l0]), e1 = __expf(sLam[l1]);
#pragma unroll
      for (int j = 0; j < PT / 8; ++j) {
        const int64_t p = p0 + 8 * j + 2 * tig;
        if (p >= P) continue;  // P is even: p + 1 < P too
        if (t0 + l0 < L)
          *reinterpret_cast<uint32_t*>(y + ((b * L + t0 + l0) * H + h) * P + p) =
              pack2<T>(yo[j][0] * e0 + yi[j][0], yo[j][1] * e0 + yi[j][1]);
        if (t0 + l1 < L)
          *reinterpret_cast<uint32_t*>(y + ((b * L + t0 + l1) * H + h) * P + p) =
              pack2<T>(yo[j][2] * e1 + yi[j][2], yo[j][3] * e1 + yi[j][3]);
      }
    }
    __syncthreads();  // every warp has read sS
    // 5. S = exp(Λ_last) S + Xᵀ Bs, then its rounded copy into sS for the next chunk.
    {
      const float d = __expf(lam_last);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NTW; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) S[mt][j][e] *= d;
#pragma unroll
      for (int k0 = 0; k0 < kQ; k0 += 16)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          uint32_t fa[4];
          frag_a(fa, sXt, kLdQ, 16 * mt, k0, gid, tig);
#pragma unroll
          for (int j = 0; j < NTW; ++j) {
            uint32_t fb[2];
            frag_b(fb, sBt, kLdQ, (w * NTW + j) * 8, k0, gid, tig);
            mma16816<T>(S[mt][j], fa, fb);
          }
        }
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NTW; ++j) {
          const int row = mt * 16 + gid, col = (w * NTW + j) * 8 + 2 * tig;
          *reinterpret_cast<uint32_t*>(sS + row * kLdN + col) = pack2<T>(S[mt][j][0], S[mt][j][1]);
          *reinterpret_cast<uint32_t*>(sS + (row + 8) * kLdN + col) = pack2<T>(S[mt][j][2], S[mt][j][3]);
        }
    }
    __syncthreads();  // before the next chunk overwrites the tiles
  }
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NTW; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        int64_t p, n;
        s_at(mt, j, e, p, n);
        if (p < P && n < N) a.hT[sbase + p * N + n] = S[mt][j][e];
      }
}

template <typename T, int NP, int PT, bool PF>
void launch_chunked_np(const SSDFwdArgs& a, cudaStream_t s) {
  const size_t bytes = ChunkSmem<NP, PT>::bytes(sizeof(T));
  auto kern = ssd_chunked_kernel<T, NP, PT, PF>;
  static bool attr = false;  // once per instantiation
  if (!attr) {
    cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
    if (e != cudaSuccess) fail(kOp, std::string("cudaFuncSetAttribute: ") + cudaGetErrorString(e));
    attr = true;
  }
  const dim3 grid(unsigned((a.P + PT - 1) / PT), unsigned(a.H), unsigned(a.batch));
  kern<<<grid, 128, bytes, s>>>(a);
  check_launch(kOp);
}

int sm_count() {
  static int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 132;
    return v;
  }();
  return n;
}

// Whether to fetch the next chunk ahead (into registers; only for N <= 128): the prefetching kernel
// needs more registers (2 blocks per multiprocessor instead of 3), so it runs when the grid fits in
// two blocks per multiprocessor, where latency rather than occupancy limits. SSM_SSD_PREFETCH=0 or 1
// forces it off or on (measurements).
bool prefetch(int64_t blocks) {
  const char* e = std::getenv("SSM_SSD_PREFETCH");
  if (e && *e) return std::strcmp(e, "0") != 0;
  return blocks <= 2 * int64_t(sm_count());
}

template <typename T, int PT>
void launch_chunked_pt(const SSDFwdArgs& a, cudaStream_t s) {
  const bool pf = prefetch(a.batch * a.H * ((a.P + PT - 1) / PT));
  if (a.N <= 32)
    pf ? launch_chunked_np<T, 32, PT, true>(a, s) : launch_chunked_np<T, 32, PT, false>(a, s);
  else if (a.N <= 64)
    pf ? launch_chunked_np<T, 64, PT, true>(a, s) : launch_chunked_np<T, 64, PT, false>(a, s);
  else if (a.N <= 128)
    pf ? launch_chunked_np<T, 128, PT, true>(a, s) : launch_chunked_np<T, 128, PT, false>(a, s);
  else
    launch_chunked_np<T, 256, PT, false>(a, s);
}

template <typename T>
void launch_chunked(const SSDFwdArgs& a, cudaStream_t s) {
  // Slices of 32 head channels unless that leaves fewer than two blocks per multiprocessor.
  const bool wide = a.P % 32 == 0 && a.batch * a.H * (a.P / 32) >= 2 * sm_count();
  if (wide)
    launch_chunked_pt<T, 32>(a, s);
  else
    launch_chunked_pt<T, 16>(a, s);
}

}  // namespace

bool ssd_chunked_ok(const SSDFwdArgs& a) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };  // 16-byte loads
  return (a.act == DType::bf16 || a.act == DType::f16) && a.N % 8 == 0 && a.N <= 256 && a.P % 8 == 0 && aligned(a.x) &&
         aligned(a.B) && aligned(a.C);
}

void ssd_fwd(const SSDFwdArgs& a, SSDKernel k, void* stream) {
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  if (k == SSDKernel::automatic) k = ssd_chunked_ok(a) && a.L > 16 ? SSDKernel::chunked : SSDKernel::recurrent;
  if (k == SSDKernel::chunked) {
    SSM_CHECK(ssd_chunked_ok(a), kOp,
              "the chunked GPU kernel needs bf16/f16 inputs, N % 8 == 0, N <= 256, P % 8 == 0 and 16-byte "
              "aligned x, B, C (got " +
                  std::string(dtype_name(a.act)) + ", N=" + std::to_string(a.N) + ", P=" + std::to_string(a.P) + ")");
    if (a.act == DType::bf16)
      launch_chunked<__nv_bfloat16>(a, s);
    else
      launch_chunked<__half>(a, s);
    return;
  }
  ssd_recurrent(a, s);
}

}  // namespace ssm::cuda
