// AVX-512 kernels of matvec.h (see matvec_avx512.h for why this file includes nothing else).
#include "ops/matvec_avx512.h"

#include <immintrin.h>

namespace ssm::kernels::avx512 {
namespace {

// ---- matvec -----------------------------------------------------------------------------------------

// 16 weights of kind WK (0 f32, 1 bf16, 2 f16) starting at element idx, widened to f32; the masked
// form reads only the lanes in m (the row tail).
template <int WK>
inline __m512 load16(const void* w, int64_t idx) {
  if constexpr (WK == 0) {
    return _mm512_loadu_ps(static_cast<const float*>(w) + idx);
  } else {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(w) + idx));
    if constexpr (WK == 1) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
}
template <int WK>
inline __m512 load16m(const void* w, int64_t idx, __mmask16 m) {
  if constexpr (WK == 0) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(w) + idx);
  } else {
    __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(w) + idx);
    if constexpr (WK == 1) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
  }
}
template <int WK>
constexpr int64_t kElemBytes = WK == 0 ? 4 : 2;
constexpr int kBf16Dp = 3;  // the weight kind of matvec_bf16_dp: bf16 weights, bf16 dot products

// y[r, o..o+NO) for NR rows of x against NO consecutive weight rows (one contiguous block of NO·I
// elements). NR·NO·U = 8 independent accumulators. The block NO rows further on is prefetched at
// the same offsets: it is exactly the next block this thread reads.
template <int WK, int NR, int NO>
inline void tile(const float* x, int64_t I, const void* w, int64_t o, int64_t o_end, const float* bias, float* y,
                 int64_t ldy) {
  constexpr int U = NR * NO >= 8 ? 1 : 8 / (NR * NO);
  constexpr int64_t step = 16 * U;
  const char* wb = static_cast<const char*>(w) + o * I * kElemBytes<WK>;
  const char* next = o + 2 * NO <= o_end ? wb + NO * I * kElemBytes<WK> : nullptr;
  const void* wrow[NO];
  for (int j = 0; j < NO; ++j) wrow[j] = wb + j * I * kElemBytes<WK>;
  __m512 acc[NR][NO][U];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NO; ++j)
      for (int u = 0; u < U; ++u) acc[r][j][u] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + step <= I; i += step) {
    if (next) {
      for (int j = 0; j < NO; ++j)
        for (int64_t b = 0; b < step * kElemBytes<WK>; b += 64)
          _mm_prefetch(next + (j * I + i) * kElemBytes<WK> + b, _MM_HINT_T0);
    }
    for (int u = 0; u < U; ++u) {
      __m512 xv[NR];
      for (int r = 0; r < NR; ++r) xv[r] = _mm512_loadu_ps(x + r * I + i + 16 * u);
      for (int j = 0; j < NO; ++j) {
        const __m512 wv = load16<WK>(wrow[j], i + 16 * u);
        for (int r = 0; r < NR; ++r) acc[r][j][u] = _mm512_fmadd_ps(wv, xv[r], acc[r][j][u]);
      }
    }
  }
  for (; i < I; i += 16) {
    const int64_t left = I - i;
    const __mmask16 m = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    for (int j = 0; j < NO; ++j) {
      const __m512 wv = load16m<WK>(wrow[j], i, m);
      for (int r = 0; r < NR; ++r)
        acc[r][j][0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + r * I + i), acc[r][j][0]);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int j = 0; j < NO; ++j) {
      __m512 s = acc[r][j][0];
      for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[r][j][u]);
      y[r * ldy + o + j] = _mm512_reduce_add_ps(s) + (bias ? bias[o + j] : 0.0f);
    }
  }
}

// ---- bf16 matvec with BF16 dot products ----------------------------------------------------------
// The same tiling as tile<1, NR, NO>, but x is rounded to bf16 in registers (32 values per vector,
// nearest even, as round_bf16) and each 32 weights take one load and one VDPBF16PS: the products of
// the bf16 prefill GEMM, so one-token decode and prefill agree.
inline __m512bh x32(const float* x, __mmask16 lo, __mmask16 hi) {
  return _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + 16), _mm512_maskz_loadu_ps(lo, x));
}

