// Branch-free float32 math for the fast CPU kernels. Every function is straight-line code (selects, no
// library calls) so that GCC/Clang vectorise the loops that call them with AVX2/FMA; std::exp and
// friends are scalar library calls that block vectorisation without -ffast-math.
// Accuracy (measured against double, see tests/unit_ops_elementwise.cpp): exp and log within ~2 ulp,
// erfc within ~4e-7 relative. NaN and ±inf follow IEEE / libm.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace ssm::fm {

// e^x: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite split), e^r by its Taylor series to r^7 (truncation
// error < 6e-9), 2^n built in the exponent bits as 2^(n/2) 2^(n - n/2) so that n in [-150, 128] never
// leaves the normal range before the final product (which rounds to subnormal / 0 / inf as it should).
inline float exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f, kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  constexpr float kShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  float xc = x < -104.0f ? -104.0f : x;
  xc = xc > 89.0f ? 89.0f : xc;
  float t = xc * kLog2e + kShift;
  float n = t - kShift;
  int32_t ni = std::bit_cast<int32_t>(t) - std::bit_cast<int32_t>(kShift);
  float r = xc - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t n1 = ni >> 1, n2 = ni - n1;
  float s1 = std::bit_cast<float>(int32_t(uint32_t(n1 + 127) << 23));
  float s2 = std::bit_cast<float>(int32_t(uint32_t(n2 + 127) << 23));
  return p * s1 * s2;  // NaN propagates through the selects and the arithmetic
}

// ln x: x = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.172,
// series to s^9 (truncation error < 1e-9). Subnormals are scaled by 2^23 first.
inline float log(float x) {
  constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
  bool sub = x < 1.17549435e-38f;
  float xs = sub ? x * 8388608.0f : x;
  int32_t bits = std::bit_cast<int32_t>(xs);
  int32_t e = ((bits >> 23) & 0xff) - 127 - (sub ? 23 : 0);
  float m = std::bit_cast<float>((bits & 0x007fffff) | 0x3f800000);
  bool big = m > 1.41421356f;
  m = big ? m * 0.5f : m;
  e = big ? e + 1 : e;
  float s = (m - 1.0f) / (m + 1.0f), s2 = s * s;
  float p = 2.0f / 9.0f;
  p = p * s2 + 2.0f / 7.0f;
  p = p * s2 + 2.0f / 5.0f;
  p = p * s2 + 2.0f / 3.0f;
  float lm = 2.0f * s + s * s2 * p;
  float fe = float(e);
  float y = fe * kLn2Hi + (lm + fe * kLn2Lo);
  // Ordered comparisons only (an unordered x != x select blocks GCC's if-conversion): NaN and x < 0
  // fail both x > 0 and x == 0 and become NaN.
  constexpr float kInf = std::numeric_limits<float>::infinity();
  y = x == kInf ? kInf : y;
  float special = x == 0.0f ? -kInf : std::numeric_limits<float>::quiet_NaN();
  return x > 0.0f ? y : special;
}

// ln(1 + u) for u >= 0 with full relative accuracy for small u: ln(y) * u / (y - 1) with y = 1 + u
// cancels the rounding of 1 + u (Goldberg's trick).
inline float log1p_pos(float u) {
  float y = 1.0f + u;
  float d = y - 1.0f;
  return d == 0.0f ? u : log(y) * (u / d);
}

// erfc(z) for z >= 0 given z and z² as an unevaluated sum z2_hi + z2_lo: Chebyshev-fitted exponential
// form t exp(-z² + P(t)), t = 1/(1 + z/2), whose fractional error is below 1.2e-7 for all z (Press et
// al., Numerical Recipes §6.2). Carrying the rounding errors of z² and of the exponent separately keeps
// the tail accurate: a rounded exponent alone would cost up to 5e-6 of relative error at z = 9.
inline float erfc_pos_split(float z, float z2_hi, float z2_lo) {
  float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  // s = p - z2_hi rounds by up to ulp(z²)/2 (4e-6 at z = 9): recover that error e exactly (TwoSum) and
  // apply e^{e - lo} = 1 + e - lo to first order (|e|, |lo| < 1e-5).
  float s = p - z2_hi;
  float bv = s - p;
  float e = (p - (s - bv)) + (-z2_hi - bv);
  return t * exp(s) * (1.0f + (e - z2_lo));
}

inline float erfc_pos(float z) {
  float z2 = z * z;
  return erfc_pos_split(z, z2, std::fma(z, z, -z2));
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }
inline float silu(float x) { return x / (1.0f + exp(-x)); }

// tanh: odd Taylor series to x^11 for |x| < 1/4 (error < 1e-10 relative), else 1 - 2/(e^{2|x|} + 1).
inline float tanh(float x) {
  float a = std::fabs(x);
  float big = 1.0f - 2.0f / (exp(2.0f * a) + 1.0f);
  big = x < 0.0f ? -big : big;
  float x2 = x * x;
  float p = -1382.0f / 155925.0f;
  p = p * x2 + 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  float small = x + x * x2 * p;
  return a < 0.25f ? small : big;
}

// Φ(x), the standard normal CDF, as 0.5 erfc(-x/√2) evaluated on |x| (no cancellation in either tail).
// z² = x²/2 is formed from x (exactly, with its fma remainder) rather than from the rounded z = |x|/√2.
inline float normal_cdf(float x) {
  float a = std::fabs(x);
  float a2 = a * a;
  float c = 0.5f * erfc_pos_split(a * 0.70710678118654752f, 0.5f * a2, 0.5f * std::fma(a, a, -a2));
  return x >= 0.0f ? 1.0f - c : c;
}

// softplus with PyTorch's threshold: x where x > threshold, else max(x, 0) + ln(1 + e^{-|x|}).
inline float softplus(float x, float threshold) {
  float pos = x > 0.0f ? x : 0.0f;
  float y = pos + log1p_pos(exp(-std::fabs(x)));  // NaN: exp(NaN) makes y NaN
  return x > threshold ? x : y;
}

// Sum of x[0..n) with 16 independent accumulators (the compiler keeps them in two AVX registers; a
// single accumulator would be a serial dependency it may not reorder without -ffast-math).
inline float sum(const float* x, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += x[i + j];
  float s = 0;
  for (; i < n; ++i) s += x[i];
  for (int j = 0; j < 16; ++j) s += acc[j];
  return s;
}

// Max of x[0..n) ignoring NaN (-inf for n == 0). GCC does not vectorise a float max reduction (its
// IEEE max has no vector form without -ffinite-math-only), so the AVX loop is written out.
inline float max(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(__AVX__)
  if (n >= 16) {
    __m256 a = _mm256_set1_ps(m), b = a;
    for (; i + 16 <= n; i += 16) {  // max_ps(v, acc) returns acc when v is NaN
      a = _mm256_max_ps(_mm256_loadu_ps(x + i), a);
      b = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), b);
    }
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_max_ps(a, b));
    for (int j = 0; j < 8; ++j) m = lanes[j] > m ? lanes[j] : m;
  }
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

}  // namespace ssm::fm
