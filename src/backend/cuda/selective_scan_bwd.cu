// Fused selective-scan backward. Same blocks as the forward (selective_scan_common.cuh), walking the
// sequence backwards one kScanCkpt-step chunk at a time: from the chunk's saved state it recomputes
// the state at each 16-step tile start (kept in shared memory), then for each tile in reverse it
// recomputes the tile's states and decays into registers and runs the adjoint
//   λ_t = dL/dh_t = a_{t+1} λ_{t+1} + C_t g_t,   g_t = dy_t (· silu(z_t) with the gate),
// giving per state dA += λ Δ a h_{t-1}, dB_t = λ Δu, dC_t = g h_t and the per-(step, channel) sums
// Σ_n λ A a h_{t-1} and Σ_n λ B (for dΔ and du) through shared memory. Sums across blocks are
// deterministic (no atomics): dB, dC (sums over the channels of a group) go to per-(slab, group)
// partials, dA, dD and d delta_bias (sums over steps and batches) to per-sequence partials, and
// fixed-order reduction kernels add them up.
#include <algorithm>

#include "backend/cuda/common.cuh"
#include "backend/cuda/selective_scan_common.cuh"
#include "backend/cuda/train_kernels.h"

namespace ssm::cuda {
namespace scan {

constexpr int kSubs = int(kScanCkpt / kTile);  // tiles per checkpoint chunk
static_assert(kScanCkpt % kTile == 0 && kSubs <= 8, "checkpoint interval: a multiple of the tile, at most 128");

// Shared memory (floats): Δ, Δu, g tiles; B, C tiles; four partials; the tile-start states.
inline size_t bwd_smem_floats(int bc_slots) {
  return 3 * kThreads + 2 * size_t(bc_slots) * kBCSlot + 4 * kCh * kSlab + kSubs * kThreads;
}

// The tile schedule: per chunk, last chunk first, the forward tiles 0 .. tiles-2 (states at the
// tile starts, into shared memory), then the chunk's tiles in reverse.
__device__ inline int chunk_tiles(int64_t L, int64_t ci) {
  const int64_t cs = ci * kScanCkpt;
  return int((min(L, cs + kScanCkpt) - cs + kTile - 1) / kTile);
}
struct Visit {
  int64_t ci;  // chunk; -1 past the end
  bool fwd;
  int j;  // tile in the chunk
  __device__ int64_t t0() const { return ci * kScanCkpt + int64_t(j) * kTile; }
  __device__ bool entry(int64_t L) const { return j == 0 && (fwd || chunk_tiles(L, ci) == 1); }
};
__device__ inline Visit chunk_start(int64_t L, int64_t ci) { return {ci, chunk_tiles(L, ci) > 1, 0}; }
__device__ inline Visit first_visit(int64_t L, int64_t nck) { return chunk_start(L, nck - 1); }
__device__ inline Visit next_visit(const Visit& v, int64_t L) {
  const int tiles = chunk_tiles(L, v.ci);
  if (v.fwd) return v.j + 2 < tiles ? Visit{v.ci, true, v.j + 1} : Visit{v.ci, false, tiles - 1};
  if (v.j > 0) return {v.ci, false, v.j - 1};
  return v.ci > 0 ? chunk_start(L, v.ci - 1) : Visit{-1, false, 0};
}

// Partials. pB, pC: [slab + group][B, L, N] for each (slab of kCh channels, group it touches): the
// index slab + group is unique since a later slab never starts in an earlier group. pA [B][D, N],
// pD, pbias [B][D]: each sequence's sums.
struct BwdOut {
  float *pB, *pC, *pA, *pD, *pbias;
  int64_t bln;  // B · L · N, the stride of pB / pC
};

template <typename T>
__global__ void __launch_bounds__(kThreads) bwd_kernel(ScanBwdArgs g, BwdOut o, int bc_slots, int64_t nck) {
  const ScanFwdArgs& a = g.f;
  extern __shared__ float4 smem4[];
  float* s_dt = reinterpret_cast<float*>(smem4);
  float* s_du = s_dt + kThreads;
  float* s_g = s_du + kThreads;
  float* s_B = s_g + kThreads;
  float* s_C = s_B + bc_slots * kBCSlot;
  float* s_p1 = s_C + bc_slots * kBCSlot;  // h·C (y recompute), then λ A a h_{t-1}
  float* s_p2 = s_p1 + kCh * kSlab;        // λ B
  float* s_pB = s_p2 + kCh * kSlab;        // λ Δu
  float* s_pC = s_pB + kCh * kSlab;        // g h
  float* s_sub = s_pC + kCh * kSlab;       // [tile of chunk][thread] state at the tile start
  const Block blk(a);
  const int64_t D = a.dim, N = a.N, L = a.L;
  // State role.
  const int c = threadIdx.x / kTile, n = threadIdx.x % kTile;
  const int64_t ds = blk.d0 + c;
  const bool live = ds < D && n < N;
  const float An = live ? a.A[ds * N + n] : 0.f, A2 = An * kLog2e;
  const float* Bs = s_B + (blk.uniform ? 0 : c) * kBCSlot + n * kRow;
  const float* Cs = s_C + (blk.uniform ? 0 : c) * kBCSlot + n * kRow;
  const float* dtc = s_dt + c * kTile;
  const float* duc = s_du + c * kTile;
  const int po = c * kSlab + n;  // this state's column in the partials
  float lam = live && g.dhT ? g.dhT[(blk.b * D + ds) * N + n] : 0.f;
  float dA = 0;
  // Element role.
  const int r = threadIdx.x / kCh, q = threadIdx.x % kCh;
  const int64_t de = blk.d0 + q;
  const float bias = de < D && a.delta_bias ? a.delta_bias[de] : 0.f;
  const float Dv = de < D && a.D ? a.D[de] : 0.f;
  float dD = 0, dbias = 0;

  Visit v = first_visit(L, nck);
  Raw<T> w;
  fetch(a, blk, v.t0(), g.dy, w);
  while (v.ci >= 0) {
    const int64_t t0 = v.t0();
    const int j = v.j;
    const Visit nx = next_visit(v, L);
    if (v.entry(L)) s_sub[threadIdx.x] = live ? a.ckpt[((blk.b * nck + v.ci) * D + ds) * N + n] : 0.f;
    const Elem e = make_elem(a, blk, t0, bias, w);
    stage_tile(a, blk, t0, e, w, s_dt, s_du, s_B, s_C);
    if (nx.ci >= 0) fetch(a, blk, nx.t0(), g.dy, w);
    __syncthreads();
    if (v.fwd) {  // the state at the next tile start
      s_sub[(j + 1) * kThreads + threadIdx.x] =
          scan_tile(s_sub[j * kThreads + threadIdx.x], A2, dtc, duc, Bs, Cs, [](int, float, float, float) {});
      __syncthreads();
      v = nx;
      continue;
    }
    {
      // Recompute the tile: states and decays in registers, y partials to shared memory.
      const float h0 = s_sub[j * kThreads + threadIdx.x];
      float hs[kTile], as[kTile];
      scan_tile(h0, A2, dtc, duc, Bs, Cs, [&](int k, float hk, float ak, float ck) {
        hs[k] = hk;
        as[k] = ak;
        s_p1[po + k * kRow] = hk * ck;
      });
      __syncthreads();
      // Gate: g = dy · silu(z), dz = dy · y_pre · σ(z) (1 + z (1 − σ(z))).
      float gg = e.dy;
      if (e.ok) {
        const float ypre = sum_states(s_p1) + Dv * e.u;
        if (a.z) {
          const float sg = sigmoid(e.z);
          static_cast<T*>(g.dz)[e.i] = st<T>(e.dy * ypre * sg * (1.f + e.z * (1.f - sg)));
          gg = e.dy * e.z * sg;
        }
        dD += gg * e.u;
      }
      s_g[q * kTile + r] = gg;
      __syncthreads();
      // Adjoint over the tile in reverse.
#pragma unroll
      for (int k = kTile - 1; k >= 0; --k) {
        const float gk = s_g[c * kTile + k];
        lam = fmaf(Cs[k], gk, lam);
        const float ah = as[k] * (k > 0 ? hs[k - 1] : h0);
        const float lah = lam * ah;
        dA = fmaf(lah, dtc[k], dA);
        s_p1[po + k * kRow] = lah * An;
        s_p2[po + k * kRow] = lam * Bs[k];
        s_pB[po + k * kRow] = lam * duc[k];
        s_pC[po + k * kRow] = gk * hs[k];
        lam *= as[k];
      }
      __syncthreads();
      if (e.ok) {  // dΔ = Σ_n λ (A a h_{t-1} + B u) · softplus'(raw);  du = Δ Σ_n λ B + D g
        const float p2 = sum_states(s_p2);
        float ddt = sum_states(s_p1) + e.u * p2;
        if (a.softplus) ddt *= softplus_grad(e.raw);
        dbias += ddt;
        static_cast<T*>(g.ddelta)[e.i] = st<T>(ddt);
        static_cast<T*>(g.du)[e.i] = st<T>(e.dt * p2 + Dv * gg);
      }
      // dB, dC of step t0 + r, state q: sums over the slab's channels, one partial per group.
      const int64_t t = t0 + r;
      if (t < L && q < N) {
        const int64_t row = (blk.b * L + t) * N + q;
        const int chans = int(min(int64_t(kCh), D - blk.d0));
        float sb = 0, sc = 0;
        int64_t gcur = blk.d0 / blk.per_group;
        for (int cc = 0; cc < chans; ++cc) {
          const int64_t gc = (blk.d0 + cc) / blk.per_group;
          if (gc != gcur) {
            o.pB[(blockIdx.x + gcur) * o.bln + row] = sb;
            o.pC[(blockIdx.x + gcur) * o.bln + row] = sc;
            sb = sc = 0;
            gcur = gc;
          }
          sb += s_pB[cc * kSlab + r * kRow + q];
          sc += s_pC[cc * kSlab + r * kRow + q];
        }
        o.pB[(blockIdx.x + gcur) * o.bln + row] = sb;
        o.pC[(blockIdx.x + gcur) * o.bln + row] = sc;
      }
      __syncthreads();
    }
    v = nx;
  }
  if (live) {
    g.dh0[(blk.b * D + ds) * N + n] = lam;
    o.pA[(blk.b * D + ds) * N + n] = dA;
  }
  // dD, dbias: the kTile step rows r of each channel q, summed in order (the loop ended on a barrier).
  s_p1[r * kCh + q] = dD;
  s_p2[r * kCh + q] = dbias;
  __syncthreads();
  if (r == 0 && de < D) {
    float sd = 0, sbias = 0;
    for (int k = 0; k < kTile; ++k) {
      sd += s_p1[k * kCh + q];
      sbias += s_p2[k * kCh + q];
    }
    o.pD[blk.b * D + de] = sd;
    o.pbias[blk.b * D + de] = sbias;
  }
}

// dB, dC [B, L, G, N] = the sums of the partials of the slabs s0 .. s1 covering each group, in order.
template <typename T>
__global__ void bc_reduce_kernel(const float* pB, const float* pC, T* dB, T* dC, int64_t BL, int64_t G, int64_t N,
                                 int64_t per_group, int64_t bln) {
  const int64_t total = BL * G * N;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t n = i % N, gr = (i / N) % G, bt = i / (N * G);
    const int64_t s0 = gr * per_group / kCh, s1 = ((gr + 1) * per_group - 1) / kCh, row = bt * N + n;
    float sb = 0, sc = 0;
    for (int64_t s = s0; s <= s1; ++s) {
      sb += pB[(s + gr) * bln + row];
      sc += pC[(s + gr) * bln + row];
    }
    dB[i] = st<T>(sb);
    dC[i] = st<T>(sc);
  }
}

template <typename T>
void launch_bwd(const ScanBwdArgs& g) {
  const ScanFwdArgs& a = g.f;
  const int bc_slots = (a.dim / a.G) % kCh == 0 ? 1 : kCh;
  const size_t smem = bwd_smem_floats(bc_slots) * sizeof(float);
  static bool attr = false;
  if (!attr) {
    cudaFuncSetAttribute(bwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bwd_smem_floats(kCh) * 4));
    attr = true;
  }
  const int64_t slabs = (a.dim + kCh - 1) / kCh, bln = a.batch * a.L * a.N, pairs = slabs + a.G - 1;
  Scratch<float> pB(pairs * bln), pC(pairs * bln), pA(a.batch * a.dim * a.N), pD(a.batch * a.dim),
      pbias(a.batch * a.dim);
  const dim3 grid(unsigned(slabs), unsigned(a.batch));
  bwd_kernel<T><<<grid, kThreads, smem>>>(g, BwdOut{pB.p, pC.p, pA.p, pD.p, pbias.p, bln}, bc_slots,
                                          (a.L + kScanCkpt - 1) / kScanCkpt);
  check_launch("backward kernel");
  const int64_t nbc = a.batch * a.L * a.G * a.N;
  if (nbc > 0) {
    const unsigned blocks = unsigned(std::min<int64_t>((nbc + 255) / 256, 65535 * 8));
    bc_reduce_kernel<T><<<blocks, 256>>>(pB.p, pC.p, static_cast<T*>(g.dB), static_cast<T*>(g.dC), a.batch * a.L, a.G,
                                         a.N, a.dim / a.G, bln);
    check_launch("dB/dC reduction kernel");
  }
  sum_partials(pA.p, a.batch, a.dim * a.N, a.dim * a.N, g.dA, false);
  sum_partials(pD.p, a.batch, a.dim, a.dim, g.dD, false);
  sum_partials(pbias.p, a.batch, a.dim, a.dim, g.ddelta_bias, false);
}

}  // namespace scan

void scan_bwd(const ScanBwdArgs& g) {
  SSM_CHECK(g.f.ckpt, "selective_scan", "the CUDA backward needs the forward's checkpoints");
  switch (g.f.act) {
    case DType::f32: return scan::launch_bwd<float>(g);
    case DType::bf16: return scan::launch_bwd<__nv_bfloat16>(g);
    case DType::f16: return scan::launch_bwd<__half>(g);
    default: fail("selective_scan", std::string("no CUDA kernel for dtype ") + dtype_name(g.f.act));
  }
}

}  // namespace ssm::cuda
