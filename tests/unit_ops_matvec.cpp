// The raw matrix kernels behind linear() and the decode step (src/ops/matvec.h): the AVX2 and the
// AVX-512 matvec and the AVX-512 BF16 GEMM, each against a double-precision loop over the same
// (rounded) inputs, at sizes that hit every tail (rows, columns, vector remainders, odd K).
#include <random>

#include "ops/matvec.h"
#include "ops/matvec_avx512.h"
#include "testing.h"

using namespace ssm;
using kernels::WeightKind;

namespace {

struct Weights {
  std::vector<float> f32;      // the values the kernel sees, widened
  std::vector<uint16_t> half;  // bf16 / f16 storage
  const void* ptr(WeightKind k) const {
    return k == WeightKind::f32 ? static_cast<const void*>(f32.data()) : half.data();
  }
};

Weights make_weights(WeightKind k, int64_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd;
  Weights w;
  for (int64_t i = 0; i < n; ++i) {
    float v = nd(rng);
    if (k == WeightKind::bf16) {
      w.half.push_back(f32_to_bf16(v));
      v = bf16_to_f32(w.half.back());
    } else if (k == WeightKind::f16) {
      w.half.push_back(f32_to_f16(v));
      v = f16_to_f32(w.half.back());
    }
    w.f32.push_back(v);
  }
  return w;
}

using MatvecFn = void (*)(const float*, int64_t, int64_t, const void*, WeightKind, const float*, float*, int64_t,
                          int64_t, int64_t);

void avx512_matvec(const float* x, int64_t R, int64_t I, const void* w, WeightKind wk, const float* b, float* y,
                   int64_t ldy, int64_t o0, int64_t o1) {
  kernels::avx512::matvec(x, R, I, w, int(wk), b, y, ldy, o0, o1);
}

void avx512_bf16_dp(const float* x, int64_t R, int64_t I, const void* w, WeightKind, const float* b, float* y,
                    int64_t ldy, int64_t o0, int64_t o1) {
  kernels::avx512::matvec_bf16_dp(x, R, I, static_cast<const uint16_t*>(w), b, y, ldy, o0, o1);
}

// Every (R, I, O) and weight kind in `kinds`; rows [o0, o1) only, the rest of y untouched. With
// bf16_x, the loop multiplies bf16 weights by x rounded to bf16 (what the dot-product kernel sees).
// Tolerance: products of two bf16 (or of f32 and a widened half) are exact in f64, and the kernel
// sums I of them in f32 in another order than the f64 loop: 1e-5 of Σ|x||w|.
void check_matvec(MatvecFn fn, std::vector<WeightKind> kinds = {WeightKind::f32, WeightKind::bf16, WeightKind::f16},
                  bool bf16_x = false) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  for (WeightKind wk : kinds)
    for (int64_t R : {1, 2, 3, 4, 5, 8})
      for (int64_t I : {1, 7, 16, 33, 100, 768})
        for (int64_t O : {1, 5, 13}) {
          Weights w = make_weights(wk, O * I, rng);
          std::vector<float> x(static_cast<size_t>(R * I)), bias(static_cast<size_t>(O));
          for (auto& v : x) v = nd(rng);
          for (auto& v : bias) v = nd(rng);
          std::vector<float> xs = x;  // the x of the loop
          if (bf16_x && wk == WeightKind::bf16)
            for (auto& v : xs) v = bf16_to_f32(f32_to_bf16(v));
          const int64_t ldy = O + 3, o0 = O > 2 ? 1 : 0, o1 = O;
          for (bool with_bias : {false, true}) {
            std::vector<float> y(size_t(R * ldy), -7.f);
            fn(x.data(), R, I, w.ptr(wk), wk, with_bias ? bias.data() : nullptr, y.data(), ldy, o0, o1);
            for (int64_t r = 0; r < R; ++r)
              for (int64_t o = 0; o < ldy; ++o) {
                const float got = y[size_t(r * ldy + o)];
                if (o < o0 || o >= o1) {
                  ASSERT_EQ(got, -7.f) << "wrote outside rows [o0, o1)";
                  continue;
                }
                double want = with_bias ? bias[size_t(o)] : 0.0, mag = std::fabs(want);
                for (int64_t i = 0; i < I; ++i) {
                  want += double(xs[size_t(r * I + i)]) * w.f32[size_t(o * I + i)];
                  mag += std::fabs(double(xs[size_t(r * I + i)]) * w.f32[size_t(o * I + i)]);
                }
                ASSERT_NEAR(got, want, 1e-5 * mag + 1e-6)
                    << "kind " << int(wk) << " R=" << R << " I=" << I << " O=" << O << " r=" << r << " o=" << o;
              }
          }
        }
}

}  // namespace