template <int NR, int NO>
inline void tile_dp(const float* x, int64_t I, const uint16_t* w, int64_t o, int64_t o_end, const float* bias, float* y,
                    int64_t ldy) {
  constexpr int U = NR * NO >= 8 ? 1 : 8 / (NR * NO);
  constexpr int64_t step = 32 * U;
  const uint16_t* wb = w + o * I;
  const char* next = o + 2 * NO <= o_end ? reinterpret_cast<const char*>(wb + NO * I) : nullptr;
  __m512 acc[NR][NO][U];
  for (int r = 0; r < NR; ++r)
    for (int j = 0; j < NO; ++j)
      for (int u = 0; u < U; ++u) acc[r][j][u] = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + step <= I; i += step) {
    if (next) {
      for (int j = 0; j < NO; ++j)
        for (int64_t b = 0; b < step * 2; b += 64) _mm_prefetch(next + (j * I + i) * 2 + b, _MM_HINT_T0);
    }
    for (int u = 0; u < U; ++u) {
      __m512bh xv[NR];
      for (int r = 0; r < NR; ++r) xv[r] = x32(x + r * I + i + 32 * u, 0xffff, 0xffff);
      for (int j = 0; j < NO; ++j) {
        const __m512bh wv = (__m512bh)_mm512_loadu_si512(wb + j * I + i + 32 * u);
        for (int r = 0; r < NR; ++r) acc[r][j][u] = _mm512_dpbf16_ps(acc[r][j][u], xv[r], wv);
      }
    }
  }
  for (; i < I; i += 32) {  // tail: masked loads, the missing lanes are zeros on both sides
    const int64_t left = I - i;
    const __mmask32 m = left >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << left) - 1);
    const __mmask16 lo = __mmask16(m & 0xffff), hi = __mmask16(m >> 16);
    __m512bh xv[NR];
    for (int r = 0; r < NR; ++r) xv[r] = x32(x + r * I + i, lo, hi);
    for (int j = 0; j < NO; ++j) {
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(m, wb + j * I + i);
      for (int r = 0; r < NR; ++r) acc[r][j][0] = _mm512_dpbf16_ps(acc[r][j][0], xv[r], wv);
    }
  }
  for (int r = 0; r < NR; ++r) {
    for (int j = 0; j < NO; ++j) {
      __m512 s = acc[r][j][0];
      for (int u = 1; u < U; ++u) s = _mm512_add_ps(s, acc[r][j][u]);
      y[r * ldy + o + j] = _mm512_reduce_add_ps(s) + (bias ? bias[o + j] : 0.0f);
    }
  }
}

template <int WK, int NR, int NO>
void rows(const float* x, int64_t I, const void* w, const float* bias, float* y, int64_t ldy, int64_t o0, int64_t o1) {
  int64_t o = o0;
  if constexpr (WK == kBf16Dp) {
    const auto* wh = static_cast<const uint16_t*>(w);
    for (; o + NO <= o1; o += NO) tile_dp<NR, NO>(x, I, wh, o, o1, bias, y, ldy);
    for (; o < o1; ++o) tile_dp<NR, 1>(x, I, wh, o, o1, bias, y, ldy);
  } else {
    for (; o + NO <= o1; o += NO) tile<WK, NR, NO>(x, I, w, o, o1, bias, y, ldy);
    for (; o < o1; ++o) tile<WK, NR, 1>(x, I, w, o, o1, bias, y, ldy);
  }
}

template <int WK>
void matvec_t(const float* x, int64_t R, int64_t I, const void* w, const float* bias, float* y, int64_t ldy, int64_t o0,
              int64_t o1) {
  // With several rows of x, walk the weight rows in chunks of ~32 KiB so each chunk is read from
  // memory once and from L1 for the other row groups.
  int64_t chunk = (int64_t(1) << 15) / (I > 0 ? I * kElemBytes<WK> : 1);
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

// ---- bf16 GEMM ------------------------------------------------------------------------------------
// A strip of 48 weight rows (output columns) is packed so that one k-pair of all 48 sits in three
// vectors: lane j of vector v holds (w[n+16v+j][2p], w[n+16v+j][2p+1]), the operand layout of
// VDPBF16PS. A micro-kernel then multiplies MR rows of x against the strip, broadcasting one k-pair
// of each x row: MR × 3 accumulators of 16 columns.
constexpr int kStrip = 48;

// r[i] (16 rows of 16 32-bit values) → r[j] = column j: unpack 32-bit, unpack 64-bit, then two
// rounds of 128-bit lane shuffles.
inline void transpose16(__m512i r[16]) {
  __m512i t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // u[4i + c], lane L: column 4L + c of rows 4i .. 4i+3
    u[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  for (int c = 0; c < 4; ++c) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x44), v1 = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xEE);
    const __m512i v2 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x44),
                  v3 = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_i32x4(v0, v2, 0x88);
    r[4 + c] = _mm512_shuffle_i32x4(v0, v2, 0xDD);
    r[8 + c] = _mm512_shuffle_i32x4(v1, v3, 0x88);
    r[12 + c] = _mm512_shuffle_i32x4(v1, v3, 0xDD);
  }
}

