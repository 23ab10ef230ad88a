// Fused selective-scan forward: one pass over the sequence per (b, 16-channel slab) block, states in
// registers (see selective_scan_common.cuh for the thread roles). Writes y, the final state and, when
// asked, the state before every kScanCkpt-step chunk for the backward.
#include "backend/cuda/selective_scan_common.cuh"

namespace ssm::cuda {
namespace scan {

// Shared memory (floats): Δ and Δu tiles, B and C tiles (bc_slots slots each), y partials.
inline size_t fwd_smem_floats(int bc_slots) { return 2 * kThreads + 2 * size_t(bc_slots) * kBCSlot + kCh * kSlab; }

template <typename T>
__global__ void __launch_bounds__(kThreads) fwd_kernel(ScanFwdArgs a, int bc_slots, int64_t nck) {
  extern __shared__ float4 smem4[];
  float* s_dt = reinterpret_cast<float*>(smem4);
  float* s_du = s_dt + kThreads;
  float* s_B = s_du + kThreads;
  float* s_C = s_B + bc_slots * kBCSlot;
  float* s_y = s_C + bc_slots * kBCSlot;  // [channel][step][state] partials h·C
  const Block blk(a);
  const int64_t D = a.dim, N = a.N;
  // State role.
  const int c = threadIdx.x / kTile, n = threadIdx.x % kTile;
  const int64_t ds = blk.d0 + c;
  const bool live = ds < D && n < N;
  const float A2 = live ? a.A[ds * N + n] * kLog2e : 0.f;
  float h = live && a.h0 ? a.h0[(blk.b * D + ds) * N + n] : 0.f;
  const float* Bs = s_B + (blk.uniform ? 0 : c) * kBCSlot + n * kRow;
  const float* Cs = s_C + (blk.uniform ? 0 : c) * kBCSlot + n * kRow;
  float* yp = s_y + c * kSlab + n;
  // Element role.
  const int64_t de = blk.d0 + threadIdx.x % kCh;
  const float bias = de < D && a.delta_bias ? a.delta_bias[de] : 0.f;
  const float Dv = de < D && a.D ? a.D[de] : 0.f;
  T* y = static_cast<T*>(a.y);

  Raw<T> w;
  fetch(a, blk, 0, nullptr, w);
  for (int64_t t0 = 0; t0 < a.L; t0 += kTile) {
    const Elem e = make_elem(a, blk, t0, bias, w);
    stage_tile(a, blk, t0, e, w, s_dt, s_du, s_B, s_C);
    if (t0 + kTile < a.L) fetch(a, blk, t0 + kTile, nullptr, w);
    __syncthreads();
    if (a.ckpt && t0 % kScanCkpt == 0 && live) a.ckpt[((blk.b * nck + t0 / kScanCkpt) * D + ds) * N + n] = h;
    h = scan_tile(h, A2, s_dt + c * kTile, s_du + c * kTile, Bs, Cs,
                  [&](int k, float hk, float, float ck) { yp[k * kRow] = hk * ck; });
    __syncthreads();
    if (e.ok) {
      float out = sum_states(s_y) + Dv * e.u;
      if (a.z) out *= e.z * sigmoid(e.z);
      y[e.i] = st<T>(out);
    }
  }
  if (live) a.hT[(blk.b * D + ds) * N + n] = h;
}

template <typename T>
void launch_fwd(const ScanFwdArgs& a) {
  const int bc_slots = (a.dim / a.G) % kCh == 0 ? 1 : kCh;
  const size_t smem = fwd_smem_floats(bc_slots) * sizeof(float);
  static bool attr = false;
  if (!attr) {
    cudaFuncSetAttribute(fwd_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(fwd_smem_floats(kCh) * 4));
    attr = true;
  }
  const dim3 grid(unsigned((a.dim + kCh - 1) / kCh), unsigned(a.batch));
  fwd_kernel<T><<<grid, kThreads, smem>>>(a, bc_slots, (a.L + kScanCkpt - 1) / kScanCkpt);
  check_launch("forward kernel");
}

}  // namespace scan

void scan_fwd(const ScanFwdArgs& a) {
  SSM_CHECK(a.N >= 1 && a.N <= kScanMaxN, "selective_scan",
            "the CUDA kernels take a state size N <= " + std::to_string(kScanMaxN) + ", got " + std::to_string(a.N));
  SSM_CHECK(a.batch <= 65535, "selective_scan", "the CUDA kernels take a batch of at most 65535");
  switch (a.act) {
    case DType::f32: return scan::launch_fwd<float>(a);
    case DType::bf16: return scan::launch_fwd<__nv_bfloat16>(a);
    case DType::f16: return scan::launch_fwd<__half>(a);
    default: fail("selective_scan", std::string("no CUDA kernel for dtype ") + dtype_name(a.act));
  }
}

}  // namespace ssm::cuda
