// The portable (AVX2/FMA) matvec and the dispatch between it and the AVX-512 kernels.
#include "ops/matvec.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdlib>

#include "ops/matvec_avx512.h"

namespace ssm::kernels {
namespace {

template <int WK>
inline __m256 load8(const void* w, int64_t idx) {
  if constexpr (WK == 0) {
    return _mm256_loadu_ps(static_cast<const float*>(w) + idx);
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + idx));
    if constexpr (WK == 1) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
  }
}
template <int WK>
inline float load1(const void* w, int64_t idx) {
  if constexpr (WK == 0) return static_cast<const float*>(w)[idx];
  if constexpr (WK == 1) return bf16_to_f32(static_cast<const uint16_t*>(w)[idx]);
  return _cvtsh_ss(static_cast<const uint16_t*>(w)[idx]);
}
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[r, o..o+NO) for NR rows of x against NO weight rows; NR·NO·U = 8 accumulators, each weight
// vector widened once and used for all NR rows.
template <int WK, int NR, int NO>
inline void tile(const float* x, int64_t I, const void* w, int64_t o, const float* bias, float* y, int64_t ldy) {
  constexpr int U = NR * NO >= 8 ? 1 : 8 / (NR * NO);
  __m256 acc[NR][NO][U];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NO; ++j)
      for (int u = 0; u < U; ++u) acc[r][j][u] = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 * U <= I; i += 8 * U) {
    for (int u = 0; u < U; ++u) {
      __m256 xv[NR];
      for (int r = 0; r < NR; ++r) xv[r] = _mm256_loadu_ps(x + r * I + i + 8 * u);
      for (int j = 0; j < NO; ++j) {
        const __m256 wv = load8<WK>(w, (o + j) * I + i + 8 * u);
        for (int r = 0; r < NR; ++r) acc[r][j][u] = _mm256_fmadd_ps(wv, xv[r], acc[r][j][u]);
      }
    }
  }
  for (; i + 8 <= I; i += 8) {
    for (int j = 0; j < NO; ++j) {
      const __m256 wv = load8<WK>(w, (o + j) * I + i);
      for (int r = 0; r < NR; ++r) acc[r][j][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * I + i), acc[r][j][0]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int j = 0; j < NO; ++j) {
      __m256 s = acc[r][j][0];
      for (int u = 1; u < U; ++u) s = _mm256_add_ps(s, acc[r][j][u]);
      float v = hsum8(s);
      for (int64_t k = i; k < I; ++k) v += load1<WK>(w, (o + j) * I + k) * x[r * I + k];
      y[r * ldy + o + j] = v + (bias ? bias[o + j] : 0.0f);
    }
  }
}

template <int WK, int NR, int NO>
void rows(const float* x, int64_t I, const void* w, const float* bias, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  int64_t o = o0;
  for (; o + NO <= o1; o += NO) tile<WK, NR, NO>(x, I, w, o, bias, y, ldy);
  for (; o < o1; ++o) tile<WK, NR, 1>(x, I, w, o, bias, y, ldy);
}

template <int WK>
void matvec_t(const float* x, int64_t R, int64_t I, const void* w, const float* bias, float* y, int64_t ldy, int64_t o0,
              int64_t o1) {
  // Several rows of x: chunks of ~32 KiB of weights, read from memory once and from L1 after.
  const int64_t esize = WK == 0 ? 4 : 2;
  int64_t chunk = (int64_t(1) << 15) / (I > 0 ? I * esize : 1);
  chunk = R <= 1 ? o1 - o0 : (chunk < 4 ? 4 : chunk);
  for (int64_t c0 = o0; c0 < o1; c0 += chunk) {
    const int64_t c1 = c0 + chunk < o1 ? c0 + chunk : o1;
    int64_t r = 0;
    for (; r + 4 <= R; r += 4) rows<WK, 4, 2>(x + r * I, I, w, bias, y + r * ldy, ldy, c0, c1);
    if (r + 2 <= R) {
      rows<WK, 2, 4>(x + r * I, I, w, bias, y + r * ldy, ldy, c0, c1);
      r += 2;
    }
    if (r < R) rows<WK, 1, 4>(x + r * I, I, w, bias, y + r * ldy, ldy, c0, c1);
  }
}

// SSM_NO_AVX512=1 keeps the AVX2 kernels on an AVX-512 machine, SSM_NO_AVX512_BF16=1 the widening
// AVX-512 ones for bf16 weights (to compare them).
bool env_set(const char* name) {
  const char* e = std::getenv(name);
  return e && *e && *e != '0';
}
bool env_off() { return env_set("SSM_NO_AVX512"); }

}  // namespace

namespace avx2 {
void matvec(const float* x, int64_t R, int64_t I, const void* w, WeightKind wk, const float* bias, float* y,
            int64_t ldy, int64_t o0, int64_t o1) {
  if (wk == WeightKind::f32)
    matvec_t<0>(x, R, I, w, bias, y, ldy, o0, o1);
  else if (wk == WeightKind::bf16)
    matvec_t<1>(x, R, I, w, bias, y, ldy, o0, o1);
  else
    matvec_t<2>(x, R, I, w, bias, y, ldy, o0, o1);
}
}  // namespace avx2

bool have_avx512() {
  static const bool v = avx512::supported() && !env_off();
  return v;
}
bool have_avx512_bf16() {
  static const bool v = avx512::supported_bf16() && !env_off() && !env_set("SSM_NO_AVX512_BF16");
  return v;
}

WeightKind weight_kind(DType t) {
  switch (t) {
    case DType::f32: return WeightKind::f32;
    case DType::bf16: return WeightKind::bf16;
    case DType::f16: return WeightKind::f16;
    default: fail("matvec", std::string("weights must be f32, bf16 or f16, got ") + dtype_name(t));
  }
}

void matvec(const float* x, int64_t R, int64_t I, const void* w, WeightKind wk, const float* bias, float* y,
            int64_t ldy, int64_t o0, int64_t o1) {
  if (o1 <= o0 || R <= 0) return;
  if (wk == WeightKind::bf16 && have_avx512_bf16())
    avx512::matvec_bf16_dp(x, R, I, static_cast<const uint16_t*>(w), bias, y, ldy, o0, o1);
  else if (have_avx512())
    avx512::matvec(x, R, I, w, int(wk), bias, y, ldy, o0, o1);
  else
    avx2::matvec(x, R, I, w, wk, bias, y, ldy, o0, o1);
}

void matvec_parallel(const float* x, int64_t R, int64_t I, const void* w, WeightKind wk, const float* bias, float* y,
                     int64_t ldy, int64_t O) {
  struct Args {
    const float* x;
    int64_t R, I;
    const void* w;
    WeightKind wk;
    const float* bias;
    float* y;
    int64_t ldy;
  } a{x, R, I, w, wk, bias, y, ldy};
  // At least ~32 KiB of weights per thread; the lambda holds one pointer, so std::function does
  // not allocate.
  const int64_t grain = std::max<int64_t>(4, (int64_t(1) << 15) / std::max<int64_t>(I, 1));
  parallel_for(O, grain,
               [&a](int64_t o0, int64_t o1) { matvec(a.x, a.R, a.I, a.w, a.wk, a.bias, a.y, a.ldy, o0, o1); });
}

int64_t bf16_gemm_panel_elems(int64_t K) { return (K + 1) / 2 * 96; }

}  // namespace ssm::kernels
