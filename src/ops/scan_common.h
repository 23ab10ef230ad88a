// Internal helpers shared by the scan kernels (selective_scan.cpp, ssd.cpp): a portable 8-lane
// float vector (GCC/Clang vector extensions: AVX2 on x86-64-v3, two NEON registers on ARM), a fast
// vectorised exp / log1p / softplus / sigmoid accurate to a few fp32 ulps, and the matching scalar
// functions for the f64 instantiations, plus a per-thread-slot work runner for reductions.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>

#include "ssm/base.h"

namespace ssm::detail::scan {

typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef float v4f __attribute__((vector_size(16)));

inline v8f splat(float x) { return v8f{x, x, x, x, x, x, x, x}; }

// max / min that return x when x is NaN (one instruction on AVX).
inline v8f vclamp(v8f x, float lo, float hi) {
#if defined(__AVX__)
  return __builtin_ia32_minps256(splat(hi), __builtin_ia32_maxps256(splat(lo), x));
#else
  x = x < splat(lo) ? splat(lo) : x;
  return x > splat(hi) ? splat(hi) : x;
#endif
}

// exp(x): Cody–Waite reduction x = k ln2 + r, |r| <= ln2/2, Taylor series to r^7 (truncation < 6e-9
// relative), then scale by 2^k through the exponent bits. x is clamped to [-87.33, 88]: below, the
// result is the smallest normal float 1.2e-38 instead of a denormal or 0 (an absolute error under
// 1.2e-38, irrelevant to the scans' decays); above 88 it saturates at e^88. NaN stays NaN.
inline v8f vexp(v8f x) {
  const v8f xc = vclamp(x, -87.33654f, 88.0f);
  const v8f magic = splat(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer
  v8f k = (xc * splat(1.44269504088896341f) + magic) - magic;
  v8f r = xc - k * splat(0.693359375f);  // ln2 high part (exact in 9 bits)
  r = r - k * splat(-2.12194440e-4f);    // ln2 low part
  v8f p = splat(1.0f / 5040.0f);
  p = p * r + splat(1.0f / 720.0f);
  p = p * r + splat(1.0f / 120.0f);
  p = p * r + splat(1.0f / 24.0f);
  p = p * r + splat(1.0f / 6.0f);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.0f);
  p = p * r + splat(1.0f);
  v8i ki = __builtin_convertvector(k, v8i);
  return p * (v8f)((ki + 127) << 23);
}

// log1p(y) for y in [0, 1]: log(u) of u = 1 + y by u = 2^e m, m in [sqrt(1/2), sqrt(2)), the atanh
// series in s = f/(2+f) (f = m-1, |s| < 0.172, truncation < 2e-12), plus the rounding error of 1 + y.
inline v8f vlog1p01(v8f y) {
  v8f u = splat(1.0f) + y;
  v8f corr = (y - (u - splat(1.0f))) / u;
  auto big = u > splat(1.41421356f);
  v8f m = big ? u * splat(0.5f) : u;
  v8f e = big ? splat(0.693147180559945f) : splat(0.0f);
  v8f f = m - splat(1.0f);
  v8f s = f / (splat(2.0f) + f);
  v8f z = s * s;
  v8f q = splat(1.0f / 13.0f);
  q = q * z + splat(1.0f / 11.0f);
  q = q * z + splat(1.0f / 9.0f);
  q = q * z + splat(1.0f / 7.0f);
  q = q * z + splat(1.0f / 5.0f);
  q = q * z + splat(1.0f / 3.0f);
  q = q * z + splat(1.0f);
  return e + splat(2.0f) * s * q + corr;
}

inline v8f vabs(v8f x) { return x < 0 ? -x : x; }
inline v8f vmax0(v8f x) { return x > 0 ? x : splat(0.0f); }

// softplus with PyTorch's threshold: x where x > 20, else log(1 + e^x) = max(x,0) + log1p(e^-|x|).
inline v8f vsoftplus(v8f x) {
  v8f sp = vmax0(x) + vlog1p01(vexp(-vabs(x)));
  return x > splat(20.0f) ? x : sp;
}
// Derivative of that softplus: sigmoid(x), exactly 1 above the threshold.
inline v8f vsoftplus_grad(v8f x) {
  v8f s = splat(1.0f) / (splat(1.0f) + vexp(-x));
  return x > splat(20.0f) ? splat(1.0f) : s;
}
inline v8f vsigmoid(v8f x) { return splat(1.0f) / (splat(1.0f) + vexp(-x)); }

inline float hsum(v8f v) {
  v4f a = __builtin_shufflevector(v, v, 0, 1, 2, 3) + __builtin_shufflevector(v, v, 4, 5, 6, 7);
  v4f b = a + __builtin_shufflevector(a, a, 2, 3, 0, 1);
  return b[0] + b[1];
}

// Scalar forms (f64 and the f32 reference loops): plain libm.
template <typename T>
inline T softplus_s(T x) {
  return x > T(20) ? x : std::log1p(std::exp(x));
}
template <typename T>
inline T softplus_grad_s(T x) {
  return x > T(20) ? T(1) : T(1) / (T(1) + std::exp(-x));
}
template <typename T>
inline T sigmoid_s(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Lane traits: V is either v8f (8 f32 lanes, fast math above) or a plain scalar (1 lane, libm).
template <typename V>
struct Lanes {
  using S = V;
  static constexpr int W = 1;
  static V zero() { return V(0); }
  static V set1(S x) { return x; }
  static V load(const S* p, int n) { return n > 0 ? *p : V(0); }
  static void store(S* p, V v, int n) {
    if (n > 0) *p = v;
  }
  static S lane(V v, int) { return v; }
  static void set_lane(V& v, int, S x) { v = x; }
  static V exp(V x) { return std::exp(x); }
  static V softplus(V x) { return softplus_s(x); }
  static V softplus_grad(V x) { return softplus_grad_s(x); }
  static V sigmoid(V x) { return sigmoid_s(x); }
  static S sum(V v) { return v; }
};
template <>
struct Lanes<v8f> {
  using S = float;
  static constexpr int W = 8;
  static v8f zero() { return splat(0.0f); }
  static v8f set1(float x) { return splat(x); }
  static v8f load(const float* p, int n) {  // the first n lanes from p, the rest 0
    v8f v = splat(0.0f);
    if (n == 8) {
      __builtin_memcpy(&v, p, sizeof(v));
    } else {
      for (int i = 0; i < n; ++i) v[i] = p[i];
    }
    return v;
  }
  static void store(float* p, v8f v, int n) {
    if (n == 8) {
      __builtin_memcpy(p, &v, sizeof(v));
    } else {
      for (int i = 0; i < n; ++i) p[i] = v[i];
    }
  }
  static float lane(v8f v, int i) { return v[i]; }
  static void set_lane(v8f& v, int i, float x) { v[i] = x; }
  static v8f exp(v8f x) { return vexp(x); }
  static v8f softplus(v8f x) { return vsoftplus(x); }
  static v8f softplus_grad(v8f x) { return vsoftplus_grad(x); }
  static v8f sigmoid(v8f x) { return vsigmoid(x); }
  static float sum(v8f v) { return hsum(v); }
};

// Runs fn(slot, item) for every item in [0, n) from min(num_threads, n) slots; one slot is only ever
// run by one thread at a time, so per-slot accumulation buffers need no locks (size them with
// slot_count(n)).
inline int64_t slot_count(int64_t n) { return std::max<int64_t>(1, std::min<int64_t>(num_threads(), n)); }
inline void run_slots(int64_t n, const std::function<void(int64_t slot, int64_t item)>& fn) {
  const int64_t slots = slot_count(n);
  parallel_for(slots, 1, [&](int64_t s0, int64_t s1) {
    for (int64_t s = s0; s < s1; ++s)
      for (int64_t i = s; i < n; i += slots) fn(s, i);
  });
}

}  // namespace ssm::detail::scan
