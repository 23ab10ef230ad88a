// Internal: the AVX-512 kernels of matvec.h. This header and matvec_avx512.cpp include nothing but
// <cstdint> and <immintrin.h>: that file is compiled with AVX-512 code generation, and any inline
// function it shared with the rest of the library (a std:: template, say) could be linked in place
// of the portable copy and fault on CPUs without AVX-512.
#pragma once
#include <cstdint>

namespace ssm::kernels::avx512 {

bool supported();       // AVX-512 F, BW and VL
bool supported_bf16();  // and AVX-512 BF16
void matvec(const float* x, int64_t R, int64_t I, const void* w, int wk, const float* bias, float* y, int64_t ldy,
            int64_t o0, int64_t o1);
// matvec with bf16 weights and x rounded to bf16 (nearest even), products summed in f32 with
// VDPBF16PS; needs supported_bf16().
void matvec_bf16_dp(const float* x, int64_t R, int64_t I, const uint16_t* w, const float* bias, float* y, int64_t ldy,
                    int64_t o0, int64_t o1);
// out[M, Kp] = x[M, K] rounded to bf16 (nearest even), Kp = K rounded up to even, padding zero.
void round_bf16(const float* x, int64_t M, int64_t K, uint16_t* out);
void bf16_gemm(const uint16_t* xb, int64_t M, int64_t K, const uint16_t* w, float* y, int64_t ldy, int64_t n0,
               int64_t n1, uint16_t* panel);

}  // namespace ssm::kernels::avx512
