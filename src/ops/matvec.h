// Internal: the matrix kernels behind linear() and the fused decode step, on raw pointers so that
// callers can run them inside their own parallel regions and without allocating.
//   matvec: y[r, o] = bias[o] + Σ_i x[r, i] · w[o, i] for a few rows r of x (decode: bound by the
//           bandwidth of streaming w once), over a range of weight rows [o0, o1). With bf16 w on a
//           CPU with AVX-512 BF16, x is rounded to bf16 as in the GEMM below (so decode and prefill
//           compute the same products); elsewhere the products are exact f32 ones.
//   bf16 GEMM: y[M, N] = x[M, K] · w[N, K]ᵀ with w in bf16 and x rounded to bf16, products summed in
//           f32 (AVX-512 BF16 dot products; prefill with bf16 weights).
// Weights are f32, bf16 or f16. The AVX-512 variants live in matvec_avx512.cpp (compiled with
// AVX-512 flags, called only when the CPU reports them); matvec.cpp holds the AVX2 versions.
#pragma once
#include <cstdint>

#include "ssm/base.h"

namespace ssm::kernels {

enum class WeightKind : int { f32 = 0, bf16 = 1, f16 = 2 };
WeightKind weight_kind(DType t);  // throws for other dtypes

// Rows [o0, o1) of y (row stride ldy) for R rows of x (row stride I). bias may be null. Single
// threaded: split [0, O) across threads to parallelise.
void matvec(const float* x, int64_t R, int64_t I, const void* w, WeightKind wk, const float* bias, float* y,
            int64_t ldy, int64_t o0, int64_t o1);

// matvec over all O weight rows, split across the thread pool. Allocation-free.
void matvec_parallel(const float* x, int64_t R, int64_t I, const void* w, WeightKind wk, const float* bias, float* y,
                     int64_t ldy, int64_t O);

// What this CPU runs (SSM_NO_AVX512=1 forces the AVX2 kernels; SSM_NO_AVX512_BF16=1 turns off only the
// BF16 dot-product kernels below).
bool have_avx512();
// The AVX-512 BF16 kernels of matvec_avx512.h are usable: matvec() runs bf16 weights on
// matvec_bf16_dp, and linear() more rows on the GEMM (round_bf16 + bf16_gemm), whose per-thread
// panel scratch holds bf16_gemm_panel_elems(K) uint16.
bool have_avx512_bf16();
int64_t bf16_gemm_panel_elems(int64_t K);

namespace avx2 {  // the portable kernel, callable directly by tests
void matvec(const float* x, int64_t R, int64_t I, const void* w, WeightKind wk, const float* bias, float* y,
            int64_t ldy, int64_t o0, int64_t o1);
}

}  // namespace ssm::kernels