// Packs weight rows [n, n + ncols) (ncols <= 48; missing rows are zeros) for all K: blocks of 16
// rows × 16 k-pairs are loaded row by row (contiguous 64-byte reads; an odd K's last pair padded
// with zero by the masked load) and transposed so each k-pair's 16 rows form one vector.
void pack_strip(const uint16_t* w, int64_t K, int64_t n, int64_t ncols, uint16_t* panel) {
  const int64_t KP = (K + 1) / 2;
  for (int v = 0; v < kStrip / 16; ++v) {
    const int64_t c0 = 16 * v;
    const int64_t valid = ncols - c0 <= 0 ? 0 : (ncols - c0 >= 16 ? 16 : ncols - c0);
    const uint16_t* base = w + (n + c0) * K;
    for (int64_t p0 = 0; p0 < KP; p0 += 16) {
      const int64_t left = K - 2 * p0;  // elements of each row in this block
      const __mmask32 m = left >= 32 ? __mmask32(0xffffffffu) : __mmask32((1u << left) - 1);
      __m512i r[16];
      for (int j = 0; j < 16; ++j)
        r[j] = j < valid ? _mm512_maskz_loadu_epi16(m, base + j * K + 2 * p0) : _mm512_setzero_si512();
      transpose16(r);
      const int64_t np = KP - p0 < 16 ? KP - p0 : 16;
      for (int64_t j = 0; j < np; ++j) _mm512_storeu_si512(panel + (p0 + j) * 2 * kStrip + 32 * v, r[j]);
    }
  }
}

template <int MR>
void micro(const uint16_t* xb, int64_t Kp, const uint16_t* panel, float* y, int64_t ldy, int64_t ncols) {
  const int64_t KP = Kp / 2;
  __m512 acc[MR][3];
  for (int m = 0; m < MR; ++m)
    for (int v = 0; v < 3; ++v) acc[m][v] = _mm512_setzero_ps();
  const int32_t* xr = reinterpret_cast<const int32_t*>(xb);
  const int64_t xs = Kp / 2;  // x row stride in pairs
  for (int64_t p = 0; p < KP; ++p) {
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(panel + p * 96);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(panel + p * 96 + 32);
    const __m512bh w2 = (__m512bh)_mm512_loadu_si512(panel + p * 96 + 64);
    for (int m = 0; m < MR; ++m) {
      const __m512bh xv = (__m512bh)_mm512_set1_epi32(xr[m * xs + p]);
      acc[m][0] = _mm512_dpbf16_ps(acc[m][0], xv, w0);
      acc[m][1] = _mm512_dpbf16_ps(acc[m][1], xv, w1);
      acc[m][2] = _mm512_dpbf16_ps(acc[m][2], xv, w2);
    }
  }
  for (int v = 0; v < 3; ++v) {
    const int64_t left = ncols - 16 * v;
    if (left <= 0) break;
    const __mmask16 mk = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
    for (int m = 0; m < MR; ++m) _mm512_mask_storeu_ps(y + m * ldy + 16 * v, mk, acc[m][v]);
  }
}

}  // namespace

bool supported() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}
bool supported_bf16() { return supported() && __builtin_cpu_supports("avx512bf16"); }

void matvec(const float* x, int64_t R, int64_t I, const void* w, int wk, const float* bias, float* y, int64_t ldy,
            int64_t o0, int64_t o1) {
  if (wk == 0)
    matvec_t<0>(x, R, I, w, bias, y, ldy, o0, o1);
  else if (wk == 1)
    matvec_t<1>(x, R, I, w, bias, y, ldy, o0, o1);
  else
    matvec_t<2>(x, R, I, w, bias, y, ldy, o0, o1);
}

void matvec_bf16_dp(const float* x, int64_t R, int64_t I, const uint16_t* w, const float* bias, float* y, int64_t ldy,
                    int64_t o0, int64_t o1) {
  matvec_t<kBf16Dp>(x, R, I, w, bias, y, ldy, o0, o1);
}

void round_bf16(const float* x, int64_t M, int64_t K, uint16_t* out) {
  const int64_t Kp = (K + 1) / 2 * 2;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    uint16_t* o = out + m * Kp;
    for (int64_t k = 0; k < K; k += 16) {
      const int64_t left = K - k;
      const __mmask16 mk = left >= 16 ? __mmask16(0xffff) : __mmask16((1u << left) - 1);
      const __m256bh b = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, xr + k));
      _mm256_mask_storeu_epi16(o + k, mk, (__m256i)b);
    }
    if (Kp > K) o[K] = 0;
  }
}

void bf16_gemm(const uint16_t* xb, int64_t M, int64_t K, const uint16_t* w, float* y, int64_t ldy, int64_t n0,
               int64_t n1, uint16_t* panel) {
  const int64_t Kp = (K + 1) / 2 * 2;
  for (int64_t n = n0; n < n1; n += kStrip) {
    const int64_t ncols = n1 - n < kStrip ? n1 - n : kStrip;
    pack_strip(w, K, n, ncols, panel);
    int64_t m = 0;
    for (; m + 8 <= M; m += 8) micro<8>(xb + m * Kp, Kp, panel, y + m * ldy + n, ldy, ncols);
    for (; m + 4 <= M; m += 4) micro<4>(xb + m * Kp, Kp, panel, y + m * ldy + n, ldy, ncols);
    for (; m < M; ++m) micro<1>(xb + m * Kp, Kp, panel, y + m * ldy + n, ldy, ncols);
  }
}

}  // namespace ssm::kernels::avx512