TEST(Matvec, Avx2MatchesLoop) { check_matvec(kernels::avx2::matvec); }

TEST(Matvec, Avx512MatchesLoop) {
  if (!kernels::avx512::supported()) GTEST_SKIP() << "this CPU has no AVX-512";
  check_matvec(avx512_matvec);
}

// I = 33, 100 and 768 also cover the 32-wide tails and the 2-vector unrolled steps.
TEST(Matvec, Avx512Bf16DotMatchesLoopOverRoundedX) {
  if (!kernels::avx512::supported_bf16()) GTEST_SKIP() << "this CPU has no AVX-512 BF16";
  check_matvec(avx512_bf16_dp, {WeightKind::bf16}, true);
}

TEST(Matvec, DispatchedMatchesLoop) {
  check_matvec(kernels::matvec, {WeightKind::f32, WeightKind::bf16, WeightKind::f16}, kernels::have_avx512_bf16());
}

// bf16 GEMM: the products of two bf16 numbers are exact in f32, so against an f64 loop over the
// bf16-rounded x and w only the f32 summation order differs: 1e-5 of Σ|x||w|.
TEST(Bf16Gemm, MatchesLoopOverRoundedInputs) {
  if (!kernels::avx512::supported_bf16()) GTEST_SKIP() << "this CPU has no AVX-512 BF16";
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (int64_t M : {1, 3, 4, 8, 13}) {
    for (int64_t K : {1, 2, 5, 64, 67}) {
      for (int64_t N : {1, 16, 47, 48, 49, 100}) {
        Weights w = make_weights(WeightKind::bf16, N * K, rng);
        std::vector<float> x(size_t(M * K));
        for (auto& v : x) v = nd(rng);
        const int64_t Kp = (K + 1) / 2 * 2;
        std::vector<uint16_t> xb(size_t(M * Kp), 0xffff);
        kernels::avx512::round_bf16(x.data(), M, K, xb.data());
        for (int64_t m = 0; m < M; ++m) {
          for (int64_t k = 0; k < K; ++k) ASSERT_EQ(xb[size_t(m * Kp + k)], f32_to_bf16(x[size_t(m * K + k)]));
          if (Kp > K) {
            ASSERT_EQ(xb[size_t(m * Kp + K)], 0) << "padding must be zero";
          }
        }
        std::vector<uint16_t> panel(size_t(kernels::bf16_gemm_panel_elems(K)));
        const int64_t ldy = N + 2, n0 = N > 20 ? 17 : 0;
        std::vector<float> y(size_t(M * ldy), -7.f);
        kernels::avx512::bf16_gemm(xb.data(), M, K, w.half.data(), y.data(), ldy, n0, N, panel.data());
        for (int64_t m = 0; m < M; ++m)
          for (int64_t n = 0; n < ldy; ++n) {
            const float got = y[size_t(m * ldy + n)];
            if (n < n0 || n >= N) {
              ASSERT_EQ(got, -7.f) << "wrote outside columns [n0, n1)";
              continue;
            }
            double want = 0, mag = 0;
            for (int64_t k = 0; k < K; ++k) {
              const double p = double(bf16_to_f32(xb[size_t(m * Kp + k)])) * w.f32[size_t(n * K + k)];
              want += p;
              mag += std::fabs(p);
            }
            ASSERT_NEAR(got, want, 1e-5 * mag + 1e-6)
                << "M=" << M << " K=" << K << " N=" << N << " m=" << m << " n=" << n;
          }
      }
    }
  }
}
